"""A trained text-to-video model as its users need it: UNet, text encoder, decoder, normalisation.

`train_t2v` trains on one of two latent sources, and its manifest says which decoder turns its
latents back into pixels: Stable Diffusion's VAE per frame (`cache_t2v_latents`, the paper's
§5 model) or the pipeline's own video autoencoder (`cache_latents`, e.g. the synthetic demo).
The previews, `sample_t2v` and `lvdm sample --prompt` all load and sample through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from data_prep import storage
from lvdm.autoencoder import denormalise

SD_VAE, VIDEO_AUTOENCODER = "sd_vae", "video_autoencoder"  # manifest["decoder"]["kind"]


def load_decoder(kind: str, path: str, device: torch.device) -> Callable[[Tensor], Tensor]:
    """The decoder (eval mode, on `device`) of latents `b c t h w` in the autoencoder's own units."""
    if kind == SD_VAE:
        from lvdm.frame_autoencoder import FrameAutoencoder

        return FrameAutoencoder.from_folder(path).to(device).eval().decode
    if kind == VIDEO_AUTOENCODER:
        from stages.autoencoder_file import load_autoencoder

        autoencoder, _ = load_autoencoder(path)
        return autoencoder.to(device).eval().decode
    raise ValueError(f"decoder kind {kind!r}: expected {SD_VAE!r} or {VIDEO_AUTOENCODER!r}")


@dataclass
class TextVideoModel:
    """The EMA UNet, the frozen text encoder and the decoder of one `train_t2v` manifest."""

    network: torch.nn.Module
    text: torch.nn.Module  # lvdm.text_encoder.TextEncoder
    decode_latents: Callable[[Tensor], Tensor]
    scale: float | list[float]
    shift: float | list[float]
    latent_shape: tuple[int, int, int, int]  # c t h w of one training window
    guidance_scale: float

    @classmethod
    def load(cls, manifest: dict, device: torch.device) -> TextVideoModel:
        """From `train_t2v`'s manifest (its outputs and `out_dir`)."""
        from lvdm.text_encoder import TextEncoder
        from stages.unet_file import load_unet

        outputs = manifest["outputs"]
        network, _ = load_unet(storage.join(manifest["out_dir"], outputs["unet"]))
        decoder = outputs.get("decoder") or {"kind": SD_VAE, "path": outputs["autoencoder"]}
        return cls(
            network=network.to(device).eval(),
            text=TextEncoder.from_folder(outputs["text_encoder"]).to(device),
            decode_latents=load_decoder(decoder["kind"], decoder["path"], device),
            scale=outputs["scale"],
            shift=outputs["shift"],
            latent_shape=tuple(outputs["latent_shape"]),
            guidance_scale=outputs["guidance_scale"],
        )

    @torch.no_grad()
    def sample(
        self,
        prompts: Sequence[str],
        schedule,
        sampling: dict,
        *,
        generator: torch.Generator,
        guidance_scale: float | None = None,
        frames: int | None = None,
    ) -> Tensor:
        """One video per prompt, `b c t h w` in [-1, 1]: latents sampled with classifier-free
        guidance (one batched forward per step), decoded."""
        from lvdm.diffusion.sampling import sample_latents
        from lvdm.diffusion.text_guidance import text_guided

        device = next(self.network.parameters()).device
        c, t, h, w = self.latent_shape
        denoiser = text_guided(
            self.network,
            self.text.encode(list(prompts)),
            self.text.encode([""])[0],
            self.guidance_scale if guidance_scale is None else guidance_scale,
        )
        latents = sample_latents(
            denoiser,
            (len(prompts), c, frames or t, h, w),
            schedule,
            sampler=sampling["sampler"],
            steps=sampling["steps"],
            eta=sampling["eta"],
            ddim_last_step=sampling.get("ddim_last_step", "x0"),
            generator=generator,
            device=device,
        )
        return self.decode(latents)

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents `b c t h w` -> video `b c t' h' w'` in [-1, 1]."""
        return self.decode_latents(denormalise(latents, self.scale, self.shift)).clamp(-1, 1)

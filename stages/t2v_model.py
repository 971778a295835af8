"""A trained text-to-video model as its users need it: UNet, text encoder, decoder, normalisation.

`train_t2v` trains on one of two latent sources, and its manifest says which decoder turns its
latents back into pixels: Stable Diffusion's VAE per frame (`cache_t2v_latents`, the paper's
§5 model) or the pipeline's own video autoencoder (`cache_latents`, e.g. the synthetic demo).
The previews, `sample_t2v` and `lvdm sample --prompt` all load and sample through here.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from data_prep import storage
from lvdm.autoencoder import denormalise

if TYPE_CHECKING:
    from lvdm.text_encoder import TextEncoder

SD_VAE, VIDEO_AUTOENCODER = "sd_vae", "video_autoencoder"  # manifest["decoder"]["kind"]


class Decoder(NamedTuple):
    """Latents `b c t h w` (the autoencoder's own units) -> video `b c (t ft) h' w'`."""

    decode: Callable[[Tensor], Tensor]
    ft: int  # video frames per latent frame: 1 for SD's VAE per frame, the video autoencoder's ft


def load_decoder(kind: str, path: str, device: torch.device) -> Decoder:
    """The decoder (eval mode, on `device`) of the manifest's `decoder` entry, and its ft."""
    if kind == SD_VAE:
        from lvdm.frame_autoencoder import FrameAutoencoder

        frame_autoencoder = FrameAutoencoder.from_folder(path).to(device).eval()
        return Decoder(frame_autoencoder.decode, frame_autoencoder.ft)
    if kind == VIDEO_AUTOENCODER:
        from stages.autoencoder_file import load_autoencoder

        autoencoder, _ = load_autoencoder(path)
        return Decoder(autoencoder.to(device).eval().decode, autoencoder.config.ft)
    raise ValueError(f"decoder kind {kind!r}: expected {SD_VAE!r} or {VIDEO_AUTOENCODER!r}")


def open_text_encoder(location: storage.Location) -> TextEncoder:
    """`lvdm.text_encoder.TextEncoder` of a folder that may be on an object store: a random CLIP
    built in a stage folder of the workdir is. transformers opens local folders only, so a remote
    one is copied to a scratch folder first (the encoder holds its weights in memory after)."""
    from lvdm.text_encoder import TextEncoder

    if not storage.is_uri(location):
        return TextEncoder.from_folder(location)
    prefix = str(location).rstrip("/") + "/"
    with tempfile.TemporaryDirectory(prefix="lvdm-text-") as scratch:
        for remote in storage.walk_files(location):
            if storage.name(remote).startswith("."):  # a killed upload's temporary (`storage._put`)
                continue
            target = Path(scratch) / remote.removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            with storage.open_input(remote) as reader, open(target, "wb") as writer:
                shutil.copyfileobj(reader, writer, length=8 << 20)
        try:
            return TextEncoder.from_folder(scratch)
        except FileNotFoundError as error:  # name the folder the user gave, not the scratch copy
            raise type(error)(str(error).replace(scratch, str(location))) from None


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
    ft: int = 1  # video frames per latent frame (the decoder's)

    @classmethod
    def load(cls, manifest: dict, device: torch.device) -> TextVideoModel:
        """From `train_t2v`'s manifest (its outputs and `out_dir`)."""
        from stages.unet_file import load_unet

        outputs = manifest["outputs"]
        network, _ = load_unet(storage.join(manifest["out_dir"], outputs["unet"]))
        decoder = outputs.get("decoder") or {"kind": SD_VAE, "path": outputs["autoencoder"]}
        decode, ft = load_decoder(decoder["kind"], decoder["path"], device)
        return cls(
            network=network.to(device).eval(),
            text=open_text_encoder(outputs["text_encoder"]).to(device),
            decode_latents=decode,
            scale=outputs["scale"],
            shift=outputs["shift"],
            latent_shape=tuple(outputs["latent_shape"]),
            guidance_scale=outputs["guidance_scale"],
            ft=ft,
        )

    @property
    def window_frames(self) -> int:
        """Video frames of one training window: what `sample` makes by default."""
        return self.latent_shape[1] * self.ft

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
        guidance (one batched forward per step), decoded.

        `frames` counts video frames (default: the training window's), as the long-video
        `lvdm sample --frames` does: ⌈frames / ft⌉ latents are sampled and the decoded surplus
        is cropped (`lvdm.long_video.latent_count`), so any count works whatever the decoder's ft.
        """
        from lvdm.diffusion.sampling import sample_latents
        from lvdm.diffusion.text_guidance import text_guided
        from lvdm.long_video import latent_count

        device = next(self.network.parameters()).device
        c, _, h, w = self.latent_shape
        frames = self.window_frames if frames is None else frames
        denoiser = text_guided(
            self.network,
            self.text.encode(list(prompts)),
            self.text.encode([""])[0],
            self.guidance_scale if guidance_scale is None else guidance_scale,
        )
        latents = sample_latents(
            denoiser,
            (len(prompts), c, latent_count(frames, self.ft), h, w),
            schedule,
            sampler=sampling["sampler"],
            steps=sampling["steps"],
            eta=sampling["eta"],
            ddim_last_step=sampling.get("ddim_last_step", "x0"),
            generator=generator,
            device=device,
        )
        return self.decode(latents)[:, :, :frames]

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents `b c t h w` -> video `b c t' h' w'` in [-1, 1]."""
        return self.decode_latents(denormalise(latents, self.scale, self.shift)).clamp(-1, 1)

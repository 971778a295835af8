"""A trained text-to-video model as its users need it: UNet, text encoder, decoder, normalisation.

`train_t2v` trains on one of two latent sources, and its manifest says which decoder turns its
latents back into pixels: Stable Diffusion's VAE per frame (`cache_t2v_latents`, the paper's
§5 model) or the pipeline's own video autoencoder (`cache_latents`, e.g. the synthetic demo).
The previews, `sample_t2v` and `lvdm sample --prompt` all load and sample through here.

A model trained with `t2v.cond_frames` > 0 has §3.3's mask channel and continues its windows:
a video longer than one window is drawn the LVDM way (`lvdm.long_video.autoregressive_latents`),
its first window from the caption alone (all-False mask), every later one conditioned on the
last `cond_frames` latents (perturbed to `sampling.noise_level`, unconditional guidance of
weight `sampling.guidance_weight`) and on the caption (classifier-free text guidance), and is
decoded window by window. A model without it samples one window, as it always has.

A model trained with `t2v.key_stride` > 1 as well also draws them hierarchically
(`lvdm.long_video.hierarchical_latents`, its default past one window): keys `key_stride` apart
continued the same way at the key stride, then every gap between neighbouring keys filled by
the same network with both keys given, all with the caption.
"""

from __future__ import annotations

import functools
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
    from lvdm.diffusion.text_guidance import TextGuided
    from lvdm.long_video import Strategy
    from lvdm.long_video_steps import SamplingSettings
    from lvdm.text_encoder import TextEncoder

SD_VAE, VIDEO_AUTOENCODER = "sd_vae", "video_autoencoder"  # manifest["decoder"]["kind"]


class Decoder(NamedTuple):
    """Latents `b c t h w` (the autoencoder's own units) -> video `b c (t ft) h' w'`.

    `decode_windows(latents, window)` decodes a sequence longer than a clip `window` latents at a
    time, with the same frames as one piece would have where the codec allows it: memory stays
    that of one window however long the video, and the video autoencoder's GroupNorms see
    clips of the length it was trained on (`lvdm.latent_sequence`, "Seam-free decoding")."""

    decode: Callable[[Tensor], Tensor]
    ft: int  # video frames per latent frame: 1 for SD's VAE per frame, the video autoencoder's ft
    decode_windows: Callable[[Tensor, int], Tensor] | None = None


def load_decoder(kind: str, path: str, device: torch.device) -> Decoder:
    """The decoder (eval mode, on `device`) of the manifest's `decoder` entry, and its ft."""
    if kind == SD_VAE:
        from lvdm.frame_autoencoder import FrameAutoencoder

        frame_autoencoder = FrameAutoencoder.from_folder(path).to(device).eval()

        def frames_apart(latents: Tensor, window: int) -> Tensor:
            # SD's VAE decodes every frame alone: any split along time is exact.
            return torch.cat([frame_autoencoder.decode(part) for part in latents.split(window, dim=2)], dim=2)

        return Decoder(frame_autoencoder.decode, frame_autoencoder.ft, frames_apart)
    if kind == VIDEO_AUTOENCODER:
        return _video_autoencoder_decoder(path, device)
    raise ValueError(f"decoder kind {kind!r}: expected {SD_VAE!r} or {VIDEO_AUTOENCODER!r}")


def _video_autoencoder_decoder(path: str, device: torch.device) -> Decoder:
    """The pipeline's video autoencoder; long sequences decode in windows overlapped by the
    decoder's reach (`decode_stream`), measured once, when a long video first needs it."""
    from lvdm.latent_sequence import decode_stream, decoder_context
    from stages.autoencoder_file import load_autoencoder

    autoencoder, _ = load_autoencoder(path)
    autoencoder = autoencoder.to(device).eval()

    @functools.cache
    def context() -> int:
        return decoder_context(autoencoder)

    def overlapped(latents: Tensor, window: int) -> Tensor:
        decoded = decode_stream(autoencoder, [latents], window=window, context=context())
        return torch.cat(list(decoded), dim=2)

    return Decoder(autoencoder.decode, autoencoder.config.ft, overlapped)


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
    cond_frames: int = 0  # t2v.cond_frames: latents a continuation window is given; 0: one window only
    key_stride: int = 1  # t2v.key_stride: > 1 also fills between keys this far apart (hierarchical)
    decode_windows: Callable[[Tensor, int], Tensor] | None = None  # `Decoder.decode_windows`

    @classmethod
    def load(cls, manifest: dict, device: torch.device) -> TextVideoModel:
        """From `train_t2v`'s manifest (its outputs and `out_dir`). A manifest from before
        `t2v.cond_frames` has none: its model samples one window."""
        from stages.unet_file import load_unet

        outputs = manifest["outputs"]
        network, _ = load_unet(storage.join(manifest["out_dir"], outputs["unet"]))
        decoder = outputs.get("decoder") or {"kind": SD_VAE, "path": outputs["autoencoder"]}
        decode, ft, decode_windows = load_decoder(decoder["kind"], decoder["path"], device)
        return cls(
            network=network.to(device).eval(),
            text=open_text_encoder(outputs["text_encoder"]).to(device),
            decode_latents=decode,
            scale=outputs["scale"],
            shift=outputs["shift"],
            latent_shape=tuple(outputs["latent_shape"]),
            guidance_scale=outputs["guidance_scale"],
            ft=ft,
            cond_frames=outputs.get("cond_frames", 0),
            key_stride=outputs.get("key_stride", 1),
            decode_windows=decode_windows,
        )

    @property
    def window_frames(self) -> int:
        """Video frames of one training window: what `sample` makes by default."""
        return self.latent_shape[1] * self.ft

    @property
    def continues(self) -> bool:
        """Whether videos longer than a window are continuations (trained with t2v.cond_frames > 0)."""
        return self.cond_frames > 0

    @property
    def strategies(self) -> tuple[Strategy, ...]:
        """How this model can draw a video longer than a window; the first is its default."""
        if not self.continues:
            return ()
        return ("hierarchical", "autoregressive") if self.key_stride > 1 else ("autoregressive",)

    def check_strategy(self, strategy: str | None) -> Strategy | None:
        """`strategy` (None: the model's default), or a ValueError naming what the model can do."""
        if strategy is None or strategy in self.strategies:
            return strategy or next(iter(self.strategies), None)
        if strategy == "hierarchical" and self.continues:
            fix = "retrain with --set t2v.key_stride=2 (or more: keys that far apart, fills between them)"
        else:
            fix = "retrain with --set t2v.cond_frames=1 (and t2v.key_stride=2 for hierarchical videos)"
        raise ValueError(
            f"strategy {strategy!r}: this text-to-video model draws long videos by "
            f"{' or '.join(self.strategies) or 'no strategy (one window only)'}; {fix}"
        )

    def check_continues(self, frames: int) -> None:
        """Refuse `frames` beyond the window of a model that cannot continue it.

        Such a model would sample one stretched window: its temporal attention has never seen
        that many frames and nothing holds the video together, so it is not the long video asked for."""
        if frames > self.window_frames and not self.continues:
            raise ValueError(
                f"this text-to-video model samples one window of {self.window_frames} frames and cannot "
                f"continue it to {frames} (train_t2v ran with t2v.cond_frames=0, so its network has no mask "
                "channel); retrain with --set t2v.cond_frames=1 (continuations conditioned on the last "
                f"latents and the caption), or ask for at most {self.window_frames} frames"
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
        strategy: str | None = None,
    ) -> Tensor:
        """One video per prompt, `b c t h w` in [-1, 1]: latents sampled with classifier-free
        guidance (one batched forward per step), decoded. `strategy`: how a continuing model
        draws more than a window (`strategies`; None: its default).

        `frames` counts video frames (default: the training window's), as the long-video
        `lvdm sample --frames` does: ⌈frames / ft⌉ latents are sampled and the decoded surplus
        is cropped (`lvdm.long_video.latent_count`), so any count works whatever the decoder's ft.
        A continuing model (`continues`) draws more than a window as continuations and decodes
        them window by window; any other model samples them as one window, as it always has.
        """
        from lvdm.long_video import latent_count

        frames = self.window_frames if frames is None else frames
        latents = self.sample_latents(
            prompts,
            schedule,
            sampling,
            generator=generator,
            guidance_scale=guidance_scale,
            latents=latent_count(frames, self.ft),
            strategy=strategy,
        )
        return self.decode(latents)[:, :, :frames]

    @torch.no_grad()
    def sample_latents(
        self,
        prompts: Sequence[str],
        schedule,
        sampling: dict,
        *,
        generator: torch.Generator,
        latents: int,
        guidance_scale: float | None = None,
        given: Tensor | None = None,
        strategy: str | None = None,
    ) -> Tensor:
        """Normalised latents `b c latents h w`, one video per prompt.

        `given: b c g h w` (normalised, g >= cond_frames) continues those latents instead of
        starting from the caption alone; they come back unchanged as the video's first g.
        Only a continuing model takes them, and continues them autoregressively."""
        strategy = self.check_strategy(strategy)
        denoiser = self.text_denoiser(prompts, guidance_scale)
        if self.continues:
            return self._continued(denoiser, schedule, sampling, generator, latents, given, strategy)
        if given is not None:
            raise ValueError("given latents need a model trained with t2v.cond_frames > 0 (a mask channel)")
        from lvdm.diffusion.sampling import sample_latents

        c, _, h, w = self.latent_shape
        return sample_latents(
            denoiser,
            (len(prompts), c, latents, h, w),
            schedule,
            sampler=sampling["sampler"],
            steps=sampling["steps"],
            eta=sampling["eta"],
            ddim_last_step=sampling.get("ddim_last_step", "x0"),
            generator=generator,
            device=self.device,
        )

    def text_denoiser(self, prompts: Sequence[str], guidance_scale: float | None = None) -> TextGuided:
        """The network with the prompts fixed and classifier-free guidance (`text_guided`)."""
        from lvdm.diffusion.text_guidance import text_guided

        return text_guided(
            self.network,
            self.text.encode(list(prompts)),
            self.text.encode([""])[0],
            self.guidance_scale if guidance_scale is None else guidance_scale,
        )

    def _continued(
        self,
        denoiser: TextGuided,
        schedule,
        sampling: dict,
        generator: torch.Generator,
        latents: int,
        given: Tensor | None,
        strategy: Strategy,
    ) -> Tensor:
        """The long-video loops of the non-text networks, run on the text-guided network: its
        `config` says it has the mask channel and the noise-level embedding, so s and w apply
        as they do there (`lvdm.long_video`, `lvdm.continuation`)."""
        from lvdm.long_video_steps import check_conditional

        settings = long_video_settings(sampling)
        check_conditional(denoiser, "train_t2v's network (t2v.cond_frames)", settings)
        if given is None:
            return self._from_captions(denoiser, schedule, settings, generator, latents, strategy)
        if strategy == "hierarchical":
            raise ValueError("given latents are continued autoregressively: strategy='autoregressive'")
        return self._from_given(denoiser, schedule, settings, generator, latents, given)

    def _from_captions(
        self,
        denoiser: TextGuided,
        schedule,
        settings: SamplingSettings,
        generator: torch.Generator,
        latents: int,
        strategy: Strategy,
    ) -> Tensor:
        """First window from the captions alone, then continuations (`autoregressive_latents`);
        hierarchical: keys `key_stride` apart drawn that way (the network told the key stride),
        then the gaps between them filled with both keys given (`hierarchical_latents`), the one
        network in every role. Every prompt's video goes through one sampler call (`max_batch`):
        the captions are fixed per video, and a batch split apart would no longer line up with them."""
        from lvdm.long_video import autoregressive_latents, hierarchical_latents

        c, clip, h, w = self.latent_shape
        videos = denoiser.context.shape[0]
        common = dict(
            videos=videos,
            latents=latents,
            latent_shape=(c, h, w),
            clip=clip,
            cond_frames=self.cond_frames,
            sampling=settings,
            max_batch=videos,
            generator=generator,
            device=self.device,
        )
        if strategy == "hierarchical" and latents > clip:
            chunks = hierarchical_latents(
                denoiser, denoiser, schedule, latent_stride=self.key_stride, **common
            )
        else:  # within one window the strategies agree: the first window from the captions alone
            chunks = autoregressive_latents(denoiser, schedule, **common)
        return torch.cat(list(chunks), dim=2)

    def _from_given(
        self,
        denoiser: TextGuided,
        schedule,
        settings: SamplingSettings,
        generator: torch.Generator,
        latents: int,
        given: Tensor,
    ) -> Tensor:
        """`given` continued from its last `cond_frames` latents (`continue_latents`), itself in front."""
        from lvdm.continuation import continue_latents

        k, videos = self.cond_frames, denoiser.context.shape[0]
        if given.shape[0] != videos or not k <= given.shape[2] <= latents:
            raise ValueError(
                f"given latents {tuple(given.shape)}: one video per prompt ({videos}), at least "
                f"cond_frames={k} latents and at most the {latents} asked for"
            )
        given = given.to(self.device)
        head, tail = given[:, :, :-k], given[:, :, -k:]
        continued = continue_latents(
            denoiser,
            tail,
            schedule,
            clip=self.latent_shape[1],
            latents=latents - head.shape[2],
            sampling=settings,
            generator=generator,
        )
        return torch.cat([head, continued], dim=2)

    @property
    def device(self) -> torch.device:
        """Where the network is, and so where sampling runs."""
        return next(self.network.parameters()).device

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents `b c t h w` -> video `b c t' h' w'` in [-1, 1]; past one window, window
        by window (`Decoder.decode_windows`), for a continuing model's long videos."""
        raw = denormalise(latents, self.scale, self.shift)
        window = self.latent_shape[1]
        if raw.shape[2] > window and self.continues and self.decode_windows is not None:
            return self.decode_windows(raw, window).clamp(-1, 1)
        return self.decode_latents(raw).clamp(-1, 1)


def long_video_settings(sampling: dict) -> SamplingSettings:
    """The sampling section (a dict of its fields, some may be left out) as the long-video loops'
    settings; DDIM's last jump defaults to x̂_0, as the one-window text sampler's does."""
    from lvdm.long_video_steps import SamplingSettings

    return SamplingSettings(**({"ddim_last_step": "x0"} | dict(sampling)))

"""train_pred's exact prediction check (issue 21 item 3): shape positions in pixels, not latent MSE.

On held-out synthetic clips (the shard stage's own videos: the source's render through the
same H.264 round trip, with their metadata) the first frames are given, encoded, and continued
by each row below; the continuation is decoded and `data_prep.position_check` scores the
position of every shape at +4, +8 and +16 frames after the last given frame.

Rows:
- `prediction`: the prediction model, sampled as the `sampling` section says (perturbation
  level s of the given latents and guidance w): what the long-video strategies do;
- `prediction_no_perturbation`: the same with s = 0 (the given latents exactly);
- `unconditional_model`: independent clips of the unconditional model (ignores the given);
- `still_frame`: the last given frame repeated (scores the true displacement);
- `autoencoder`: the true continuation encoded and decoded the way a prediction is (the best
  any latent model can do through this codec);
- `true_continuation`: the source's clean render (0 up to rasterisation: checks the detector).

Given frames: the first `((k − 1)·stride + 1)·ft` frames, k = cond_frames, so that the k given
latents are the model's keys 0, stride, …; they are encoded on their own, padded with copies
of the last given frame to the cache's encoding window (no future frame leaks into them
through the encoder). Continuations at latent stride > 1 are keys, not consecutive latents:
each is decoded as a still clip (`lvdm.continuation.decode_still`), and an offset that falls
between keys has no frame (None).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from einops import rearrange

from data_prep.clip_sampling import frames_to_model_range
from data_prep.position_check import (
    OFFSETS,
    pool_position_errors,
    position_errors,
    still_frame,
    true_continuation,
)
from lvdm.autoencoder import Normalisation, denormalise, normalise
from lvdm.continuation import continue_latents, decode_still
from lvdm.diffusion.sampling import model_takes_stride, sample_latents
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.latent_sequence import encode_sequence
from lvdm.long_video import SamplingSettings, to_uint8_frames

ROWS = (
    "prediction",
    "prediction_no_perturbation",
    "unconditional_model",
    "still_frame",
    "autoencoder",
    "true_continuation",
)


def heldout_clips(data, count: int, crf: int) -> list[tuple[dict, np.ndarray]]:
    """(metadata, decoded frames) of the first `count` videos of the test split (train if none),
    exactly as the shard stage stores them: rendered by the source, through H.264 at `crf`."""
    from data_prep.decode import decode_video
    from data_prep.encode import encode_mp4
    from data_prep.sources import synthetic
    from stages.shard import discover

    videos = discover(data).videos
    split = "test" if any(v.split == "test" for v in videos) else "train"
    chosen = [v for v in videos if v.split == split][:count]
    return [
        (v.meta, decode_video(encode_mp4(synthetic.render(v.meta), fps=v.meta["fps"], crf=crf)).frames)
        for v in chosen
    ]


@torch.no_grad()
def position_check(
    prediction: torch.nn.Module,
    unconditional: torch.nn.Module | None,
    autoencoder: torch.nn.Module,
    clips: list[tuple[dict, np.ndarray]],
    schedule: NoiseSchedule,
    *,
    scale: Normalisation,
    shift: Normalisation,
    cond_frames: int,
    clip_latents: int,
    latent_stride: int,
    unconditional_latents: int,
    encode_window: int,
    sampling: SamplingSettings,
    offsets: tuple[int, ...] = OFFSETS,
    stride: int | None = None,
    seed: int = 0,
) -> dict:
    """Every row of the module docstring, pooled over `clips`, per offset.

    `latent_stride`: the stride the prediction model was trained at (its keys); `stride`, if
    given, the one to sample at (None: `latent_stride`), told to the network where it has a
    stride embedding (`UNet3D.config.max_stride` > 0). `clip_latents`: the
    prediction model's window; `unconditional_latents`: the unconditional model's;
    `encode_window`: frames per encode, as the latent cache (data.frames).
    """
    ft = autoencoder.config.ft
    step = stride or latent_stride
    told = step if model_takes_stride(prediction) else None
    given = ((cond_frames - 1) * step + 1) * ft
    last_given = given - 1
    clips = [(meta, frames) for meta, frames in clips if len(frames) > given]
    if not clips:
        return {"clips": 0, "given_frames": given, "latent_stride": step}
    target = min(last_given + max(offsets), min(len(frames) for _, frames in clips) - 1)
    keys = target // (step * ft) + 1  # key j decodes to frames j·step·ft + [0, ft)
    key_times = [j * step * ft + i for j in range(keys) for i in range(ft)]

    def encode(frames: np.ndarray) -> torch.Tensor:
        """Keys 0, step, … of `frames`' latents, normalised: `(c n h w)`."""
        padded = -(-len(frames) // encode_window) * encode_window
        frames = np.concatenate([frames, np.repeat(frames[-1:], padded - len(frames), axis=0)])
        latents = encode_sequence(autoencoder, torch.from_numpy(frames_to_model_range(frames)), encode_window)
        return normalise(latents[:, ::step], scale, shift)

    def decode_keys(latents: torch.Tensor) -> np.ndarray:
        """Normalised keys `(b c n h w)` -> uint8 frames `(b t h w c)` at `key_times`."""
        raw = denormalise(latents, scale, shift)
        video = autoencoder.decode(raw) if step == 1 else decode_still(autoencoder, raw, encode_window // ft)
        return to_uint8_frames(video).numpy()

    def score(continuations: list[np.ndarray], times: list[int] | None) -> dict:
        return pool_position_errors(
            [
                position_errors(frames, meta, given, offsets, frame_times=times)
                for (meta, _), frames in zip(clips, continuations, strict=True)
            ]
        )

    after = [i for i, t in enumerate(key_times) if t > last_given]
    continuation_times = [key_times[i] for i in after]
    given_latents = torch.stack([encode(frames[:given])[:, :cond_frames] for _, frames in clips])
    results: dict = {"clips": len(clips), "given_frames": given, "latent_stride": step}
    for row, noise_level in (("prediction", sampling.noise_level), ("prediction_no_perturbation", 0)):
        latents = continue_latents(
            prediction,
            given_latents,
            schedule,
            clip=clip_latents,
            latents=keys,
            sampling=dataclasses.replace(sampling, noise_level=noise_level),
            generator=torch.Generator().manual_seed(seed),
            stride=told,
        )
        results[row] = score(list(decode_keys(latents)[:, after]), continuation_times)

    true_keys = torch.stack([encode(frames[: target + 1])[:, :keys] for _, frames in clips])
    results["autoencoder"] = score(list(decode_keys(true_keys)[:, after]), continuation_times)
    if unconditional is not None:
        needed = target - last_given
        per_clip = math.ceil(needed / (unconditional_latents * ft))
        c, _, h, w = given_latents.shape[1:]
        shape = (len(clips) * per_clip, c, unconditional_latents, h, w)
        free = sample_latents(
            unconditional,
            shape,
            schedule,
            sampler=sampling.sampler,
            steps=sampling.steps,
            eta=sampling.eta,
            ddim_last_step=sampling.ddim_last_step,
            generator=torch.Generator().manual_seed(seed),
        )
        frames = to_uint8_frames(autoencoder.decode(denormalise(free, scale, shift))).numpy()
        frames = rearrange(frames, "(b m) t h w c -> b (m t) h w c", m=per_clip)[:, :needed]
        results["unconditional_model"] = score(list(frames), None)
    results["still_frame"] = score([still_frame(f[:given], target - last_given) for _, f in clips], None)
    results["true_continuation"] = score(
        [true_continuation(meta, given, target - last_given) for meta, _ in clips], None
    )
    results["noise_level"] = sampling.noise_level
    return results


def flat_metrics(results: dict) -> dict[str, float]:
    """`position/<row>/error_<k>` and `.../found_<k>` for MLflow (no `+` in metric names)."""
    flat = {}
    for row in ROWS:
        for offset, scores in results.get(row, {}).items():
            for name in ("error", "error_with_lost", "found"):
                if scores[name] is not None:
                    flat[f"position/{row}/{name}_{offset.lstrip('+')}"] = scores[name]
    return flat


def describe(results: dict) -> str:
    """One line per offset: each row's error (found fraction), for the stage's printout."""
    lines = []
    for offset in results.get("still_frame", {}):
        cells = []
        for row in ROWS:
            scores = results.get(row, {}).get(offset)
            if scores and scores["error"] is not None:
                cells.append(f"{row} {scores['error']:.2f} ({scores['found']:.0%})")
        lines.append(f"{offset} frames: " + ", ".join(cells))
    return "\n".join(lines)

"""One latent shard of `cache_latents`: decode a stored video, encode it, write the shard and its record.

Both engines (stages/cache_latents.py's per-shard tasks, stages/cache_latents_stream.py's Ray
Data pipeline) run every video through these functions and write through `write_latent_shard`,
so their files are the same bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_prep import storage
from data_prep.chunks import record_path
from data_prep.clip_sampling import frames_to_model_range
from data_prep.decode import decode_video
from data_prep.shard_writer import write_shard
from data_prep.skip import SkipSample
from lvdm.latent_sequence import encode_sequence
from lvdm.precision import autocast


@dataclass(frozen=True)
class EncodedVideo:
    """One stored video's outcome: its latents `(c l h w)` fp16, or why it was skipped."""

    key: str
    info: dict
    latents: np.ndarray | None
    skip_reason: str | None = None


def decode_frames(mp4: bytes, frames: int, stride: int) -> np.ndarray:
    """A stored video's frames `(t h w c)` uint8 at `stride`; SkipSample if shorter than one clip."""
    video = decode_video(mp4).frames[::stride]
    if len(video) < frames:
        raise SkipSample(f"{len(video)} frames at stride {stride}: less than one clip ({frames})")
    return video


def encode_frames(
    model: torch.nn.Module,
    video: np.ndarray,
    frames: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> np.ndarray:
    """`video (t h w c)` uint8 -> posterior means `(c l h w)` fp16, window after window."""
    pixels = torch.from_numpy(frames_to_model_range(video)).to(device)
    with torch.no_grad(), autocast(device, dtype):  # bf16 where native (`cache_latents.precision: auto`)
        latents = encode_sequence(model, pixels, window=frames, batch_size=batch_size).float()
    return latents.cpu().numpy().astype("float16")


def write_latent_shard(
    out_dir: Path, split: str, name: str, videos: Iterable[EncodedVideo], meta: dict
) -> dict:
    """Write `videos` (in shard order) as the latent shard `name` in the local folder `out_dir`,
    then its record (rows + skips); returns the record. Both engines write through here."""
    dst = out_dir / name
    skipped: list[dict] = []
    rows: list[dict] = []

    def samples():
        for video in videos:
            if video.latents is None:
                skipped.append({"key": video.key, "shard": dst.name, "reason": video.skip_reason})
                continue
            info = video.info | {
                "latent_frames": int(video.latents.shape[1]),
                "scale": meta["scale"],
                "shift": meta["shift"],
            }
            rows.append(_index_row(video.key, split, dst.name, info))
            yield {"__key__": video.key, "npy": video.latents, "json": info}

    written = write_shard(dst, samples())
    if written == 0 and dst.exists():
        dst.unlink()  # an empty shard would only trip up the latent loader
    record = {"chunk": dst.stem, "split": split, "shard": dst.name if written else None}
    record |= {"rows": rows, "skipped": skipped}
    storage.write_json(record_path(out_dir, dst.stem), record)
    return record


def _index_row(key: str, split: str, shard: str, info: dict) -> dict:
    return {
        "key": key,
        "split": split,
        "shard": shard,
        "latent_frames": info["latent_frames"],
        "label": info.get("label"),
        "caption": info.get("caption"),
    }

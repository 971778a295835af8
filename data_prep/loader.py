"""Training loaders over WebDataset shards: random video clips, random latent windows.

Both loaders share one stream (`ShardStream`) and differ only in the sampler that turns a
stored sample into a tensor: `VideoClipSampler` decodes a strided clip from `<key>.mp4`,
`LatentWindowSampler` slices a window from the latent sequence in `<key>.npy`. For the
text-to-video stage, `latent_window_loader(..., captions=True)` hands each window's caption
along (`CaptionedWindowSampler`; no caption, no sample) and its batches are `CaptionedBatch`es,
whose `.to(device)` moves the latents, so the shared training loop takes them like a tensor.

Why a small IterableDataset rather than `wds.WebDataset(..., resampled=True)`: the split
across ranks and workers is the part distributed training depends on, and written out it is
a few visible lines with a seed we control. The rules:

- **Ranks** (Ray Train world rank / world size): rank r reads `shards[r::world_size]`, so
  ranks see disjoint data; with fewer shards than ranks every rank reads all shards, and
  the per-rank seed makes their samples differ.
- **DataLoader workers** split the rank's shards the same way (`[w::num_workers]`), or
  all read them with different seeds when there are fewer shards than workers.
- **Equal batch counts**: shards are *resampled* (a new shuffled pass whenever one ends),
  and an epoch is a fixed `batches_per_epoch` on every rank, divided among the workers. An
  uneven last batch would leave one rank waiting in an all-reduce forever; here there is
  none.
- **Shuffled** at two levels: shard order per pass and a sample buffer, both from one
  generator seeded by (seed, epoch, rank, worker), so a run is reproducible.

A sample too short for one clip (or window) is skipped, counted and warned about once per
key; it never stops training. If a worker's shards hold no usable sample at all the loader
stops with an error saying so, instead of spinning forever.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_prep.clip_sampling import (
    clip_span,
    frames_to_model_range,
    random_window_start,
    strided_clip_indices,
)
from data_prep.decode import decode_video
from data_prep.shard_writer import read_shard
from data_prep.skip import SkipSample

log = logging.getLogger(__name__)

ShardPath = str | Path

# A run of corrupt samples this long means the data, not bad luck, is the problem.
MAX_CONSECUTIVE_FAILURES = 1000


@dataclass(frozen=True)
class StoredSample:
    shard: str
    key: str
    fields: dict[str, bytes]
    meta: dict[str, Any]


class Sampler(Protocol):
    """Turns one stored sample into one training tensor."""

    def reject_reason(self, sample: StoredSample) -> str | None:
        """Why the sample can never give an item (from its metadata alone), or None."""

    def __call__(self, sample: StoredSample, rng: np.random.Generator) -> np.ndarray:
        """One random float32 item; raises SkipSample for a sample that turns out unusable."""


@dataclass(frozen=True)
class VideoClipSampler:
    """A random clip of `frames` frames every `stride` frames -> float `(c t h w)` in [-1, 1]."""

    frames: int
    stride: int

    def reject_reason(self, sample: StoredSample) -> str | None:
        num_frames = int(_field(sample, "num_frames"))
        span = clip_span(self.frames, self.stride)
        if num_frames < span:
            return f"{num_frames} frames, a clip of {self.frames} at stride {self.stride} needs {span}"
        return None

    def __call__(self, sample: StoredSample, rng: np.random.Generator) -> np.ndarray:
        # `num_frames` in the metadata is the stored mp4's frame count (the shard stage
        # writes it), so the indices are chosen before decoding and only they are decoded.
        indices = strided_clip_indices(int(_field(sample, "num_frames")), self.frames, self.stride, rng)
        video = decode_video(_payload(sample, "mp4"), indices)
        return frames_to_model_range(video.frames)


@dataclass(frozen=True)
class LatentWindowSampler:
    """A random window of `frames` latent frames, every `stride`-th, from a stored `(c l h w)`
    sequence -> float32. A stride > 1 is how the prediction model of long videos sees keys
    that lie far apart (LVDM §3.3; official: every 4th latent)."""

    frames: int
    stride: int = 1

    def reject_reason(self, sample: StoredSample) -> str | None:
        length = int(_field(sample, "latent_frames"))
        span = clip_span(self.frames, self.stride)
        if length < span:
            return f"{length} latent frames, a window of {self.frames} at stride {self.stride} needs {span}"
        return None

    def __call__(self, sample: StoredSample, rng: np.random.Generator) -> np.ndarray:
        sequence = np.load(io.BytesIO(_payload(sample, "npy")), allow_pickle=False)
        if sequence.ndim != 4:
            raise ValueError(
                f"{sample.shard}: {sample.key}.npy has shape {sequence.shape}; "
                "a latent sequence is (c, l, h, w)"
            )
        span = clip_span(self.frames, self.stride)
        start = random_window_start(sequence.shape[1], span, rng)
        return sequence[:, start : start + span : self.stride].astype(np.float32)


@dataclass(frozen=True)
class CaptionedBatch:
    latents: torch.Tensor  # b c t h w
    captions: list[str]

    def to(self, device: torch.device | str) -> CaptionedBatch:
        return CaptionedBatch(self.latents.to(device), self.captions)


@dataclass(frozen=True)
class CaptionedWindowSampler:
    """A `LatentWindowSampler` item together with the sample's caption; no caption, no sample."""

    windows: LatentWindowSampler

    def reject_reason(self, sample: StoredSample) -> str | None:
        caption = sample.meta.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            return "no caption"
        return self.windows.reject_reason(sample)

    def __call__(self, sample: StoredSample, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        return self.windows(sample, rng), sample.meta["caption"]


class ShardStream(IterableDataset):
    """Endless resampled samples from this rank's (and worker's) shards, cut into a fixed epoch."""

    def __init__(
        self,
        shards: Sequence[ShardPath],
        sampler: Sampler,
        *,
        batch_size: int,
        batches_per_epoch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        shuffle_buffer: int = 64,
        collate: Callable[[list[tuple[str, Any]]], Any] | None = None,
    ) -> None:
        if not shards:
            raise ValueError("the loader got no shards; check the upstream stage's output folder")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
        if batch_size < 1 or batches_per_epoch < 1 or shuffle_buffer < 1:
            raise ValueError(
                "batch_size, batches_per_epoch and shuffle_buffer must be >= 1; got "
                f"{batch_size}, {batches_per_epoch}, {shuffle_buffer}"
            )
        if seed < 0 or epoch < 0:
            raise ValueError(f"seed and epoch must be >= 0; got seed={seed}, epoch={epoch}")
        self.shards = [str(s) for s in shards]
        self.sampler = sampler
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.rank, self.world_size = rank, world_size
        self.seed, self.epoch = seed, epoch
        self.shuffle_buffer = shuffle_buffer
        self.collate = collate or _stack  # (key, item) pairs -> one batch
        self.skipped: dict[str, str] = {}  # "shard:key" -> reason; filled in-process (num_workers=0)

    def set_epoch(self, epoch: int) -> None:
        """Reseed for a new epoch (takes effect at the next `iter()`, also in worker processes)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = split_shards(split_shards(self.shards, self.rank, self.world_size), worker, num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        # Workers share the rank's epoch: worker w yields its part, DataLoader interleaves them.
        num_batches = self.batches_per_epoch // num_workers + (worker < self.batches_per_epoch % num_workers)
        items = self._items(shards, rng)
        for _ in range(num_batches):
            yield self.collate([next(items) for _ in range(self.batch_size)])

    def _items(self, shards: list[str], rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
        failures = 0
        for sample in _shuffle_buffer(self._samples(shards, rng), self.shuffle_buffer, rng):
            try:
                item = self.sampler(sample, rng)
            except SkipSample as skip:
                self._skip(sample, skip.reason)
                failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise RuntimeError(
                        f"{failures} samples in a row could not be used from {shards}; "
                        f"last: {sample.key}: {skip.reason}"
                    ) from skip
                continue
            failures = 0
            yield sample.key, item

    def _samples(self, shards: list[str], rng: np.random.Generator) -> Iterator[StoredSample]:
        while True:  # resampled: a new shuffled pass over the shards whenever one ends
            usable = 0
            for index in rng.permutation(len(shards)):
                for key, fields in read_shard(shards[index]):
                    sample = StoredSample(shards[index], key, fields, _metadata(shards[index], key, fields))
                    reason = self.sampler.reject_reason(sample)
                    if reason is not None:
                        self._skip(sample, reason)
                        continue
                    usable += 1
                    yield sample
            if usable == 0:
                raise RuntimeError(
                    f"no usable sample in shards {shards}: every sample was skipped "
                    f"(e.g. {next(iter(self.skipped.values()), 'the shards are empty')}). "
                    "Use shorter clips (frames/stride) or longer videos."
                )

    def _skip(self, sample: StoredSample, reason: str) -> None:
        name = f"{sample.shard}:{sample.key}"
        if name not in self.skipped:
            self.skipped[name] = reason
            log.warning("skipping %s: %s (%d samples skipped so far)", name, reason, len(self.skipped))


def split_shards(shards: Sequence[str], part: int, num_parts: int) -> list[str]:
    """Part `part` of `num_parts` takes every `num_parts`-th shard; all of them if there are too few."""
    if len(shards) < num_parts:
        return list(shards)
    return list(shards[part::num_parts])


def video_clip_loader(
    shards: Sequence[ShardPath],
    *,
    frames: int,
    stride: int,
    batch_size: int,
    batches_per_epoch: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    seed: int = 0,
    epoch: int = 0,
    shuffle_buffer: int = 64,
) -> DataLoader:
    """Batches of random video clips `(b c t h w)`, float32 in [-1, 1], from video shards.

    Yields exactly `batches_per_epoch` batches on every rank (see the module docstring).
    """
    stream = ShardStream(
        shards,
        VideoClipSampler(frames=frames, stride=stride),
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        rank=rank,
        world_size=world_size,
        seed=seed,
        epoch=epoch,
        shuffle_buffer=shuffle_buffer,
    )
    return _batch_loader(stream, num_workers)


def latent_window_loader(
    shards: Sequence[ShardPath],
    *,
    frames: int,
    batch_size: int,
    batches_per_epoch: int,
    stride: int = 1,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    seed: int = 0,
    epoch: int = 0,
    shuffle_buffer: int = 64,
    captions: bool = False,
) -> DataLoader:
    """Batches of random latent windows `(b c frames h w)`, float32, from latent shards; with
    `captions`, `CaptionedBatch`es of the windows and their samples' captions."""
    windows = LatentWindowSampler(frames=frames, stride=stride)
    stream = ShardStream(
        shards,
        CaptionedWindowSampler(windows) if captions else windows,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        rank=rank,
        world_size=world_size,
        seed=seed,
        epoch=epoch,
        shuffle_buffer=shuffle_buffer,
        collate=_captioned_batch if captions else _stack,
    )
    return _batch_loader(stream, num_workers)


def _batch_loader(stream: ShardStream, num_workers: int) -> DataLoader:
    # batch_size=None: the stream batches itself, so each worker owns whole batches and
    # the epoch length stays exact however many workers there are.
    return DataLoader(stream, batch_size=None, num_workers=num_workers)


def _shuffle_buffer(
    samples: Iterator[StoredSample], size: int, rng: np.random.Generator
) -> Iterator[StoredSample]:
    buffer: list[StoredSample] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        index = int(rng.integers(len(buffer)))
        buffer[index], sample = sample, buffer[index]
        yield sample


def _stack(items: list[tuple[str, np.ndarray]]) -> torch.Tensor:
    shapes = {tuple(item.shape) for _, item in items}
    if len(shapes) > 1:
        detail = ", ".join(f"{key}: {tuple(item.shape)}" for key, item in items)
        raise ValueError(
            f"samples of one batch differ in shape ({detail}); every video of a dataset must be "
            "stored at one resolution (reshard with a single data.resolution)"
        )
    return torch.from_numpy(np.stack([item for _, item in items]))


def _captioned_batch(items: list[tuple[str, tuple[np.ndarray, str]]]) -> CaptionedBatch:
    latents = _stack([(key, window) for key, (window, _) in items])
    return CaptionedBatch(latents, [caption for _, (_, caption) in items])


def _metadata(shard: str, key: str, fields: dict[str, bytes]) -> dict[str, Any]:
    if "json" not in fields:
        raise ValueError(f"{shard}: sample {key!r} has no {key}.json; the shard is not in the LVDM format")
    return json.loads(fields["json"])


def _field(sample: StoredSample, name: str) -> Any:
    if name not in sample.meta:
        raise ValueError(
            f"{sample.shard}: {sample.key}.json has no {name!r} field (has {sorted(sample.meta)}); "
            "rebuild the shards with the current shard/cache_latents stage"
        )
    return sample.meta[name]


def _payload(sample: StoredSample, ext: str) -> bytes:
    if ext not in sample.fields:
        raise ValueError(
            f"{sample.shard}: sample {sample.key!r} has no .{ext} member (has {sorted(sample.fields)})"
        )
    return sample.fields[ext]

"""Batches of latent windows with their captions, for the text-to-video stage (LVDM §5).

The latent shards of `cache_t2v_latents` keep each video's caption in its JSON; this reads
windows as `data_prep.loader.latent_window_loader` does (same shard split per rank and
worker, same resampling and epochs) and hands the captions along. A batch is a
`CaptionedBatch`, whose `.to(device)` moves the latents, so the shared training loop
(`stages.ray_training.train_steps`) takes it like a tensor. Captions stay strings: the frozen
text encoder runs in the training loop (see `stages/train_t2v.py` for why).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from data_prep.loader import LatentWindowSampler, ShardStream, StoredSample, split_shards


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


class CaptionedShardStream(ShardStream):
    """`ShardStream` whose batches are `CaptionedBatch`es."""

    def __iter__(self) -> Iterator[CaptionedBatch]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = split_shards(split_shards(self.shards, self.rank, self.world_size), worker, num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        num_batches = self.batches_per_epoch // num_workers + (worker < self.batches_per_epoch % num_workers)
        items = self._items(shards, rng)
        for _ in range(num_batches):
            batch = [next(items)[1] for _ in range(self.batch_size)]
            latents = torch.from_numpy(np.stack([window for window, _ in batch]))
            yield CaptionedBatch(latents, [caption for _, caption in batch])


def captioned_window_loader(
    shards: Sequence[str],
    *,
    frames: int,
    batch_size: int,
    batches_per_epoch: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    seed: int = 0,
    epoch: int = 0,
) -> DataLoader:
    """Batches of random windows of `frames` consecutive latents `(b c frames h w)` and their captions."""
    stream = CaptionedShardStream(
        shards,
        CaptionedWindowSampler(LatentWindowSampler(frames=frames)),
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        rank=rank,
        world_size=world_size,
        seed=seed,
        epoch=epoch,
    )
    # batch_size=None: the stream batches itself (as data_prep.loader does).
    return DataLoader(stream, batch_size=None, num_workers=num_workers)

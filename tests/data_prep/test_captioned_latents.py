"""data_prep/loader.py, `latent_window_loader(captions=True)`: latent windows with their captions;
no caption, no sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_prep.loader import CaptionedBatch, latent_window_loader
from data_prep.shard_writer import write_shard


def test_batches_carry_each_windows_caption(tmp_path: Path) -> None:
    def samples():
        for i, caption in enumerate(["a red circle", "a blue square", None, ""]):
            latents = np.full((4, 6, 2, 2), i, np.float16)  # every value says which video it is
            yield {"__key__": f"v{i}", "npy": latents, "json": {"latent_frames": 6, "caption": caption}}

    write_shard(tmp_path / "train-000000.tar", samples())
    loader = latent_window_loader(
        [str(tmp_path / "train-000000.tar")], frames=3, batch_size=4, batches_per_epoch=3, captions=True
    )
    batches = list(loader)
    assert len(batches) == 3 and all(isinstance(b, CaptionedBatch) for b in batches)
    for batch in batches:
        assert batch.latents.shape == (4, 4, 3, 2, 2) and batch.latents.dtype == torch.float32
        for latents, caption in zip(batch.latents, batch.captions, strict=True):
            assert caption == ["a red circle", "a blue square"][int(latents[0, 0, 0, 0])]
    assert batches[0].to("cpu").captions == batches[0].captions
    assert sorted(loader.dataset.skipped.values()) == ["no caption", "no caption"]

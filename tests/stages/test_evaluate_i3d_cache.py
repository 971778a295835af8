"""The real set's I3D statistics are cached per I3D network (issue 19, item 11).

The cache was keyed by the shards and the clip rule only: evaluating again with another
`evaluate.i3d` compared the new network's features with the old network's statistics, a wrong
FVD with no warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data_prep.encode import encode_mp4, write_mp4
from data_prep.shard_writer import write_shard
from stages.evaluate import evaluate_jobs

FRAMES, SIZE = 16, 16


class StandInI3D(nn.Module):
    """The community file's call signature, (b 3 t 224 224) -> features, random weights."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * FRAMES, 3)  # 3 features: FVD of 3x3 covariances is cheap

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        return self.proj(x.mean(dim=(3, 4)).flatten(1))


def _i3d(path: Path, seed: int) -> str:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(StandInI3D()).save(str(path))
    return str(path)


def _clip(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)


def test_another_i3d_computes_its_own_real_statistics(tmp_path):
    shard = tmp_path / "test-000000.tar"
    samples = [
        {"__key__": f"v{i}", "mp4": encode_mp4(_clip(i)), "json": {"num_frames": FRAMES}} for i in range(4)
    ]
    write_shard(shard, samples)
    fake = [str(write_mp4(tmp_path / f"fake{i}.mp4", _clip(10 + i))) for i in range(2)]
    cache = tmp_path / "cache"
    options = {"window": FRAMES, "real_clips": 4, "batch_size": 4, "home": None}
    options |= {"cache": str(cache), "cache_key": "shardkey-test-4x16", "device": torch.device("cpu")}

    first = evaluate_jobs(
        [str(shard)], {"job": fake}, i3d=_i3d(tmp_path / "a.pt", 0), trust_i3d=True, **options
    )
    second = evaluate_jobs(
        [str(shard)], {"job": fake}, i3d=_i3d(tmp_path / "b.pt", 1), trust_i3d=True, **options
    )
    assert len(list(cache.glob("i3d-stats-*.npz"))) == 2, "the second network reused the first's statistics"
    assert first["real_floor"]["fvd"] != second["real_floor"]["fvd"]
    again = evaluate_jobs([str(shard)], {"job": fake}, i3d=str(tmp_path / "a.pt"), trust_i3d=True, **options)
    assert again["real_floor"] == first["real_floor"] and len(list(cache.glob("*.npz"))) == 2

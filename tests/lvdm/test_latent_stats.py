"""Latent statistics of long videos per window, streamed chunk by chunk."""

from __future__ import annotations

import torch

from lvdm.latent_stats import WindowedLatentStats, out_of_range


def test_streamed_window_statistics_equal_the_direct_ones_whatever_the_chunking():
    torch.manual_seed(0)
    video = torch.randn(3, 4, 10, 5, 5) * torch.tensor([1.0, 2.0, 0.5, 1.0])[:, None, None, None]
    stats = WindowedLatentStats(window=4)
    for chunk in (video[:, :, :3], video[:, :, 3:4], video[:, :, 4:10]):
        stats.add(chunk)
    windows = stats.windows()
    assert len(windows) == 3  # latents 0-3, 4-7, 8-9
    for index, (start, end) in enumerate([(0, 4), (4, 8), (8, 10)]):
        part = video[:, :, start:end].transpose(0, 1).flatten(1).double()
        assert torch.allclose(
            torch.tensor(windows[index]["mean"], dtype=torch.float64), part.mean(dim=1), atol=1e-9
        )
        assert torch.allclose(
            torch.tensor(windows[index]["std"], dtype=torch.float64), part.std(dim=1, correction=0), atol=1e-9
        )


def test_the_first_window_that_leaves_the_data_range_is_named():
    normal = {"mean": [0.1, -0.2], "std": [0.9, 1.1]}
    assert out_of_range([normal, normal]) is None
    assert out_of_range([normal, {"mean": [0.1, 0.8], "std": [1.0, 1.0]}, normal]) == 1
    assert out_of_range([normal, normal, {"mean": [0.0, 0.0], "std": [2.5, 1.0]}]) == 2

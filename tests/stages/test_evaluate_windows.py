"""Evaluate's synthetic part without I3D: per-window curves with bands from real mp4 files, one
PNG per metric, and the ratios to real clips in the summary."""

from __future__ import annotations

import numpy as np

from data_prep.encode import write_mp4
from data_prep.sources import synthetic
from data_prep.window_curves import CURVES, real_reference
from stages.evaluate import _save, summary, synthetic_scores
from stages.window_plots import write_window_plots


def test_synthetic_scores_give_bands_plots_and_ratios(tmp_path):
    found = synthetic.discover(None, ["test"], num_videos=4, num_frames=32, resolution=32)
    videos = [synthetic.render(video.meta) for video in found.videos]
    real = real_reference((v[:16] for v in videos), window=16)
    paths = [str(write_mp4(tmp_path / f"{i}.mp4", v)) for i, v in enumerate(videos[:3])]
    paths.append(
        str(
            write_mp4(
                tmp_path / "noise.mp4",
                np.random.default_rng(0).integers(0, 256, videos[0].shape, dtype=np.uint8),
            )
        )
    )
    scores = synthetic_scores(paths, 16, real)
    assert scores["intervals"]["coverage"]["videos"] == [4, 4]
    metrics = {
        "window": 16,
        "real_floor": None,
        "real_synthetic": real,
        "jobs": {"default-hierarchical": {"videos": 4, "fvd_curve": [], "fvd16": None, "synthetic": scores}},
    }
    row = summary(metrics)["jobs"]["default-hierarchical"]
    assert row["coverage_vs_real"] > 1.5  # one video in four is noise
    assert "frame_change_vs_real_last_window" in row
    plots = write_window_plots(str(tmp_path), metrics, _save)
    assert sorted(p.rsplit("/", 1)[-1] for p in plots) == sorted(f"window_{m}.png" for m in CURVES)
    assert all((tmp_path / f"window_{m}.png").stat().st_size > 1000 for m in CURVES)

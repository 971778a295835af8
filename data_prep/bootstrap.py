"""Percentile-bootstrap confidence intervals of a mean over videos, per window.

A curve over frame index from a handful of videos (the demo samples 4) cannot tell a real
difference between two sampling settings from the spread between videos; the interval says how
far the mean of each window could move with other videos of the same model. The bootstrap
resamples videos, not windows: windows of one video are not independent draws, videos are.
"""

from __future__ import annotations

import numpy as np


def bootstrap_mean_interval(
    values: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, list[float | None]]:
    """Mean and percentile-bootstrap interval of each column of `values (videos windows)`.

    NaN marks a missing value (a video shorter than the others, a score with nothing to
    measure); each window uses the videos that have it, resampled with replacement
    `resamples` times from one seeded generator. Returns per window `mean`, `low`, `high` (None
    where no video has the window; zero width from one video) and `videos`, the count used.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be (videos, windows); got shape {values.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1; got {resamples}")
    rng = np.random.default_rng(seed)
    tail = 100 * (1 - confidence) / 2
    out: dict[str, list] = {"mean": [], "low": [], "high": [], "videos": []}
    for column in values.T:
        present = column[~np.isnan(column)]
        out["videos"].append(len(present))
        if not len(present):
            for key in ("mean", "low", "high"):
                out[key].append(None)
            continue
        means = present[rng.integers(0, len(present), size=(resamples, len(present)))].mean(axis=1)
        low, high = np.percentile(means, [tail, 100 - tail])
        out["mean"].append(float(present.mean()))
        out["low"].append(float(low))
        out["high"].append(float(high))
    return out

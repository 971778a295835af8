"""One PNG per synthetic metric over frame index: a line per (setting, strategy) job with its 95%
bootstrap interval as a band, and the real clips' value and interval as a grey reference."""

from __future__ import annotations

from collections.abc import Callable

from data_prep import storage
from data_prep.window_curves import CURVES

LABELS = {
    "objects_found": "objects found / expected",
    "spurious_objects": "spurious objects per frame",
    "motion_error": "motion error (px)",
    "size_drift": "size drift |area / first − 1|",
    "colour_drift": "colour drift (RGB distance)",
    "coverage": "pixel coverage of shapes",
    "shape_count": "shapes per frame",
    "shape_size": "shape half size (px)",
    "on_palette": "shape pixels on the palette",
    "frame_change": "frame-to-frame change (0-255)",
}


def write_window_plots(out_dir: str, metrics: dict, save: Callable[..., str]) -> list[str]:
    """`window_<metric>.png` for every metric of `CURVES`; `save(figure, path)` writes one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = {
        name: job["synthetic"]["intervals"] for name, job in metrics["jobs"].items() if "synthetic" in job
    }
    real = (metrics.get("real_synthetic") or {}).get("intervals", {})
    plots = []
    for metric in CURVES:
        figure, axis = plt.subplots(figsize=(7, 4))
        for name, intervals in jobs.items():
            curve = intervals[metric]
            columns = (curve[k] for k in ("start", "mean", "low", "high"))
            rows = [row for row in zip(*columns, strict=True) if row[1] is not None]
            if not rows:
                continue
            starts, means, lows, highs = zip(*rows, strict=True)
            (line,) = axis.plot(starts, means, marker="o", label=name)
            axis.fill_between(starts, lows, highs, color=line.get_color(), alpha=0.2)
        reference = real.get(metric)
        if reference and reference["mean"] is not None:
            axis.axhline(reference["mean"], color="grey", linestyle="--", label="real clips")
            axis.axhspan(reference["low"], reference["high"], color="grey", alpha=0.2)
        axis.set(
            xlabel="frame index (window start)",
            ylabel=LABELS[metric],
            title=f"{metric} per {metrics['window']}-frame window (95% bootstrap over videos)",
        )
        axis.legend(fontsize=8)
        plots.append(save(figure, storage.join(out_dir, f"window_{metric}.png")))
    return plots

"""The reference run's goals (issue 21), checked on its own figures and printed at the end.

Each goal names the figure, the measured value, the target and whether it is met, so a reader
sees at once what the small models reach and what they do not:

- **samples look like the data**: the first 16-frame window of the default autoregressive
  videos (an unconditional clip, then its first continuation) against real clips of the same
  split: pixel coverage, shape count, shape size and frame-to-frame change each within ±25%
  of real; FVD16 at most 3× the real-vs-real floor at the same number of clips;
- **prediction beats a still frame**: position error at +8 frames at most half the still
  frame's (train_pred's `position_check`);
- **1,024-frame hierarchical videos hold**: in every 16-frame window, objects kept (of those
  the first window has) ≥ 90%, motion error ≤ 2× real, coverage and frame change within ±50%
  of real; the worst window is reported.

The checks read `evaluate`'s metrics.json layout (`data_prep.window_curves`) and the position
check's (`stages.position_check`); a figure that is missing is reported as such, never as met.
"""

from __future__ import annotations

from dataclasses import dataclass

LOOKS = ("coverage", "shape_count", "shape_size", "frame_change")


@dataclass(frozen=True)
class Goal:
    name: str
    value: float | None
    target: str
    met: bool

    def line(self) -> str:
        shown = "missing" if self.value is None else f"{self.value:.3g}"
        return f"{'met ' if self.met else 'MISS'}  {self.name}: {shown} (goal {self.target})"


def check_goals(metrics: dict, position: dict | None, *, strategy_job: str = "default") -> list[Goal]:
    """Every goal of the module docstring, from evaluate's `metrics` and train_pred's `position`."""
    goals = _sample_goals(metrics, f"{strategy_job}-autoregressive")
    goals.append(_prediction_goal(position))
    goals += _long_video_goals(metrics, f"{strategy_job}-hierarchical")
    return goals


def _sample_goals(metrics: dict, job: str) -> list[Goal]:
    synthetic = metrics["jobs"].get(job, {}).get("synthetic")
    real = (metrics.get("real_synthetic") or {}).get("means", {})
    goals = []
    for statistic in LOOKS:
        ratio = _ratio(_first_window(synthetic, statistic), real.get(statistic))
        goals.append(_within(f"first window {statistic} vs real ({job})", ratio, 0.25))
    fvd16 = (metrics["jobs"].get(job, {}).get("fvd16") or {}).get("fvd")
    floor = (metrics.get("real_floor") or {}).get("fvd")
    ratio = _ratio(fvd16, floor)
    goals.append(Goal(f"FVD16 / real-vs-real floor ({job})", ratio, "<= 3", ratio is not None and ratio <= 3))
    return goals


def _prediction_goal(position: dict | None) -> Goal:
    at8 = {row: scores.get("+8", {}) for row, scores in (position or {}).items() if isinstance(scores, dict)}
    # With lost shapes counted (`error_with_lost`): a prediction that loses its objects must not
    # look accurate on the few it keeps.
    predicted, still = (at8.get(row, {}).get("error_with_lost") for row in ("prediction", "still_frame"))
    ratio = _ratio(predicted, still)
    return Goal(
        "position error at +8 frames, prediction / still frame",
        ratio,
        "<= 0.5",
        ratio is not None and ratio <= 0.5,
    )


def _long_video_goals(metrics: dict, job: str) -> list[Goal]:
    synthetic = metrics["jobs"].get(job, {}).get("synthetic") or {}
    intervals = synthetic.get("intervals", {})
    real = (metrics.get("real_synthetic") or {}).get("means", {})
    kept = intervals.get("objects_found", {}).get("mean") or []
    worst_kept = min((k for k in kept if k is not None), default=None)
    goals = [
        Goal(f"objects kept, worst 16-frame window ({job})", worst_kept, ">= 0.9", _at_least(worst_kept, 0.9))
    ]
    motion = [
        _ratio(m, real.get("motion_error")) for m in intervals.get("motion_error", {}).get("mean") or []
    ]
    worst_motion = max((m for m in motion if m is not None), default=None)
    goals.append(
        Goal(f"motion error vs real, worst window ({job})", worst_motion, "<= 2", _at_most(worst_motion, 2.0))
    )
    for statistic in ("coverage", "frame_change"):
        ratios = [_ratio(v, real.get(statistic)) for v in intervals.get(statistic, {}).get("mean") or []]
        known = [r for r in ratios if r is not None]
        worst = max(known, key=lambda r: abs(r - 1.0), default=None)
        goals.append(_within(f"{statistic} vs real, worst window ({job})", worst, 0.5))
    return goals


def _first_window(synthetic: dict | None, statistic: str) -> float | None:
    means = ((synthetic or {}).get("intervals", {}).get(statistic) or {}).get("mean") or []
    return means[0] if means else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def _within(name: str, ratio: float | None, tolerance: float) -> Goal:
    met = ratio is not None and abs(ratio - 1.0) <= tolerance
    return Goal(name, ratio, f"within ±{tolerance:.0%} of real", met)


def _at_least(value: float | None, bound: float) -> bool:
    return value is not None and value >= bound


def _at_most(value: float | None, bound: float) -> bool:
    return value is not None and value <= bound


def format_goals(goals: list[Goal]) -> str:
    met = sum(goal.met for goal in goals)
    return "\n".join([f"reference goals: {met} of {len(goals)} met", *(f"  {goal.line()}" for goal in goals)])

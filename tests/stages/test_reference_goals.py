"""The reference run's goals (issue 21) read the evaluate and position-check figures they name."""

from __future__ import annotations

from stages.reference_goals import check_goals, format_goals

REAL = {"coverage": 0.1, "shape_count": 2.0, "shape_size": 3.0, "frame_change": 5.0, "motion_error": 1.0}


def job(scale: float, windows: int = 4, kept: float = 1.0, fvd: float = 200.0) -> dict:
    """A job whose every window's statistic is the real one times `scale`."""
    curves = {name: {"mean": [value * scale] * windows} for name, value in REAL.items()}
    curves["objects_found"] = {"mean": [kept] * windows}
    return {"fvd16": {"fvd": fvd}, "synthetic": {"intervals": curves}}


def metrics(scale: float, **options) -> dict:
    return {
        "real_floor": {"fvd": 100.0},
        "real_synthetic": {"means": REAL},
        "jobs": {
            "default-autoregressive": job(scale, **options),
            "default-hierarchical": job(scale, **options),
        },
    }


def position(prediction: float, still: float = 8.0) -> dict:
    return {
        "prediction": {"+8": {"error_with_lost": prediction}},
        "still_frame": {"+8": {"error_with_lost": still}},
    }


def test_figures_like_the_data_meet_every_goal():
    goals = check_goals(metrics(1.1), position(3.0))
    assert all(goal.met for goal in goals), format_goals(goals)
    assert "10 of 10 met" in format_goals(goals)


def test_each_figure_off_its_target_misses_its_own_goal():
    goals = {
        goal.name.split(" (")[0]: goal
        for goal in check_goals(metrics(1.4, kept=0.8, fvd=400.0), position(5.0))
    }
    assert not goals["first window coverage vs real"].met  # 1.4 is outside ±25%
    assert goals["coverage vs real, worst window"].met  # but inside the long videos' ±50%
    assert not goals["objects kept, worst 16-frame window"].met
    assert not goals["FVD16 / real-vs-real floor"].met
    assert not goals["position error at +8 frames, prediction / still frame"].met


def test_a_missing_figure_is_reported_missing_never_met():
    goals = check_goals({"jobs": {}}, None)
    assert not any(goal.met for goal in goals)
    assert all("missing" in goal.line() for goal in goals)

"""The bootstrap interval of a mean over videos against the closed form, per window."""

import numpy as np
import pytest

from data_prep.bootstrap import bootstrap_mean_interval


def test_interval_width_of_normal_data_is_the_closed_form():
    # The 95% interval of a mean of n draws with standard deviation σ is ±1.96·σ/√n.
    rng = np.random.default_rng(1)
    sigma, n = 2.0, 400
    values = rng.normal(5.0, sigma, size=(n, 3))
    result = bootstrap_mean_interval(values, resamples=4000, seed=0)
    expected = 2 * 1.96 * sigma / np.sqrt(n)
    for k in range(3):
        width = result["high"][k] - result["low"][k]
        assert width == pytest.approx(expected, rel=0.12)
        assert result["low"][k] < result["mean"][k] < result["high"][k]
        assert result["mean"][k] == pytest.approx(values[:, k].mean())
    assert result["videos"] == [n] * 3


def test_constant_data_has_zero_width_and_one_video_too():
    result = bootstrap_mean_interval(np.full((8, 2), 3.5))
    assert result["low"] == result["high"] == result["mean"] == [3.5, 3.5]
    single = bootstrap_mean_interval(np.array([[1.0, 7.0]]))
    assert single["low"] == single["high"] == [1.0, 7.0]


def test_missing_values_are_left_out_per_window_and_the_result_is_seeded():
    values = np.array([[1.0, np.nan, np.nan], [3.0, 4.0, np.nan], [5.0, 6.0, np.nan]])
    result = bootstrap_mean_interval(values, seed=3)
    assert result["videos"] == [3, 2, 0]
    assert result["mean"][:2] == [3.0, 5.0] and result["mean"][2] is None and result["low"][2] is None
    assert 1.0 <= result["low"][1] <= result["high"][1] <= 6.0
    assert bootstrap_mean_interval(values, seed=3) == result
    with pytest.raises(ValueError, match="videos, windows"):
        bootstrap_mean_interval(np.zeros(3))

"""Kernel distance (KVD; KID for images, Bińkowski et al. 2018): unbiased MMD² with a cubic kernel.

    k(x, y) = (γ xᵀy + c)^3,  γ = 1/d, c = 1
    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j)

Unlike the Fréchet distance it assumes no Gaussian and is unbiased, so it is ≈ 0 (and can be
slightly negative) for two samples of one distribution at any N.

Subsets: the LVDM evaluation (via TATS' `polynomial_mmd`) takes the estimator once over all
features; StyleGAN's KID averages it over 100 random subsets of at most 1,000 per side to bound
the m × n kernel matrices. The default here is TATS' (all features, exact and deterministic);
`subsets=` gives StyleGAN's, for feature sets too large for one n² kernel in memory.
"""

from __future__ import annotations

import numpy as np

DEGREE, COEF0 = 3, 1.0


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(m d), (n d) -> (m n): (xᵀy / d + 1)^3 in float64."""
    return (x @ y.T / x.shape[1] + COEF0) ** DEGREE


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² estimator above over all of `x` (m d) and `y` (n d)."""
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    *,
    subsets: int | None = None,
    subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """KVD between (m d) and (n d) features: all at once, or the mean over `subsets` random subsets.

    With `subsets`, each draws min(m, n, subset_size) rows per side without replacement from a
    generator seeded by `seed` (StyleGAN's KID), so the figure is reproducible.
    """
    a, b = (np.asarray(f, dtype=np.float64) for f in (features_a, features_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kernel_distance needs (m d) and (n d) features; got {a.shape} and {b.shape}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(
            f"kernel_distance needs at least 2 feature vectors per side; got {a.shape[0]}, {b.shape[0]}"
        )
    if subsets is None:
        return unbiased_mmd2(a, b)
    if subsets < 1 or subset_size < 2:
        raise ValueError(
            f"kernel_distance needs subsets >= 1 and subset_size >= 2; got {subsets}, {subset_size}"
        )
    rng = np.random.default_rng(seed)
    size = min(a.shape[0], b.shape[0], subset_size)
    estimates = [
        unbiased_mmd2(
            a[rng.choice(a.shape[0], size, replace=False)], b[rng.choice(b.shape[0], size, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(estimates))

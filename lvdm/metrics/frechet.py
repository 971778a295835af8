"""Fréchet distance between two Gaussians fitted to feature sets (the "F" of FID and FVD).

    d² = ‖μ_a − μ_b‖² + tr(Σ_a) + tr(Σ_b) − 2 tr((Σ_a Σ_b)^{1/2})

The reference implementations (TTUR's FID, StyleGAN-V and TATS FVD) take `scipy.linalg.sqrtm`
of the non-symmetric product Σ_a Σ_b and then discard "small" imaginary parts that appear from
round-off. Here the trace term is computed from a symmetric matrix instead: Σ_a Σ_b is similar
to S Σ_b S with S = Σ_a^{1/2} (S⁻¹ (S S Σ_b) S = S Σ_b S), so both have the same eigenvalues and

    tr((Σ_a Σ_b)^{1/2}) = Σ_i sqrt(λ_i(S Σ_b S)),

where S Σ_b S is symmetric positive semi-definite: `numpy.linalg.eigh` gives real eigenvalues,
no scipy is needed, and the same holds when Σ_a is singular (fewer clips than dimensions).
The imaginary-part check of the references becomes a check on negative eigenvalues: round-off
ones (a tiny fraction of the largest) are set to zero, as the references drop tiny imaginary
parts; a large one means an input is not a covariance matrix and raises, naming its size.

Everything is float64: FVD sums hundreds of eigenvalues that span many orders of magnitude.
"""

from __future__ import annotations

import warnings

import numpy as np

# Negative eigenvalues of S Σ_b S smaller than this fraction of the largest are round-off.
# float64 eigh is accurate to ~1e-16·‖M‖·d; d = 400 gives ~1e-13, so 1e-8 leaves a wide margin.
NEGATIVE_EIGENVALUE_TOLERANCE = 1e-8


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n d) features -> mean (d), covariance (d d), float64, unbiased (n − 1), as the references.

    Warns when n < d: the covariance then has rank at most n − 1 (singular), and FVD is dominated
    by the estimator's bias; the paper's N = 2,048 clips is what makes FVD16 comparable.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"gaussian_stats needs features of shape (n >= 2, d); got {features.shape}")
    n, d = features.shape
    if not np.isfinite(features).all():
        raise ValueError(f"features ({n}, {d}) contain NaN or inf; check the feature extractor's input")
    if n < d:
        warnings.warn(
            f"{n} feature vectors of dimension {d}: the covariance is singular (rank <= {n - 1}), "
            f"so the Fréchet distance is biased upwards and not comparable with published figures "
            f"(LVDM reports FVD on 2,048 clips); use at least {d} clips",
            stacklevel=2,
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b), in float64 (see module doc)."""
    mean_a, mean_b = (np.asarray(m, dtype=np.float64) for m in (mean_a, mean_b))
    cov_a, cov_b = (_checked_cov(c, name) for c, name in ((cov_a, "cov_a"), (cov_b, "cov_b")))
    d = mean_a.shape[0]
    if mean_a.shape != (d,) or mean_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ValueError(
            f"frechet_distance needs means (d) and covariances (d d) of one d; got means "
            f"{mean_a.shape}, {mean_b.shape} and covariances {cov_a.shape}, {cov_b.shape}"
        )
    _check_not_negative(np.linalg.eigvalsh(cov_b), "cov_b")
    sqrt_a = psd_sqrt(cov_a, "cov_a")
    product = sqrt_a @ cov_b @ sqrt_a
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    _check_not_negative(eigenvalues, "sqrt(cov_a) @ cov_b @ sqrt(cov_a)")
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = mean_a - mean_b
    distance = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    # Round-off can leave -1e-12 for identical inputs; a distance is never negative.
    return max(distance, 0.0)


def psd_sqrt(cov: np.ndarray, name: str = "cov") -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix; round-off negatives -> 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    _check_not_negative(eigenvalues, name)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def _check_not_negative(eigenvalues: np.ndarray, name: str) -> None:
    """Round-off negatives are fine (clipped later); a large one means `name` is not a covariance."""
    largest, smallest = max(float(eigenvalues.max()), 0.0), float(eigenvalues.min())
    if smallest < -NEGATIVE_EIGENVALUE_TOLERANCE * max(largest, 1e-300):
        raise ValueError(
            f"{name} has an eigenvalue of {smallest:.3e} (largest {largest:.3e}): it is not positive "
            "semi-definite, so it is not a covariance matrix. Pass covariances computed from features "
            "(gaussian_stats), not edited ones"
        )


def _checked_cov(cov: np.ndarray, name: str) -> np.ndarray:
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{name} must be a square (d d) covariance; got shape {cov.shape}")
    if not np.isfinite(cov).all():
        raise ValueError(f"{name} contains NaN or inf")
    scale = max(float(np.abs(cov).max()), 1e-300)
    asymmetry = float(np.abs(cov - cov.T).max())
    if asymmetry > 1e-8 * scale:
        raise ValueError(
            f"{name} is not symmetric (max |cov - cov.T| = {asymmetry:.3e}, max |cov| = {scale:.3e}); "
            "a covariance matrix must be"
        )
    return (cov + cov.T) / 2

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
from einops import reduce
from torch import nn

from lvdm.metrics.frechet import frechet_distance, gaussian_stats
from lvdm.metrics.fvd import (
    FEATURES,
    FeatureSet,
    NoClipsError,
    cached_feature_set,
    clip_windows,
    fvd_kvd,
    i3d_features,
    load_fvd_model,
    preprocess_for_i3d,
    real_floor,
    windowed_fvd,
)
from lvdm.metrics.kvd import kernel_distance, unbiased_mmd2

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, 2 * d))
    return a @ a.T / (2 * d)


# --- Fréchet distance against closed forms -------------------------------------------------------


def test_frechet_of_identical_stats_is_zero():
    rng = np.random.default_rng(0)
    mean, cov = rng.normal(size=8), random_cov(rng, 8)
    assert frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-9)


def test_frechet_of_a_mean_shift_is_its_squared_norm():
    rng = np.random.default_rng(1)
    mean, cov, shift = rng.normal(size=8), random_cov(rng, 8), rng.normal(size=8)
    assert frechet_distance(mean, cov, mean + shift, cov) == pytest.approx(shift @ shift, rel=1e-9)


def test_frechet_of_diagonal_covariances_has_the_closed_form():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mean_a - mean_b) ** 2)
    assert frechet_distance(mean_a, np.diag(a), mean_b, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_is_invariant_under_a_shared_rotation():
    rng = np.random.default_rng(3)
    mean_a, mean_b, cov_a, cov_b = (
        rng.normal(size=8),
        rng.normal(size=8),
        random_cov(rng, 8),
        random_cov(rng, 8),
    )
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    rotated = frechet_distance(q @ mean_a, q @ cov_a @ q.T, q @ mean_b, q @ cov_b @ q.T)
    assert rotated == pytest.approx(frechet_distance(mean_a, cov_a, mean_b, cov_b), rel=1e-9)


def _reference_trace_sqrt(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """tr sqrt(Σ_a Σ_b) from the eigenvalues of the *non-symmetric* product: independent of frechet.py."""
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b)
    return float(np.sqrt(np.clip(eigenvalues.real, 0, None)).sum())


def test_frechet_matches_independent_computations_on_random_features():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 20)), rng.normal(0.3, 1.2, size=(200, 20)) @ rng.normal(size=(20, 20))
    (mean_a, cov_a), (mean_b, cov_b) = gaussian_stats(x), gaussian_stats(y)
    ours = frechet_distance(mean_a, cov_a, mean_b, cov_b)
    base = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
    assert ours == pytest.approx(base - 2 * _reference_trace_sqrt(cov_a, cov_b), rel=1e-8)
    # scipy is not a dependency; where it happens to be installed, compare with the TTUR/TATS code path.
    linalg = pytest.importorskip("scipy.linalg")
    root = linalg.sqrtm(cov_a @ cov_b)
    assert ours == pytest.approx(base - 2 * np.trace(root).real, rel=1e-8)


def test_frechet_with_singular_covariances_matches_the_independent_computation():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(10, 30)), rng.normal(size=(12, 30)) + 0.5  # n < d: singular
    with pytest.warns(UserWarning, match="singular"):
        (mean_a, cov_a), (mean_b, cov_b) = gaussian_stats(x), gaussian_stats(y)
    base = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
    expected = base - 2 * _reference_trace_sqrt(cov_a, cov_b)
    assert frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(expected, rel=1e-6)


def test_frechet_refuses_a_non_covariance_naming_the_eigenvalue():
    cov = np.diag([1.0, -0.5])
    with pytest.raises(ValueError, match=r"cov_b has an eigenvalue of -5\.000e-01"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), cov)


def test_enough_features_fit_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaussian_stats(np.random.default_rng(0).normal(size=(20, 4)))


# --- KVD ---------------------------------------------------------------------------------------------


def test_kvd_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same = kernel_distance(x, y)
    shifted = kernel_distance(x, y + 0.5)
    assert abs(same) < 0.02 * shifted
    assert shifted > 0.1


def test_kvd_matches_a_naive_double_loop():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(7, 5)), rng.normal(1.0, 1.0, size=(9, 5))

    def k(a, b):
        return (a @ b / 5 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
    assert kernel_distance(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kvd_subsets_are_reproducible_and_close_to_the_full_estimate():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(300, 8)), rng.normal(0.5, 1.0, size=(300, 8))
    subsets = kernel_distance(x, y, subsets=20, subset_size=100, seed=3)
    assert subsets == kernel_distance(x, y, subsets=20, subset_size=100, seed=3)
    assert subsets == pytest.approx(unbiased_mmd2(x, y), rel=0.2)


# --- I3D preprocessing and features --------------------------------------------------------------------


def test_uint8_clips_become_224_pixel_frames_in_minus_one_to_one():
    video = torch.randint(0, 256, (2, 12, 64, 48, 3), dtype=torch.uint8)
    video[0, :, :, :, 0] = 0
    video[0, :, :, :, 1] = 255
    out = preprocess_for_i3d(video)
    assert out.shape == (2, 3, 12, 224, 224) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    # 0 -> -1, 255 -> 1 (up to bilinear round-off in float32)
    assert torch.allclose(out[0, 0], torch.tensor(-1.0), atol=1e-6)
    assert torch.allclose(out[0, 1], torch.tensor(1.0), atol=1e-6)


def test_float_clips_in_model_range_keep_their_values_at_224():
    video = torch.rand(1, 3, 16, 224, 224) * 2 - 1
    assert torch.equal(preprocess_for_i3d(video), video)
    assert preprocess_for_i3d(torch.zeros(1, 3, 9, 32, 32)).shape == (1, 3, 9, 224, 224)


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (torch.zeros(1, 16, 3, 32, 32, dtype=torch.uint8), r"\(b, t, h, w, 3\)"),
        (torch.zeros(1, 16, 32, 32, 3), r"float clips must be \(b, 3, t, h, w\)"),
        (torch.zeros(1, 3, 16, 32, 32, dtype=torch.int32), "torch.int32"),
        (torch.full((1, 3, 16, 32, 32), 255.0), r"values in \[255, 255\]"),
    ],
)
def test_preprocessing_refuses_a_wrong_layout(video, message):
    with pytest.raises(ValueError, match=message):
        preprocess_for_i3d(video)


class MeanColourI3D(nn.Module):
    """A stand-in I3D for plumbing tests: (b 3 t 224 224) -> (b 400), a fixed linear map of the
    per-frame mean colours (it sees time order and colour, costs nothing)."""

    def __init__(self, frames: int = 16, dim: int = 400):
        super().__init__()
        self.proj = nn.Linear(3 * frames, dim)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.proj(reduce(video, "b c t h w -> b (c t)", "mean"))


@pytest.fixture
def tiny_i3d() -> MeanColourI3D:
    torch.manual_seed(0)
    return MeanColourI3D().eval()


def test_features_are_float64_per_clip_and_independent_of_batching(tiny_i3d):
    clips = [np.random.default_rng(i).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8) for i in range(5)]
    one = i3d_features(tiny_i3d, clips, batch_size=1)
    three = i3d_features(tiny_i3d, iter(clips), batch_size=3)
    assert one.shape == (5, 400) and one.dtype == np.float64
    np.testing.assert_allclose(one, three, rtol=1e-5, atol=1e-5)
    # float (c t h w) clips in [-1, 1] give the same features as their uint8 frames
    as_float = [torch.from_numpy(c).permute(3, 0, 1, 2).float() / 127.5 - 1 for c in clips]
    np.testing.assert_allclose(i3d_features(tiny_i3d, as_float), one, rtol=1e-5, atol=1e-5)


def test_no_clips_is_an_error(tiny_i3d):
    with pytest.raises(NoClipsError):
        i3d_features(tiny_i3d, [])


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_i3d_is_called_with_the_community_flags(tmp_path):
    class CommunityI3D(nn.Module):  # the i3d_torchscript.pt call signature
        def forward(
            self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
        ) -> torch.Tensor:
            features = x.mean(dim=(1, 3, 4)).repeat(1, 25)  # (b t=16) -> (b 400)
            if rescale or resize or not return_features:
                return -features
            return features

    torch.jit.script(CommunityI3D()).save(str(tmp_path / "i3d_torchscript.pt"))
    model = load_fvd_model(tmp_path / "i3d_torchscript.pt", trust=True)
    clip = np.full((16, 8, 8, 3), 255, dtype=np.uint8)
    assert np.all(i3d_features(model, [clip]) == 1.0)


def test_a_torchscript_i3d_runs_no_code_unless_its_hash_is_pinned_or_trusted(tmp_path):
    """A TorchScript file is code; `torch.jit.load` on an unvetted one was the default (issue 19)."""
    from lvdm.metrics.fvd import UntrustedTorchScriptError

    file = tmp_path / "i3d_torchscript.pt"
    file.write_bytes(b"not even TorchScript: refused from its hash, before anything reads it")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    with pytest.raises(UntrustedTorchScriptError, match=f"sha256 {digest}.*is a TorchScript file"):
        load_fvd_model(file)
    with pytest.raises(UntrustedTorchScriptError, match="it was pinned to"):
        load_fvd_model(file, sha256="f" * 64, trust=True)  # a pin that fails is final
    for vetted in ({"sha256": digest.upper()}, {"trust": True}):  # now torch.jit.load reads it
        with pytest.raises(ValueError, match="is not a TorchScript file"):
            load_fvd_model(file, **vetted)


def test_the_community_file_is_pinned_by_its_published_git_blob_id(tmp_path, monkeypatch):
    """The community I3D's only published hash is its git blob id: a file with a pinned id loads
    without a flag; the id is the one `git hash-object` gives."""
    import subprocess

    from lvdm.metrics import fvd

    file = tmp_path / "i3d_torchscript.pt"
    file.write_bytes(b"stands in for the community file\n" * 1000)
    expected = subprocess.run(["git", "hash-object", str(file)], capture_output=True, text=True, check=True)
    assert fvd.git_blob_id(file) == expected.stdout.strip()
    assert all(len(blob) == 40 and int(blob, 16) >= 0 for blob in fvd.PINNED_TORCHSCRIPT_GIT_BLOBS)
    with pytest.raises(fvd.UntrustedTorchScriptError):
        load_fvd_model(file)
    monkeypatch.setattr(fvd, "PINNED_TORCHSCRIPT_GIT_BLOBS", frozenset({expected.stdout.strip()}))
    with pytest.raises(ValueError, match="is not a TorchScript file"):  # past the gate: jit.load read it
        load_fvd_model(file)


@pytest.mark.pretrained
def test_uint8_clip_features_are_the_reference_i3d_logits(pretrained_home, jax_reference):
    # The JAX reference saw these frames enlarged 7x by repetition: as uint8 at 224 px, preprocessing
    # must not resize, and the features must be the TF-Hub I3D's logits.
    clip = np.repeat(np.repeat(jax_reference["frames"], 7, axis=1), 7, axis=2)
    features = i3d_features(load_fvd_model(), [clip])
    assert np.abs(features[0] - jax_reference["i3d_logits"][0]).max() < 1e-4


# --- statistics, floor, windows -------------------------------------------------------------------------


def test_feature_set_round_trips_through_the_cache_under_its_key(tmp_path):
    features = np.random.default_rng(9).normal(size=(30, 6))
    saved = FeatureSet.of(features)
    path = saved.save(tmp_path, "shard-abc123.f16")
    with np.load(path, allow_pickle=False) as data:
        assert str(data["kind"]) == FEATURES
    loaded = FeatureSet.load(tmp_path, "shard-abc123.f16")
    assert loaded is not None
    for name in ("features", "mean", "cov"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(saved, name))
    assert FeatureSet.load(tmp_path, "other-key") is None
    with pytest.raises(ValueError, match="letters, digits"):
        saved.save(tmp_path, "../escape")


def test_cached_feature_set_computes_once_per_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.random.default_rng(len(calls)).normal(size=(10, 3))

    first = cached_feature_set(tmp_path, "k1", compute)
    again = cached_feature_set(tmp_path, "k1", compute)
    np.testing.assert_array_equal(first.features, again.features)
    cached_feature_set(tmp_path, "k2", compute)
    assert len(calls) == 2


def test_real_floor_compares_two_disjoint_halves():
    rng = np.random.default_rng(10)
    real = rng.normal(size=(200, 8))
    floor = real_floor(real)
    assert floor["clips"] == 100
    # one distribution on both sides: far below a real vs shifted comparison at the same N
    assert floor["fvd"] < 0.2 * fvd_kvd(real[:100], real[100:] + 1.0)["fvd"]
    assert real_floor(real, clips=50, seed=1)["clips"] == 50
    with pytest.raises(ValueError, match="2 x clips"):
        real_floor(real, clips=101)


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (15, []),
        (16, [(0, 16)]),
        (40, [(0, 16), (16, 32)]),
        (1024, [(16 * k, 16 * k + 16) for k in range(64)]),
    ],
)
def test_clip_windows_are_non_overlapping_and_drop_the_partial_tail(frames, expected):
    assert clip_windows(frames) == expected


def test_windowed_fvd_rises_where_the_videos_drift_and_streams_alike():
    torch.manual_seed(0)
    tiny_i3d = MeanColourI3D(dim=8).eval()  # 8-d features: cheap covariances
    rng = np.random.default_rng(11)
    videos = rng.integers(100, 156, (4, 50, 8, 8, 3), dtype=np.uint8)
    videos[:, 32:] = np.clip(videos[:, 32:].astype(int) + 80, 0, 255).astype(np.uint8)  # window 2 drifts
    real = FeatureSet.of(i3d_features(tiny_i3d, rng.integers(100, 156, (12, 16, 8, 8, 3), dtype=np.uint8)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 4 clips < 8 dimensions
        curve = windowed_fvd(tiny_i3d, videos, real)
        streamed = windowed_fvd(tiny_i3d, (videos[:, s:e] for s, e in clip_windows(50)), real)
    assert [(w["window"], w["start"], w["end"]) for w in curve] == [(0, 0, 16), (1, 16, 32), (2, 32, 48)]
    assert curve == streamed
    assert curve[2]["fvd"] > 10 * max(curve[0]["fvd"], curve[1]["fvd"])

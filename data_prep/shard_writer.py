"""WebDataset tar shards: written atomically, read back sample by sample.

A shard is a plain tar in the WebDataset layout: each sample is a run of consecutive members
`<key>.<ext>` sharing one key (`<key>.mp4` + `<key>.json` for video shards, `<key>.npy` +
`<key>.json` for latent shards). webdataset splits a member name at the *first* dot of its
base name, so a key with a dot would silently become a different key and extension; keys
with dots are refused here instead.

`webdataset.ShardWriter` and `TarWriter` on a final name write straight to that name, so a
crash leaves a truncated tar that looks like a finished shard to the next run. The writer
below writes to a hidden temporary name in the same folder (a fresh one, so never a planted
link) and renames it onto the final name only once the tar is complete (`os.replace` is
atomic within one file system), so a shard either exists whole or not at all.

Shards are read through `data_prep.storage` (pyarrow.fs) when given a URI (`s3://`, `gs://`),
so the same reader serves a laptop and a cluster with shared storage (DESIGN.md, "Storage").
Shards are written to a local path; a task publishes them to an object store whole
(`storage.staged_folder`).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from data_prep import storage

SampleValue = bytes | str | dict | np.ndarray


class AtomicShardWriter:
    """Write samples into a tar at a temporary name; `close()` renames it onto `path`.

    Use as a context manager: on a clean exit the shard appears at `path`; on an exception
    the temporary file is deleted and nothing appears.

        with AtomicShardWriter(out / "train-000000.tar") as shard:
            shard.write({"__key__": "v_0001", "mp4": mp4_bytes, "json": metadata})

    A sample is a dict with `__key__` (the WebDataset convention) and one entry per
    extension: bytes are stored as they are, str as UTF-8, dict as JSON, np.ndarray as
    `.npy` bytes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tmp_path: Path | None = None  # created on entry, `storage.temporary_sibling`
        self.count = 0
        self._keys: set[str] = set()
        self._file: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None

    def __enter__(self) -> AtomicShardWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file, self.tmp_path = storage.temporary_sibling(self.path)  # closed in close()/abort()
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)
        return self

    def write(self, sample: dict[str, SampleValue]) -> None:
        if self._tar is None:
            raise RuntimeError(f"AtomicShardWriter({self.path}) is not open; use it in a `with` block")
        key = _check_key(sample.get("__key__"), self.path)
        if key in self._keys:
            raise ValueError(f"{self.path}: key {key!r} written twice; keys must be unique within a shard")
        fields = {ext: value for ext, value in sample.items() if not ext.startswith("__")}
        if not fields:
            raise ValueError(f"{self.path}: sample {key!r} has no fields besides __key__")
        for ext, value in fields.items():
            _add_member(self._tar, f"{key}.{ext}", _to_bytes(value, key, ext))
        self._keys.add(key)
        self.count += 1

    def close(self) -> None:
        """Finish the tar, flush it to disk, then make it visible under its final name."""
        assert self._tar is not None and self._file is not None and self.tmp_path is not None
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._tar = self._file = None
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        """Drop the half-written tar; the final name is never touched."""
        for handle in (self._tar, self._file):
            if handle is not None:
                handle.close()
        self._tar = self._file = None
        if self.tmp_path is not None:
            self.tmp_path.unlink(missing_ok=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_shard(path: str | Path, samples: Iterable[dict[str, SampleValue]]) -> int:
    """Write all `samples` into one shard at `path` atomically; returns the sample count.

    If iterating `samples` raises (a producer crash), no file is left at `path` or at the
    temporary name, and the exception propagates.
    """
    with AtomicShardWriter(path) as shard:
        for sample in samples:
            shard.write(sample)
    return shard.count


def read_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield `(key, {ext: bytes})` for each sample of a shard, in the order stored.

    Members are grouped like webdataset groups them: consecutive members with the same key
    (the base name up to its first dot) form one sample.
    """
    key: str | None = None
    fields: dict[str, bytes] = {}
    with storage.open_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name.rsplit("/", 1)[-1]
            if "." not in name:
                raise ValueError(
                    f"{path}: tar member {member.name!r} has no extension; not a WebDataset shard"
                )
            member_key, ext = name.split(".", 1)
            if member_key != key:
                if key is not None:
                    yield key, fields
                key, fields = member_key, {}
            handle = tar.extractfile(member)
            assert handle is not None  # isfile() members always have data
            fields[ext] = handle.read()
    if key is not None:
        yield key, fields


def _check_key(key: object, path: Path) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"{path}: every sample needs a non-empty str '__key__'; got {key!r}")
    if "." in key or "/" in key:
        raise ValueError(
            f"{path}: sample key {key!r} contains '.' or '/'; webdataset splits a name at its first dot, "
            "so the key would be read back wrong. Replace dots with '_' (e.g. key.replace('.', '_'))."
        )
    return key


def _to_bytes(value: SampleValue, key: str, ext: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True).encode("utf-8")
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue()
    raise TypeError(
        f"sample {key!r} field {ext!r}: cannot store {type(value).__name__}; give bytes, str, dict or ndarray"
    )


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed mtime/owner so the same samples give byte-identical shards (stable cache keys, diffs).
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))

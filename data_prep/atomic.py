"""One writer per stage folder, and the leftovers of a killed writer.

The atomic writes themselves (temporary sibling + rename locally, one PUT on an object store)
are `data_prep.storage.write_bytes` / `write_json`.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from data_prep import storage

LOCK_FILE = ".writer.lock"


class FolderLockedError(RuntimeError):
    """Another live process holds a folder's writer lock; the message names it."""


class PlantedLockError(FolderLockedError):
    """The lock's name holds something lvdm did not make (a symbolic link, a hard link, a FIFO):
    taking it would write through to whatever it points at. A FolderLockedError, so the run
    stops the same way, naming the file."""


@contextmanager
def exclusive_folder(folder: storage.Location, owner: dict[str, Any]) -> Iterator[None]:
    """Hold `folder`'s writer lock for the block, or raise FolderLockedError naming its holder.

    Two runs writing one stage folder would each take the other's live temporaries for a killed
    run's leftovers and delete them. `flock` on a file inside the folder is released by the
    kernel when the holder exits, however it dies, so a lock is never stale; it also works on NFS
    (Linux maps it to an NFS lock). `owner` (pid, host, run id) is written into the lock file for
    the error the next process gets.

    An object store has no locks: for a URI folder the lock file is kept on this machine, keyed
    by the URI, which excludes two drivers on one host (where `lvdm run` and `lvdm submit`
    jobs run: the head node). Two drivers on different hosts sharing one bucket workdir are not
    excluded; do not point two clusters at one workdir.
    """
    path = _lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "{} (it is starting)"
            raise FolderLockedError(
                f"{folder} is being written by another run: {holder}. Wait for it to finish (or stop "
                f"that process); the lock in {path} is released the moment it exits"
            ) from None
        record = json.dumps({**owner, "pid": os.getpid(), "host": socket.gethostname()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    """Open (or create) the lock file itself, never what a name planted in a shared workdir points
    at: O_NOFOLLOW refuses a symbolic link, and fstat of the opened file refuses anything but a
    regular file with one name (a hard link to another file would be truncated below)."""
    fix = (
        f"lvdm did not make it and will not write through it. Remove it (rm {path}), check who can "
        f"write in {path.parent}, then rerun"
    )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PlantedLockError(f"{path} is a symbolic link, not a lock file: {fix}") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        kind = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a regular file"
        raise PlantedLockError(f"{path} is {kind}: {fix}")
    return fd


def _lock_path(folder: storage.Location) -> Path:
    if not storage.is_uri(folder):
        return storage.local(folder) / LOCK_FILE
    return storage.machine_folder("locks", "LVDM_LOCK_DIR", folder).with_suffix(".lock")


def remove_stale_temporaries(folder: storage.Location) -> list[PurePath]:
    """Delete the temporary files a killed process left behind (`.<name>.tmp[-suffix]`).

    Only a process that died mid-write leaves one (a live writer renames or removes its own),
    so a rerun clears them before it starts: nothing half-written stays in the folder. Call it
    only while holding the folder's `exclusive_folder` lock: a live writer's temporaries look
    the same. On an object store they are the hidden keys an upload killed before its move
    left (`storage.write_bytes`, `storage.upload`).
    """
    if storage.is_uri(folder):
        stale = [key for key in storage.walk_files(folder) if fnmatch.fnmatch(storage.name(key), ".*.tmp*")]
        for key in stale:
            storage.delete(key)
        return [PurePosixPath(key.split("://", 1)[1]) for key in stale]
    folder = storage.local(folder)
    stale = [p for p in folder.rglob(".*.tmp*") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale

"""Atomic file writes: write a temporary sibling, fsync, rename.

Readers (and a rerun after a crash) see either the old file or the whole new one, never a
truncated file that looks complete. Used for manifests, chunk records and indexes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
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


def write_json_atomic(path: Path, payload: Any) -> None:
    write_bytes_atomic(path, json.dumps(payload, indent=2, default=str).encode())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed process left behind (`.<name>.tmp[-pid]`).

    Only a process that died mid-write leaves one (a live writer renames or removes its own),
    so a rerun clears them before it starts: nothing half-written stays in the folder.
    """
    stale = [p for p in folder.rglob(".*.tmp*") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale

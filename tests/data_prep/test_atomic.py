"""The per-folder writer lock against a real second process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.atomic import LOCK_FILE, FolderLockedError, exclusive_folder, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys
from pathlib import Path
from data_prep.atomic import exclusive_folder
with exclusive_folder(Path(sys.argv[1]), {"run_id": "run-A", "stage": "shard"}):
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until the test closes stdin
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """A real process that holds `folder`'s writer lock until its stdin is closed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_second_process_is_refused_naming_the_holder_then_proceeds_after_it_exits(tmp_path):
    folder = tmp_path / "stages" / "shard-abc"
    holder = hold_lock(folder)
    live_temporary = folder / ".train-000000.tar.tmp-1234"  # the holder's half-written shard
    live_temporary.write_bytes(b"half")
    try:
        with pytest.raises(FolderLockedError) as info, exclusive_folder(folder, {"run_id": "run-B"}):
            remove_stale_temporaries(folder)
        message = str(info.value)
        assert str(folder) in message and "run-A" in message
        assert f'"pid": {holder.pid}' in message and socket.gethostname() in message
        assert live_temporary.exists(), "the live run's temporary was deleted"
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0

    with exclusive_folder(folder, {"run_id": "run-B"}):
        owner = json.loads((folder / LOCK_FILE).read_text())
        assert owner["run_id"] == "run-B" and owner["pid"] == os.getpid()
        assert remove_stale_temporaries(folder) == [live_temporary]


def test_lock_of_a_killed_holder_is_free_at_once(tmp_path):
    holder = hold_lock(tmp_path)
    holder.kill()
    holder.wait(timeout=30)
    with exclusive_folder(tmp_path, {"run_id": "next"}):
        pass
    assert (tmp_path / LOCK_FILE).read_text() == "", "a released lock names no holder"

"""No write follows a link planted in a shared workdir (issue 19, item 2).

Anyone who can write in a shared workdir could plant a symbolic link under the name a writer is
about to use; before, the stage lock (`O_CREAT`, then truncate) and the predictable temporaries
(`.<name>.tmp-<pid>`, `.<name>.tmp`) wrote through it, truncating a file outside the workdir.
Each test plants the link where the old code wrote and checks that the target is untouched.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from data_prep import storage
from data_prep.atomic import LOCK_FILE, PlantedLockError, exclusive_folder
from data_prep.encode import Mp4Writer, write_mp4
from data_prep.shard_writer import write_shard
from lvdm.metrics.fvd import FeatureSet

SECRET = b"a file outside the workdir that a run must never write"


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def test_a_lock_planted_as_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path, victim):
    folder = tmp_path / "w" / "stages" / "shard-abc"
    _plant(folder / LOCK_FILE, victim)
    with pytest.raises(PlantedLockError, match=f"{LOCK_FILE} is a symbolic link.*rm "):
        with exclusive_folder(folder, {"run_id": "r"}):
            pytest.fail("the block ran under a planted lock")
    assert victim.read_bytes() == SECRET


def test_a_lock_planted_as_a_hard_link_or_a_fifo_is_refused(tmp_path, victim):
    folder = tmp_path / "w"
    folder.mkdir()
    os.link(victim, folder / LOCK_FILE)
    with pytest.raises(PlantedLockError, match="hard link"), exclusive_folder(folder, {}):
        pass
    assert victim.read_bytes() == SECRET
    (folder / LOCK_FILE).unlink()
    os.mkfifo(folder / LOCK_FILE)
    with pytest.raises(PlantedLockError, match="not a regular file"), exclusive_folder(folder, {}):
        pass


def _old_temporaries(path: Path) -> list[Path]:
    """Every name the writers used to write before renaming."""
    return [path.with_name(f".{path.name}.tmp-{os.getpid()}"), path.with_name(f".{path.name}.tmp")]


def _write_feature_set(path: Path) -> None:
    FeatureSet.of(np.random.default_rng(0).normal(size=(4, 3))).save(path.parent, "k")


FRAMES = np.zeros((2, 16, 16, 3), dtype=np.uint8)


def _write_stream(path: Path) -> None:
    with Mp4Writer(path) as out:
        out.write(FRAMES)


WRITERS = {
    "storage.write_bytes": ("run.json", lambda p: storage.write_bytes(p, b"{}")),
    "write_shard": ("train-000000.tar", lambda p: write_shard(p, [{"__key__": "a", "json": {}}])),
    "write_mp4": ("video.mp4", lambda p: write_mp4(p, FRAMES)),
    "Mp4Writer": ("video.mp4", _write_stream),
    "FeatureSet.save": ("i3d-stats-k.npz", _write_feature_set),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_link_planted_at_a_temporary_name_is_never_written_through(writer, tmp_path, victim):
    name, write = WRITERS[writer]
    path = tmp_path / "w" / name
    for temporary in _old_temporaries(path):
        _plant(temporary, victim)
    write(path)
    assert victim.read_bytes() == SECRET
    assert path.is_file() and not path.is_symlink() and path.stat().st_size > 0
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask or writer == "FeatureSet.save"


def test_a_link_planted_at_the_final_name_is_replaced_not_followed(tmp_path, victim):
    path = tmp_path / "w" / "manifest.json"
    _plant(path, victim)
    storage.write_bytes(path, b"{}")
    assert victim.read_bytes() == SECRET and not path.is_symlink() and path.read_bytes() == b"{}"

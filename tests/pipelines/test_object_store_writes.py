"""An object-store write interrupted mid-upload leaves nothing at its key (issue 19, item 8).

Against the session's real moto S3 server. pyarrow's output stream has no abort, and leaving
its `with` block on an exception completes the upload: a SIGTERM (a KeyboardInterrupt here, as
`lvdm` maps it) during `storage.upload` once left 8 MiB of a 20 MiB file under the final key.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from data_prep import storage
from data_prep.atomic import remove_stale_temporaries
from stages.evaluate import real_shards_of
from tests.conftest import S3_BUCKET

MIB = 1 << 20


def _interrupted_upload(source, location: str, before_signal: int) -> None:
    """`storage.upload(source, location)` from a pipe that delivers `before_signal` bytes, then a
    real SIGINT to this (main) thread while the upload waits for more, as a `kill` would."""
    os.mkfifo(source)
    main = threading.get_ident()

    def feed() -> None:
        with open(source, "wb") as pipe:
            pipe.write(os.urandom(before_signal))
            pipe.flush()
            threading.Event().wait(0.5)  # the upload has read it all and waits on the pipe
            signal.pthread_kill(main, signal.SIGINT)
            threading.Event().wait(5)  # keep the pipe open: the upload must not see an end

    # Python's own SIGINT handler for the duration: an earlier test of the session (or a library
    # it imported) may have replaced it, and this test is about what an upload does when
    # interrupted, not about who handles the signal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        with pytest.raises(KeyboardInterrupt):
            storage.upload(source, location)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(f"SIGINT handler before this test: {previous!r}")


def test_an_upload_interrupted_midway_leaves_neither_a_partial_object_nor_a_temporary(s3, tmp_path):
    folder = f"s3://{S3_BUCKET}/interrupted"
    _interrupted_upload(tmp_path / "big.tar", f"{folder}/train-000000.tar", 8 * MIB)
    assert storage.listdir(folder) == [], "a partial object (or its temporary) was left"


def test_an_interrupted_rewrite_keeps_the_whole_previous_object(s3, tmp_path):
    key = f"s3://{S3_BUCKET}/rewrite/manifest.json"
    storage.write_bytes(key, b"the whole previous version")
    _interrupted_upload(tmp_path / "new.json", key, 6 * MIB)
    assert storage.read_bytes(key) == b"the whole previous version"
    assert storage.listdir(storage.parent(key)) == ["manifest.json"]


def test_a_killed_uploads_temporary_is_cleared_by_the_next_run(s3):
    folder = f"s3://{S3_BUCKET}/killed/stages/shard-abc"
    storage.write_bytes(f"{folder}/train-000000.tar", b"whole")
    storage.write_bytes(f"{folder}/.train-000001.tar.tmp-0a1b2c", b"left by a SIGKILL")
    assert [p.name for p in remove_stale_temporaries(folder)] == [".train-000001.tar.tmp-0a1b2c"]
    assert storage.listdir(folder) == ["train-000000.tar"]


def test_evaluate_reads_the_shards_its_manifest_lists_not_whatever_matches(s3):
    out_dir = f"s3://{S3_BUCKET}/listed/stages/shard-abc"
    for name in ("test-000000.tar", "test-000001.tar", "test-000002.tar"):  # the last one: a stray
        storage.write_bytes(f"{out_dir}/{name}", b"tar")
    shard = {"out_dir": out_dir, "outputs": {"shards": {"test": ["test-000000.tar", "test-000001.tar"]}}}
    assert real_shards_of(shard, "test") == [f"{out_dir}/test-000000.tar", f"{out_dir}/test-000001.tar"]

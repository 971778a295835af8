import io
import json

import numpy as np
import pytest
import webdataset as wds

from data_prep.encode import encode_mp4
from data_prep.shard_writer import AtomicShardWriter, read_shard, write_shard


def _sample(key: str, n: int = 4) -> dict:
    frames = np.full((n, 16, 16, 3), 40 * n, np.uint8)
    return {"__key__": key, "mp4": encode_mp4(frames), "json": {"key": key, "num_frames": n}}


def test_read_shard_round_trips_every_field_in_order(tmp_path):
    latent = np.arange(2 * 3 * 2 * 2, dtype=np.float16).reshape(2, 3, 2, 2)
    samples = [_sample("v_a", 4), _sample("v_b", 6), {"__key__": "v_c", "npy": latent, "txt": "a caption é"}]
    assert write_shard(tmp_path / "train-000000.tar", samples) == 3

    read = list(read_shard(tmp_path / "train-000000.tar"))

    assert [key for key, _ in read] == ["v_a", "v_b", "v_c"]
    assert read[0][1]["mp4"] == samples[0]["mp4"]
    assert json.loads(read[1][1]["json"]) == {"key": "v_b", "num_frames": 6}
    assert read[2][1]["txt"].decode("utf-8") == "a caption é"
    np.testing.assert_array_equal(np.load(io.BytesIO(read[2][1]["npy"])), latent)


def test_shard_is_readable_by_webdataset_itself(tmp_path):
    write_shard(tmp_path / "s.tar", [_sample("v_a"), _sample("v_b")])

    samples = list(wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False))

    assert [s["__key__"] for s in samples] == ["v_a", "v_b"]
    assert set(samples[0]) >= {"mp4", "json"}


def test_failure_mid_iteration_leaves_neither_shard_nor_temp_file(tmp_path):
    def crashing_samples():
        yield _sample("v_a")
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError, match="producer died"):
        write_shard(tmp_path / "train-000000.tar", crashing_samples())

    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_whole_shard(tmp_path):
    path = tmp_path / "train-000000.tar"
    write_shard(path, [_sample("v_a")])
    before = path.read_bytes()

    with pytest.raises(RuntimeError), AtomicShardWriter(path) as shard:
        shard.write(_sample("v_b"))
        raise RuntimeError("crash")

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_dotted_key_is_rejected_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"v_a\.b.*replace"):
        write_shard(tmp_path / "s.tar", [_sample("v_a.b")])
    assert list(tmp_path.iterdir()) == []


def test_duplicate_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="written twice"):
        write_shard(tmp_path / "s.tar", [_sample("v_a"), _sample("v_a")])


def test_same_samples_give_byte_identical_shards(tmp_path):
    samples = [_sample("v_a"), _sample("v_b")]
    write_shard(tmp_path / "one.tar", samples)
    write_shard(tmp_path / "two.tar", samples)
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


def test_read_shard_accepts_a_file_uri(tmp_path):
    write_shard(tmp_path / "s.tar", [_sample("v_a")])
    assert [key for key, _ in read_shard((tmp_path / "s.tar").as_uri())] == ["v_a"]

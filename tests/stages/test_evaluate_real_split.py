"""`evaluate` (FVD) and `evaluate_t2v` (text alignment) compare with the same real clips: the
shard stage's test split, its train split without one, chosen by one function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_prep.encode import encode_mp4
from data_prep.shard_writer import write_shard
from stages.evaluate import real_split_of
from stages.evaluate_t2v import real_clips


def _shard(folder: Path, name: str, caption: str) -> str:
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    write_shard(
        folder / name, [{"__key__": "v0", "mp4": encode_mp4(frames, fps=8), "json": {"caption": caption}}]
    )
    return name


def test_both_evaluations_take_the_test_split_else_the_train_split(tmp_path: Path) -> None:
    train = _shard(tmp_path, "train-000000.tar", "a red circle moving left")
    test = _shard(tmp_path, "test-000000.tar", "a blue square moving up")
    with_test = {"out_dir": str(tmp_path), "outputs": {"shards": {"train": [train], "test": [test]}}}
    without = {"out_dir": str(tmp_path), "outputs": {"shards": {"train": [train], "test": []}}}

    assert real_split_of(with_test) == ("test", [str(tmp_path / test)])
    assert [caption for _, caption in real_clips(with_test, 4)] == ["a blue square moving up"]
    assert real_split_of(without) == ("train", [str(tmp_path / train)])
    assert [caption for _, caption in real_clips(without, 4)] == ["a red circle moving left"]


def test_no_split_to_compare_with_is_an_error_naming_the_shard_folder(tmp_path: Path) -> None:
    empty = {"out_dir": str(tmp_path), "outputs": {"shards": {"test": []}}}
    for choose in (real_split_of, lambda shard: real_clips(shard, 4)):
        with pytest.raises(ValueError, match=f"shard stage in {tmp_path} lists no test or train shards"):
            choose(empty)

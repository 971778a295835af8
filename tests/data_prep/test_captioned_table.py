"""data_prep/sources/captioned_table.py: captioned video sets as CSV / JSONL / Parquet tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.encode import encode_mp4
from data_prep.sources import DATASETS, DatasetLayoutError, load_frames

FPS = 8.0
ROWS = [
    {"path": "clips/a.mp4", "caption": 'a red circle, moving "left"', "start": None, "end": None},
    {"path": "clips/b.mp4", "caption": "a blue square\nmoving down", "start": 0.5, "end": 1.5},
    {"path": "clips/b.mp4", "caption": "the same video, later", "start": 1.5, "end": 2.0},
    {"path": "clips/a.mp4", "caption": "", "start": None, "end": None},  # no caption: skipped
    {"path": "clips/never_downloaded.mp4", "caption": "gone", "start": None, "end": None},
    {"path": "../outside.mp4", "caption": "escapes the root", "start": None, "end": None},
    {"path": "clips/b.mp4", "caption": "backwards span", "start": 2.0, "end": 1.0},
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("captioned")
    (root / "clips").mkdir()
    for name in ("a", "b"):
        # Frame i is filled with the value 10 * i: a decoded frame says which one it is.
        frames = np.stack([np.full((16, 16, 3), 10 * i, np.uint8) for i in range(20)])
        (root / "clips" / f"{name}.mp4").write_bytes(encode_mp4(frames, fps=FPS))
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "caption", "start", "end"])
        writer.writeheader()
        writer.writerows(ROWS)
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), root / "train.parquet")
    return root


@pytest.mark.parametrize("table", ["train.csv", "train.jsonl", "train.parquet"])
def test_every_format_lists_the_captioned_clips_and_counts_the_rest(root: Path, table: str) -> None:
    found = DATASETS["captioned_table"](root, ["train"], tables={"train": table})
    captions = sorted(v.meta["caption"] for v in found.videos)
    expected = ['a red circle, moving "left"', "a blue square\nmoving down", "the same video, later"]
    assert captions == sorted(expected)
    assert len({v.key for v in found.videos}) == 3
    reasons = sorted(s.reason.split(":")[-1].strip() for s in found.skipped)
    assert len(found.skipped) == 4 and "no caption" in reasons
    assert any("no such video" in s.reason for s in found.skipped)
    assert any("leaves the dataset root" in s.reason for s in found.skipped)
    assert any("need 0 <= start < end" in s.reason for s in found.skipped)


def test_a_span_keeps_only_its_frames(root: Path) -> None:
    found = DATASETS["captioned_table"](root, ["train"], tables={"train": "train.csv"})
    clip = next(v for v in found.videos if v.meta["caption"].startswith("a blue square"))
    decoded = load_frames(clip)
    # 0.5-1.5 s at 8 fps: frames 4..11, whose values are 40..110.
    assert decoded.num_frames == 8 and len(decoded.frames) == 8
    assert abs(int(decoded.frames[0].mean()) - 40) <= 3 and abs(int(decoded.frames[-1].mean()) - 110) <= 3
    whole = next(v for v in found.videos if v.meta["caption"].startswith("a red circle"))
    assert len(load_frames(whole).frames) == 20


def test_missing_table_or_columns_is_a_layout_error(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="train.tsv.*must end in one of"):
        DATASETS["captioned_table"](root, ["train"], tables={"train": "train.tsv"})
    with pytest.raises(DatasetLayoutError, match="test.csv not found"):
        DATASETS["captioned_table"](root, ["test"], tables={"test": "test.csv"})
    (tmp_path / "t.csv").write_text("video,text\nx.mp4,hello\n")
    with pytest.raises(DatasetLayoutError, match=r"lack \['path', 'caption'\]"):
        DATASETS["captioned_table"](tmp_path, ["train"], tables={"train": "t.csv"})


def test_shard_stage_reads_the_table_named_in_the_pipeline(root: Path) -> None:
    from pipelines.config import validate
    from stages.shard import discover

    raw = {
        "name": "t",
        "stages": ["shard"],
        "data": {
            "dataset": "captioned_table",
            "root": str(root),
            "splits": ["train"],
            "captions_table": {"train": "train.jsonl"},
        },
    }
    found = discover(validate(raw, "test").data)
    assert len(found.videos) == 3 and len(found.skipped) == 4

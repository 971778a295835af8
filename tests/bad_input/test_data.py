"""Bad input, 2. the dataset: a missing root, an empty one, every kind of broken video."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bad_input.common import Seen, assert_names, run_lvdm, run_quietly, set_args
from tests.conftest import PIPELINES
from tests.fixtures import datasets as fx
from tests.fixtures import hostile

TAICHI = str(PIPELINES / "taichi.yaml")


def _taichi_run(root: Path, workdir: Path, mlflow_store: str) -> list[str]:
    """`lvdm run pipelines/taichi.yaml` at toy size, shard stage only."""
    sets = [f"data.root={root}", "stages=[shard]", "data.resolution=32", "data.frames=8", "data.stride=1"]
    sets += ["shard.videos_per_shard=2", mlflow_store]
    return ["run", TAICHI, "--workdir", str(workdir), *set_args(sets)]


def _png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(fx.moving_frames(1, 5)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


# Taichi's layout (train/, test/ of .mp4) holding one good video per split and, in train/,
# one file of each kind: (file name, bytes, what the skip reason says).
BROKEN_VIDEOS = {
    "zero-byte": ("zero.mp4", lambda: b"", "zero-byte file"),
    "truncated": ("cut.mp4", lambda: fx.truncated_mp4(fx.moving_frames(12, 3)), "cannot decode"),
    "garbage-bytes": ("noise.mp4", lambda: os.urandom(4096), "cannot decode"),
    "text-named-mp4": ("page.mp4", lambda: fx.NOT_A_VIDEO, "cannot decode"),
    "image-named-mp4": ("still.mp4", _png_bytes, "1 frames, shorter than one clip"),
    "shorter-than-min-frames": (
        "short.mp4",
        lambda: fx.encode_mp4(fx.moving_frames(3, 4), fps=25.0),
        "3 frames, shorter than one clip (8 frames = (data.frames - 1) * data.stride + 1)",
    ),
    # 25 KB that decode to 3.7 GB: skipped from its header, before a worker runs out of memory.
    "over-the-decode-budget": (
        "huge.mp4",
        hostile.long_hd_mp4,
        "600 frames of 1920x1080 = 1,244,160,000 pixels to decode, over the decode budget of 536,870,912 "
        "(data.max_decode_pixels); skipped unread",
    ),
}


# Not .mp4: Taichi's release layout holds .mp4 only, so these are not part of the dataset.
NOT_LISTED = {"notes.txt": b"my notes", "clip.avi": b"an .avi is not read from a Taichi split"}


@dataclass(frozen=True)
class BrokenRun:
    root: Path  # data.root
    seen: Seen
    stage: Path  # the shard stage's folder
    manifest: dict


@pytest.fixture(scope="module")
def broken_dataset_run(ray_cluster, tmp_path_factory, mlflow_store) -> BrokenRun:
    """One shard run over a Taichi folder of one good video per split and every kind of bad file."""
    root = tmp_path_factory.mktemp("taichi")
    for split, seed in (("train", 1), ("test", 2)):
        (root / split).mkdir()
        (root / split / f"good_{split}.mp4").write_bytes(fx.encode_mp4(fx.moving_frames(10, seed), fps=25.0))
    for name, make, _ in BROKEN_VIDEOS.values():
        (root / "train" / name).write_bytes(make())
    for name, data in NOT_LISTED.items():
        (root / "train" / name).write_bytes(data)
    workdir = tmp_path_factory.mktemp("broken-work")
    seen = run_quietly(_taichi_run(root, workdir, mlflow_store))
    assert seen.code == 0, seen.text[-3000:]
    [manifest] = (workdir / "stages").glob("shard-*/manifest.json")
    return BrokenRun(root, seen, manifest.parent, json.loads(manifest.read_text()))


@pytest.mark.parametrize("kind", list(BROKEN_VIDEOS))
def test_a_broken_video_is_skipped_and_listed_with_its_file_and_reason(broken_dataset_run, kind):
    run = broken_dataset_run
    name, make, reason = BROKEN_VIDEOS[kind]
    [skip] = [s for s in run.manifest["outputs"]["skipped"] if Path(s["path"]).name == name]
    assert_names(skip["reason"], [str(run.root / "train" / name), reason])
    assert (run.root / "train" / name).is_file(), "the source file is left alone"


def test_a_split_whose_every_video_is_broken_fails_naming_them_and_rereads_them_once_fixed(
    ray_cluster, tmp_path, mlflow_store, capsys
):
    root, workdir = tmp_path / "taichi", tmp_path / "w"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
    (root / "train" / "good_train.mp4").write_bytes(fx.encode_mp4(fx.moving_frames(10, 1), fps=25.0))
    (root / "test" / "cut.mp4").write_bytes(fx.truncated_mp4(fx.moving_frames(12, 3)))
    seen = run_lvdm(capsys, *_taichi_run(root, workdir, mlflow_store))
    assert seen.code == 1
    assert_names(seen.text, ["split(s) ['test']", "every video was skipped", "cut.mp4", "rerun"])
    assert not list(workdir.glob("stages/shard-*/manifest.json")), "no complete-looking stage"

    (root / "test" / "cut.mp4").write_bytes(fx.encode_mp4(fx.moving_frames(10, 2), fps=25.0))  # fixed
    seen = run_lvdm(capsys, *_taichi_run(root, workdir, mlflow_store))
    assert seen.code == 0, seen.text[-3000:]
    [manifest] = workdir.glob("stages/shard-*/manifest.json")
    assert json.loads(manifest.read_text())["outputs"]["counts"]["written_test"] == 1


def test_broken_videos_are_counted_and_every_good_video_is_kept(broken_dataset_run):
    import pyarrow.parquet as pq

    run = broken_dataset_run
    assert run.manifest["outputs"]["counts"] == {
        "found": 2 + len(BROKEN_VIDEOS),  # files that are not .mp4 are not part of a Taichi split
        "written": 2,
        "skipped": len(BROKEN_VIDEOS),
        "written_train": 1,
        "written_test": 1,
    }
    assert f"skipped {len(BROKEN_VIDEOS)} (reasons in manifest.json)" in run.seen.out
    index = pq.read_table(run.stage / "index.parquet").to_pydict()
    assert sorted(zip(index["split"], index["key"], strict=True)) == [
        ("test", "good_test"),
        ("train", "good_train"),
    ]
    assert all((run.stage / shard).is_file() for shard in index["shard"])
    assert {name: (run.root / "train" / name).read_bytes() for name in NOT_LISTED} == NOT_LISTED


def test_a_decompression_bomb_frame_is_skipped_naming_it(tmp_path):
    """A 138-byte PNG claiming 30000x30000 pixels in a Taichi png frame folder: PIL's
    DecompressionBombError (not an OSError) once escaped the reader and failed the chunk."""
    from data_prep.skip import SkipSample
    from data_prep.sources import DATASETS, load_frames

    for split in ("train", "test"):  # first-order-model's png folders keep the .mp4 suffix
        (tmp_path / split / f"{split}#0#3.mp4").mkdir(parents=True)
        for i in range(3):
            (tmp_path / split / f"{split}#0#3.mp4" / f"{i:07d}.png").write_bytes(_png_bytes())
    bomb = tmp_path / "train" / "train#0#3.mp4" / "0000001.png"
    bomb.write_bytes(hostile.bomb_png())
    found = DATASETS["taichi"](str(tmp_path), ["train", "test"], format="png")
    [video] = [v for v in found.videos if v.split == "train"]
    with pytest.raises(SkipSample) as info:
        load_frames(video)
    assert_names(info.value.reason, [str(bomb), "DecompressionBombError"])


@dataclass(frozen=True)
class DatasetCase:
    layout: Callable[[Path], Path]  # builds a folder under tmp_path, returns data.root
    names: list[str]


def _no_folder(tmp: Path) -> Path:
    return tmp / "not-downloaded"


def _empty_release(tmp: Path) -> Path:
    for split in ("train", "test"):
        (tmp / "taichi" / split).mkdir(parents=True)
    return tmp / "taichi"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            DatasetCase(_no_folder, ["not-downloaded not found", "train/ and test/", "Point `data.root`"]),
            id="dataset-root-missing",
        ),
        pytest.param(
            DatasetCase(
                _empty_release,
                [
                    "Taichi: no video for split 'train'",
                    ".mp4 videos",
                    "Point `data.root`",
                    "data.splits=[test]",
                ],
            ),
            id="dataset-empty",
        ),
    ],
)
def test_a_dataset_with_nothing_to_read_stops_before_any_work(
    case, ray_cluster, tmp_path, capsys, mlflow_store
):
    seen = run_lvdm(capsys, *_taichi_run(case.layout(tmp_path), tmp_path / "w", mlflow_store))
    assert seen.code == 1, seen.text
    assert_names(seen.err, ["stage 'shard' failed: DatasetLayoutError", *case.names])
    [stage] = (tmp_path / "w" / "stages").glob("shard-*")
    assert not list(stage.glob("*.tar")) and not (stage / "manifest.json").exists()

"""`lvdm run <dataset>.yaml --until shard` on a tiny copy of each real dataset layout."""

import json
from pathlib import Path

import pytest
import torch

from data_prep.index import read_index
from data_prep.loader import video_clip_loader
from pipelines.cli import main
from pipelines.run_record import RunRecord, latest_run
from tests.conftest import PIPELINES
from tests.fixtures.datasets import make_sky_timelapse, make_taichi, make_ucf101, make_webvid

FRAMES = 6  # clip length: the fixtures' short videos (3 frames) fall below it, good ones (>= 8) don't

BUILDERS = {
    "ucf101": make_ucf101,
    "sky_timelapse": make_sky_timelapse,
    "taichi": make_taichi,
    "taichi_png": lambda root: make_taichi(root, format="png"),
    "webvid": make_webvid,
}


def _shard(pipeline: str, root: Path, workdir: Path, *extra: str) -> dict:
    overrides = [
        "stages=[shard]",  # 16x16 clips of 6 frames suit no paper autoencoder: checked at load time
        f"data.root={root}",
        "data.resolution=16",
        f"data.frames={FRAMES}",
        "shard.videos_per_shard=2",
    ]
    argv = ["run", str(PIPELINES / f"{pipeline}.yaml"), "--workdir", str(workdir), "--until", "shard"]
    assert main(argv + [a for o in overrides + list(extra) for a in ("--set", o)]) == 0
    record = RunRecord.load(workdir.resolve(), latest_run(workdir.resolve()))
    out = Path(record.stages["shard"].output)
    return {"out": out, "manifest": json.loads((out / "manifest.json").read_text())}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_dataset_layout_shards_with_exact_counts(ray_cluster, tmp_path, name):
    spec = BUILDERS[name](tmp_path / "data")
    extra = ["data.taichi_format=png", "data.stride=1"] if name == "taichi_png" else ["data.stride=1"]
    result = _shard(name.removesuffix("_png"), spec.root, tmp_path / "work", *extra)
    counts, out = result["manifest"]["outputs"]["counts"], result["out"]

    good = {split: s.good for split, s in spec.splits.items()}
    bad = sum(len(s.short) + len(s.broken) + s.skipped_at_discovery for s in spec.splits.values())
    assert counts["written"] == sum(len(g) for g in good.values())
    assert counts["skipped"] == bad == len(result["manifest"]["outputs"]["skipped"])
    assert all(s["reason"] for s in result["manifest"]["outputs"]["skipped"])

    rows = read_index(out / "index.parquet").to_pylist()
    assert {(r["split"], r["key"]) for r in rows} == {(s, k) for s, keys in good.items() for k in keys}
    for row in rows:
        assert row["num_frames"] == good[row["split"]][row["key"]]
        if spec.labels:
            assert (
                row["label"] == spec.labels[row["key"]] and row["class_name"] == spec.class_names[row["key"]]
            )
        if spec.captions:
            assert row["caption"] == spec.captions[row["key"]]


def test_shards_round_trip_through_the_loader(ray_cluster, tmp_path):
    spec = make_ucf101(tmp_path / "data")
    result = _shard("ucf101", spec.root, tmp_path / "work")
    shards = [str(result["out"] / s) for s in result["manifest"]["outputs"]["shards"]["train"]]
    loader = video_clip_loader(shards, frames=FRAMES, stride=1, batch_size=2, batches_per_epoch=3, seed=0)
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert batch.shape == (2, 3, FRAMES, 16, 16) and batch.dtype == torch.float32
        assert batch.min() >= -1.0 and batch.max() <= 1.0 and batch.std() > 0.01


def test_missing_root_fails_before_any_work(ray_cluster, tmp_path, capsys):
    argv = ["run", str(PIPELINES / "ucf101.yaml"), "--workdir", str(tmp_path / "w")]
    code = main(argv + ["--set", f"data.root={tmp_path / 'nowhere'}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "data.root" in err
    assert not list((tmp_path / "w" / "stages").glob("*/*.tar"))

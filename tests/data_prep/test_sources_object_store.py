"""`data.root` on an object store: each release layout (tests/fixtures/datasets.py) is copied to
a real moto S3 server and must list and decode exactly as it does from the local folder.

The copy is `pyarrow.fs.copy_files`, which also writes the `folder/` marker object an empty
folder needs to exist on a store (as `aws s3api put-object --key folder/` or a console "create
folder" does), so the layouts' empty frame folders are there to be skipped on both sides.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from pyarrow import fs as pafs

from data_prep import storage
from data_prep.chunks import plan_chunks, process_chunk
from data_prep.skip import SkipSample
from data_prep.sources import DATASETS, DatasetLayoutError, Discovery, load_frames
from pipelines.config import load_pipeline
from tests.conftest import PIPELINES, S3_BUCKET
from tests.fixtures import datasets as fx


def upload_folder(folder: Path, uri: str) -> None:
    filesystem, path = storage.resolve(uri)
    pafs.copy_files(
        str(folder), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem
    )


def discover(spec: fx.FixtureSpec, root: str | Path) -> Discovery:
    return DATASETS[spec.dataset](root, ["train", "test"], **spec.options)


@pytest.fixture(scope="module")
def stored(s3, tmp_path_factory) -> dict[str, tuple[fx.FixtureSpec, str]]:
    """Every layout built locally and copied to s3://S3_BUCKET/sources/<layout>."""
    out = {}
    for name, make in fx.LAYOUTS.items():
        spec = make(tmp_path_factory.mktemp(name))
        uri = f"s3://{S3_BUCKET}/sources/{name}"
        upload_folder(spec.root, uri)
        out[name] = (spec, uri)
    return out


@pytest.fixture(params=sorted(fx.LAYOUTS))
def layout(request, stored) -> tuple[fx.FixtureSpec, str]:
    return stored[request.param]


def _on_store(text: str, spec: fx.FixtureSpec, uri: str) -> str:
    return text.replace(str(spec.root.resolve()), uri)


def test_a_stored_root_lists_what_the_local_root_lists(layout):
    spec, uri = layout
    local, remote = discover(spec, spec.root), discover(spec, uri + "/")  # a trailing slash is fine
    assert remote.videos, "every layout lists videos"
    assert [(v.key, v.split, v.kind, v.meta, _on_store(v.path, spec, uri)) for v in local.videos] == [
        (v.key, v.split, v.kind, v.meta, v.path) for v in remote.videos
    ]
    assert all(v.path.startswith(f"{uri}/") for v in remote.videos)
    assert [(_on_store(s.path, spec, uri), _on_store(s.reason, spec, uri)) for s in local.skipped] == [
        (s.path, s.reason) for s in remote.skipped
    ]
    assert len(remote.skipped) == sum(s.skipped_at_discovery for s in spec.splits.values())
    assert pickle.loads(pickle.dumps(remote)).videos == remote.videos  # plain data for Ray tasks


def test_load_frames_decodes_the_same_frames_from_the_store(layout):
    spec, uri = layout
    local = {v.key: v for v in discover(spec, spec.root).videos}
    remote = {v.key: v for v in discover(spec, uri).videos}
    key, num_frames = next(iter(spec.splits["train"].good.items()))
    here, there = load_frames(local[key]), load_frames(remote[key])
    assert there.frames.shape == (num_frames, fx.HEIGHT, fx.WIDTH, 3)
    np.testing.assert_array_equal(there.frames, here.frames)
    assert (there.fps, there.num_frames) == (here.fps, here.num_frames)
    picked = load_frames(remote[key], indices=[0, num_frames - 1])
    np.testing.assert_array_equal(picked.frames, here.frames[[0, num_frames - 1]])


def test_a_broken_stored_video_is_skipped_naming_its_uri(layout):
    spec, uri = layout
    remote = {v.key: v for v in discover(spec, uri).videos}
    for key in spec.splits["train"].broken:
        with pytest.raises(SkipSample) as caught:
            load_frames(remote[key])
        assert uri in caught.value.reason, caught.value.reason


def test_a_shard_chunk_from_the_store_matches_the_one_from_the_local_root(stored, tmp_path):
    """What the shard stage's Ray task does with the listed videos: same rows, same skips."""
    spec, uri = stored["webvid"]
    records = {}
    for side, root in (("local", spec.root), ("store", uri)):
        chunk = plan_chunks(discover(spec, root).videos, videos_per_shard=100)[1]  # train: good + bad
        records[side] = process_chunk(chunk, tmp_path / side, resolution=16, min_frames=8, crf=30)
    local, remote = records["local"], records["store"]
    assert remote["rows"] and remote["skipped"]
    assert [_on_store(json.dumps(row), spec, uri) for row in local["rows"]] == [
        json.dumps(row) for row in remote["rows"]
    ]
    assert [(s["key"], _on_store(s["path"], spec, uri)) for s in local["skipped"]] == [
        (s["key"], s["path"]) for s in remote["skipped"]
    ]
    assert all(uri in s["reason"] for s in remote["skipped"])


def test_a_stored_video_deleted_after_discovery_is_skipped(s3, tmp_path):
    spec = fx.make_taichi(tmp_path, "mp4")
    uri = f"s3://{S3_BUCKET}/sources-deleted/taichi"
    upload_folder(spec.root, uri)
    video = discover(spec, uri).videos[0]
    storage.delete(video.path)
    with pytest.raises(SkipSample, match="no longer exists"):
        load_frames(video)


@pytest.mark.parametrize("dataset", ["ucf101", "sky_timelapse", "taichi", "webvid"])
def test_a_missing_prefix_or_bucket_names_the_uri_and_the_fix(s3, dataset):
    missing = f"s3://{S3_BUCKET}/not-uploaded/{dataset}"
    with pytest.raises(DatasetLayoutError) as caught:
        DATASETS[dataset](missing, ["train"])
    message = str(caught.value)
    assert missing in message and "nothing is stored under that prefix" in message
    assert "data.root" in message and s3["AWS_ENDPOINT_URL"] in message

    with pytest.raises(DatasetLayoutError, match=r"bucket s3://no-such-bucket does not exist.*data\.root"):
        DATASETS[dataset]("s3://no-such-bucket/ucf101", ["train"])


def test_a_missing_split_folder_on_the_store_is_the_same_layout_error(stored):
    spec, _ = stored["sky_timelapse"]
    uri = f"s3://{S3_BUCKET}/sources-train-only/sky"
    upload_folder(spec.root / "sky_train", f"{uri}/sky_train")
    assert DATASETS["sky_timelapse"](uri, ["train"]).videos
    with pytest.raises(DatasetLayoutError, match=rf"{uri}/sky_test not found.*data\.root"):
        DATASETS["sky_timelapse"](uri, ["train", "test"])


def test_pipeline_config_keeps_a_uri_root_as_written():
    uri = f"s3://{S3_BUCKET}/sources/ucf101"
    config = load_pipeline(PIPELINES / "ucf101.yaml", [f"data.root={uri}/"])
    assert config.data.root == uri
    local = load_pipeline(PIPELINES / "ucf101.yaml", ["data.root=/data/ucf101/"])
    assert local.data.root == "/data/ucf101"  # spelled as before, so cache keys do not move

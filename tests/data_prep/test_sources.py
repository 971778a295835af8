"""Dataset sources against tiny copies of each release layout (tests/fixtures/datasets.py)."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.skip import SkipSample
from data_prep.sources import (
    DATASETS,
    DatasetLayoutError,
    SourceVideo,
    load_frames,
    make_key,
    sky_timelapse,
    taichi,
    ucf101,
    webvid,
)
from tests.fixtures import datasets as fx

SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.fixture(scope="module", params=sorted(fx.LAYOUTS))
def layout(request, tmp_path_factory) -> fx.FixtureSpec:
    return fx.LAYOUTS[request.param](tmp_path_factory.mktemp(request.param))


def discover(spec: fx.FixtureSpec, splits=("train", "test")):
    return DATASETS[spec.dataset](spec.root, list(splits), **spec.options)


def by_key(videos: list[SourceVideo]) -> dict[str, SourceVideo]:
    return {v.key: v for v in videos}


def test_registry_names_the_six_datasets():
    assert sorted(DATASETS) == ["captioned_table", "sky_timelapse", "synthetic", "taichi", "ucf101", "webvid"]


def test_discovery_lists_exactly_the_expected_videos_per_split(layout):
    found = discover(layout)
    for split, expected in layout.splits.items():
        keys = {v.key for v in found.videos if v.split == split}
        assert keys == set(expected.good) | set(expected.short) | set(expected.broken), split
    assert len(found.skipped) == sum(s.skipped_at_discovery for s in layout.splits.values())
    assert all(s.reason for s in found.skipped)


def test_one_split_only_lists_that_split(layout):
    found = discover(layout, splits=["test"])
    assert {v.split for v in found.videos} == {"test"}
    assert len(found.videos) == layout.splits["test"].discovered
    assert len(found.skipped) == layout.splits["test"].skipped_at_discovery


def test_keys_are_webdataset_safe_unique_sorted_and_deterministic(layout):
    first, second = discover(layout), discover(layout)
    keys = [v.key for v in first.videos]
    assert all(SAFE_KEY.match(k) for k in keys), keys
    assert len(set(keys)) == len(keys)
    assert [(v.split, v.key) for v in first.videos] == sorted((v.split, v.key) for v in first.videos)
    assert first.videos == second.videos


def test_videos_are_plain_picklable_data_with_absolute_paths(layout):
    found = discover(layout)
    assert pickle.loads(pickle.dumps(found)).videos == found.videos
    for video in found.videos:
        assert Path(video.path).is_absolute() and Path(video.path).exists()
        assert json.loads(json.dumps(video.meta)) == video.meta


def test_load_frames_reads_good_and_short_videos_with_their_frame_counts(layout):
    videos = by_key(discover(layout).videos)
    for expected in layout.splits.values():
        for key, num_frames in {**expected.good, **expected.short}.items():
            decoded = load_frames(videos[key])
            assert decoded.frames.shape == (num_frames, fx.HEIGHT, fx.WIDTH, 3), key
            assert decoded.frames.dtype == np.uint8
            assert decoded.num_frames == num_frames and decoded.fps > 0
            assert decoded.frames.std(axis=0).max() > 20, f"{key}: frames should move"


def test_load_frames_raises_skip_sample_naming_the_bad_file(layout):
    videos = by_key(discover(layout).videos)
    broken = [k for s in layout.splits.values() for k in s.broken]
    assert broken, "every fixture layout has decode-time bad files"
    for key in broken:
        with pytest.raises(SkipSample) as caught:
            load_frames(videos[key])
        assert Path(videos[key].path).name in caught.value.reason


def test_load_frames_with_indices_returns_those_frames(layout):
    videos = by_key(discover(layout).videos)
    key, num_frames = next(iter(layout.splits["train"].good.items()))
    full = load_frames(videos[key]).frames
    picked = load_frames(videos[key], indices=[0, num_frames - 1])
    assert picked.num_frames == num_frames
    np.testing.assert_array_equal(picked.frames, full[[0, num_frames - 1]])
    with pytest.raises(SkipSample, match="outside"):
        load_frames(videos[key], indices=[num_frames])


def test_load_frames_of_a_file_deleted_after_discovery_is_skipped(tmp_path):
    spec = fx.make_taichi(tmp_path, "mp4")
    video = discover(spec).videos[0]
    Path(video.path).unlink()
    with pytest.raises(SkipSample, match="no longer exists"):
        load_frames(video)


def test_unknown_split_is_refused(layout):
    with pytest.raises(ValueError, match="unknown splits"):
        discover(layout, splits=["val"])


@pytest.mark.parametrize("dataset", ["ucf101", "sky_timelapse", "taichi", "webvid"])
def test_missing_root_is_a_layout_error_that_names_path_and_config_key(tmp_path, dataset):
    missing = tmp_path / "not-downloaded"
    with pytest.raises(DatasetLayoutError) as caught:
        DATASETS[dataset](missing, ["train"])
    assert str(missing) in str(caught.value) and "data.root" in str(caught.value)
    with pytest.raises(DatasetLayoutError, match=r"data\.root"):
        DATASETS[dataset](None, ["train"])


# --- UCF-101 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> fx.FixtureSpec:
    return fx.make_ucf101(tmp_path_factory.mktemp("ucf"))


def test_ucf_labels_are_zero_based_from_class_index_in_both_splits(ucf):
    videos = discover(ucf).videos
    assert {v.key: v.meta["label"] for v in videos} == ucf.labels
    assert {v.key: v.meta["class_name"] for v in videos} == ucf.class_names
    train_labels = {v.meta["class_name"]: v.meta["label"] for v in videos if v.split == "train"}
    test_labels = {v.meta["class_name"]: v.meta["label"] for v in videos if v.split == "test"}
    assert train_labels == test_labels == {"ApplyEyeMakeup": 0, "Basketball": 1, "HandstandPushups": 2}


def test_ucf_crlf_list_files_leave_no_carriage_returns(ucf):
    assert b"\r\n" in (ucf.root / "ucfTrainTestlist" / "trainlist01.txt").read_bytes()
    for video in discover(ucf).videos:
        assert "\r" not in video.path and "\r" not in video.meta["class_name"]
    assert ucf101.read_class_index(ucf.root / "ucfTrainTestlist" / "classInd.txt")["HandstandPushups"] == 2


def test_ucf_skips_missing_and_malformed_lines_with_reasons(ucf):
    skipped = discover(ucf).skipped
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert "missing" in reasons["v_ApplyEyeMakeup_g11_c01.avi"]
    assert "trainlist01.txt" in reasons["v_ApplyEyeMakeup_g11_c01.avi"]
    assert "missing" in reasons["v_Basketball_g02_c01.avi"]
    assert "malformed" in reasons["trainlist01.txt:9"]


def test_ucf_ignores_videos_in_no_split_file(ucf):
    assert (ucf.root / "UCF-101" / "Basketball" / "v_Basketball_g25_c07.avi").is_file()
    assert "v_Basketball_g25_c07" not in {v.key for v in discover(ucf).videos}


def test_ucf_missing_split_file_is_a_layout_error_before_any_work(ucf):
    with pytest.raises(DatasetLayoutError, match=r"trainlist02\.txt.*data\.root"):
        ucf101.discover(ucf.root, ["train"], split_number=2)
    with pytest.raises(ValueError, match="1, 2 or 3"):
        ucf101.discover(ucf.root, ["train"], split_number=4)


def test_ucf_missing_class_index_or_video_folder_is_a_layout_error(tmp_path):
    spec = fx.make_ucf101(tmp_path)
    (spec.root / "ucfTrainTestlist" / "classInd.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"classInd\.txt"):
        ucf101.discover(spec.root, ["train"])
    shutil.rmtree(spec.root / "UCF-101")
    with pytest.raises(DatasetLayoutError, match="UCF-101"):
        ucf101.discover(spec.root, ["train"])


def test_ucf_label_that_disagrees_with_class_index_is_skipped(tmp_path):
    spec = fx.make_ucf101(tmp_path)
    list_file = spec.root / "ucfTrainTestlist" / "trainlist01.txt"
    list_file.write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 3\r\nNoSuchClass/v_x.avi 1\r\n")
    found = ucf101.discover(spec.root, ["train"])
    assert found.videos == []
    assert [("disagrees" in s.reason, "not in classInd" in s.reason) for s in found.skipped] == [
        (True, False),
        (False, True),
    ]


# --- Sky Time-lapse -------------------------------------------------------------------


def test_sky_records_the_assumed_fps_and_uses_it(tmp_path):
    spec = fx.make_sky_timelapse(tmp_path)
    video = sky_timelapse.discover(spec.root, ["train"], fps=30.0).videos[0]
    assert video.kind == "frames" and video.meta["fps"] == 30.0
    assert video.meta["video_id"] == "07U1fSrk9oI" and video.meta["num_frames"] == 12
    assert load_frames(video).fps == 30.0


def test_sky_empty_clip_folder_is_skipped_at_discovery(tmp_path):
    spec = fx.make_sky_timelapse(tmp_path)
    skipped = sky_timelapse.discover(spec.root, ["train", "test"]).skipped
    assert sorted(Path(s.path).name for s in skipped) == ["-DYfg0UQHMs_2", "0BFHplsh9cA_3"]
    assert all("empty" in s.reason for s in skipped)


def test_frame_folders_are_read_in_numeric_not_lexical_order(tmp_path):
    clip = tmp_path / "sky_train" / "vid" / "vid_1"
    clip.mkdir(parents=True)
    for i in range(12):  # frame_10 sorts before frame_2 lexically
        Image.fromarray(np.full((4, 4, 3), i * 20, np.uint8)).save(clip / f"frame_{i}.png")
    video = sky_timelapse.discover(tmp_path, ["train"]).videos[0]
    assert video.meta["num_frames"] == 12
    np.testing.assert_array_equal(load_frames(video).frames[:, 0, 0, 0], np.arange(12) * 20)


def test_frame_folder_with_mixed_frame_sizes_is_skipped(tmp_path):
    clip = tmp_path / "sky_train" / "vid" / "vid_1"
    clip.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(clip / "f_0.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(clip / "f_1.png")
    with pytest.raises(SkipSample, match="differ in size"):
        load_frames(sky_timelapse.discover(tmp_path, ["train"]).videos[0])


def test_sky_missing_split_folder_is_a_layout_error(tmp_path):
    (tmp_path / "sky_train").mkdir()
    sky_timelapse.discover(tmp_path, ["train"])
    with pytest.raises(DatasetLayoutError, match="sky_test"):
        sky_timelapse.discover(tmp_path, ["train", "test"])


# --- Taichi ---------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["mp4", "png"])
def test_taichi_keys_drop_the_hash_signs_and_meta_keeps_the_name(tmp_path, format):
    fx.make_taichi(tmp_path, format)
    video = by_key(taichi.discover(tmp_path, ["train"], format=format).videos)[
        make_key("aXfNz0Q3Ujc#000113#000400")
    ]
    assert "#" not in video.key and video.key.startswith("aXfNz0Q3Ujc_000113_000400-")
    assert video.meta["video_id"] == "aXfNz0Q3Ujc"
    assert (video.meta["start"], video.meta["end"]) == (113, 400)
    assert video.kind == ("file" if format == "mp4" else "frames")


@pytest.mark.parametrize("written, asked", [("mp4", "png"), ("png", "mp4")])
def test_taichi_read_in_the_wrong_format_says_which_format_to_set(tmp_path, written, asked):
    fx.make_taichi(tmp_path, written)
    with pytest.raises(DatasetLayoutError, match=f"format: {written}"):
        taichi.discover(tmp_path, ["train"], format=asked)
    with pytest.raises(ValueError, match="format"):
        taichi.discover(tmp_path, ["train"], format="gif")


# --- WebVid ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> fx.FixtureSpec:
    return fx.make_webvid(tmp_path_factory.mktemp("webvid"))


def test_webvid_keeps_captions_with_commas_quotes_and_newlines(web):
    videos = discover(web).videos
    assert {v.key: v.meta["caption"] for v in videos} == web.captions
    assert (
        by_key(videos)["1066674784"].meta["caption"]
        == 'Aerial view of a river, "winding" through green hills'
    )
    assert by_key(videos)["1066674784"].meta["page_dir"] == "000001_000050"


def test_webvid_skips_malformed_and_undownloaded_rows_with_reasons(web):
    skipped = discover(web).skipped
    reasons = sorted(s.reason.split(":")[0] if "malformed" in s.reason else "not downloaded" for s in skipped)
    assert reasons == ["malformed CSV row", "not downloaded", "not downloaded"]
    assert any(s.path.endswith("9999999.mp4") and "no downloaded video" in s.reason for s in skipped)


def test_webvid_missing_csv_or_bad_header_is_a_layout_error(tmp_path):
    spec = fx.make_webvid(tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"results_10M_train\.csv.*data\.root"):
        webvid.discover(spec.root, ["train"], csv_files={"train": "results_10M_train.csv"})
    (spec.root / "bad.csv").write_text("id,url\n1,x\n")
    with pytest.raises(DatasetLayoutError, match="lacks columns"):
        webvid.discover(spec.root, ["train"], csv_files={"train": "bad.csv"})
    with pytest.raises(ValueError, match="no entry for splits"):
        webvid.discover(spec.root, ["train", "test"], csv_files={"train": "results_2M_train.csv"})


def test_same_video_in_two_splits_is_kept_once_and_counted(tmp_path):
    spec = fx.make_webvid(tmp_path)
    csv_files = {"train": "results_2M_train.csv", "test": "results_2M_train.csv"}
    found = webvid.discover(spec.root, ["train", "test"], csv_files=csv_files)
    assert {v.split for v in found.videos} == {"test"}  # (split, key) order: test sorts first
    assert sum("duplicate key" in s.reason for s in found.skipped) == spec.splits["train"].discovered


# --- keys -----------------------------------------------------------------------------


def test_make_key_keeps_safe_names_and_decollides_sanitised_ones():
    assert make_key("v_ApplyEyeMakeup_g08_c01") == "v_ApplyEyeMakeup_g08_c01"
    assert make_key("-DYfg0UQHMs_1") == "-DYfg0UQHMs_1"
    sanitised = [make_key(n) for n in ("a#1", "a.1", "a 1", "a_1")]
    assert len(set(sanitised)) == 4 and all(SAFE_KEY.match(k) for k in sanitised)
    assert make_key("clip.v2.final") == make_key("clip.v2.final") and "." not in make_key("clip.v2.final")


def test_webvid_row_whose_page_dir_was_never_downloaded_is_skipped(tmp_path):
    spec = fx.make_webvid(tmp_path)
    with (spec.root / "results_2M_val.csv").open("a", encoding="utf-8") as handle:
        handle.write('55555,https://x/55555.mp4,PT00H00M05S,999999_999999,"A page never fetched"\r\n')
    found = webvid.discover(spec.root, ["test"], csv_files={"test": "results_2M_val.csv"})
    assert len(found.videos) == spec.splits["test"].discovered
    assert any(s.path.endswith("999999_999999/55555.mp4") for s in found.skipped)

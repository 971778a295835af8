"""Hostile or oversized dataset files are counted skips, not a dead worker (issue 19, item 6)."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from data_prep.decode import DecodeBudget, decode_video
from data_prep.encode import encode_mp4
from data_prep.skip import SkipSample
from data_prep.sources import SourceVideo, load_frames
from tests.fixtures.hostile import bomb_png, long_hd_mp4


def test_a_small_file_of_600_hd_frames_is_skipped_from_its_header_before_decoding(tmp_path):
    path = tmp_path / "huge.mp4"
    path.write_bytes(long_hd_mp4())  # 25 KB, 3.7 GB decoded
    started = time.perf_counter()
    with pytest.raises(SkipSample) as info:
        decode_video(path, budget=DecodeBudget())
    assert time.perf_counter() - started < 2.0, "it was decoded"
    assert str(path) in info.value.reason
    assert "600 frames of 1920x1080 = 1,244,160,000 pixels" in info.value.reason
    assert "data.max_decode_pixels" in info.value.reason


def test_a_header_without_a_frame_count_is_caught_while_decoding():
    raw = long_hd_mp4(frames=40, width=640, height=480, container="h264")  # no count in the header
    with pytest.raises(SkipSample, match=r"over the decode budget of 3,000,000"):
        decode_video(raw, budget=DecodeBudget(pixels=3_000_000), backend="pyav")


def test_a_file_over_the_stored_size_budget_is_skipped_unread(tmp_path):
    path = tmp_path / "big.mp4"
    path.write_bytes(encode_mp4(np.zeros((2, 16, 16, 3), np.uint8)) + bytes(3 << 20))
    with pytest.raises(
        SkipSample, match=r"3 MiB stored, over the decode budget of 2 MiB \(data.max_file_mib\)"
    ):
        decode_video(path, budget=DecodeBudget(file_bytes=2 << 20))


def test_only_the_frames_a_clip_needs_are_held():
    data = long_hd_mp4(frames=60)  # 373 MB as RGB
    tracemalloc.start()
    try:
        decoded = decode_video(data, indices=[3, 7], backend="pyav")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded.frames.shape == (2, 1080, 1920, 3) and decoded.num_frames == 60
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB: every frame was kept"


def test_a_within_budget_video_decodes_as_before():
    frames = np.full((8, 32, 32, 3), 100, np.uint8)
    decoded = decode_video(encode_mp4(frames), budget=DecodeBudget(pixels=8 * 32 * 32))
    assert decoded.frames.shape == (8, 32, 32, 3)


def _frame_folder(tmp_path, images: dict[str, bytes]) -> SourceVideo:
    folder = tmp_path / "video"
    folder.mkdir()
    for name, data in images.items():
        (folder / name).write_bytes(data)
    return SourceVideo("video", "train", str(folder), "frames", {"fps": 25.0})


def _png(side: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_decompression_bomb_frame_is_a_skip_naming_it(tmp_path):
    video = _frame_folder(tmp_path, {"f_1.png": _png(16), "f_2.png": bomb_png()})
    with pytest.raises(SkipSample) as info:
        load_frames(video)
    assert "f_2.png: broken image (DecompressionBombError" in info.value.reason


def test_frames_over_their_share_of_the_budget_are_skipped_from_the_header(tmp_path):
    video = _frame_folder(tmp_path, {f"f_{i}.png": _png(64) for i in range(4)})
    assert load_frames(video, budget=DecodeBudget(pixels=4 * 64 * 64)).frames.shape == (4, 64, 64, 3)
    with pytest.raises(SkipSample, match=r"4 frames of 64x64 = 16,384 pixels to decode, over"):
        load_frames(video, budget=DecodeBudget(pixels=4 * 64 * 64 - 1))

"""Hostile or oversized dataset files are counted skips, not a dead worker (issue 19, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep.decode import DecodeBudget, decode_video
from data_prep.encode import encode_mp4
from data_prep.skip import SkipSample
from data_prep.sources import SourceVideo, load_frames
from tests.fixtures.hostile import bomb_png, long_hd_mp4

REPO = Path(__file__).resolve().parents[2]


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
        decode_video(raw, budget=DecodeBudget(pixels=3_000_000), backend="pyav")  # decord reads no raw h264


def test_a_file_over_the_stored_size_budget_is_skipped_unread(tmp_path):
    path = tmp_path / "big.mp4"
    path.write_bytes(encode_mp4(np.zeros((2, 16, 16, 3), np.uint8)) + bytes(3 << 20))
    with pytest.raises(
        SkipSample, match=r"3 MiB stored, over the decode budget of 2 MiB \(data.max_file_mib\)"
    ):
        decode_video(path, budget=DecodeBudget(file_bytes=2 << 20))


# In a fresh process: PyAV's frames live in buffers tracemalloc does not see, so the peak
# resident size is the honest measure, and the test process's own peak would hide this one's.
HELD = """
from data_prep.decode import decode_video
from tests.fixtures.hostile import long_hd_mp4

def peak_kib():  # this process's own high-water mark (ru_maxrss would start at the parent's)
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])

data = long_hd_mp4(frames=60)  # 373 MB as RGB
before = peak_kib()
decoded = decode_video(data, indices=[3, 7], backend="pyav")
assert decoded.frames.shape == (2, 1080, 1920, 3) and decoded.num_frames == 60, decoded.frames.shape
print((peak_kib() - before) // 1024)
"""


def test_only_the_frames_a_clip_needs_are_held():
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's code, whatever the session set
    done = subprocess.run(
        [sys.executable, "-c", HELD], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    grown_mib = int(done.stdout.split()[-1])
    assert grown_mib < 120, f"decoding 2 of 60 HD frames grew the process by {grown_mib} MiB"


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

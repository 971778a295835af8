"""Short-side resize and centre crop of training clips."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.frames import resize_center_crop


@pytest.mark.parametrize("height, width", [(240, 320), (320, 240), (64, 64), (20, 30)])
def test_output_is_size_by_size_for_any_aspect(height, width):
    frames = np.random.default_rng(0).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    out = resize_center_crop(frames, 32)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_centre_crop_keeps_the_centre_and_drops_the_sides():
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, :20] = (255, 0, 0)  # left quarter red, right quarter blue, centre green
    frame[:, 20:60] = (0, 255, 0)
    frame[:, 60:] = (0, 0, 255)
    out = resize_center_crop(frame[None], 20)[0]
    inner = out[:, 1:-1].astype(int)
    assert (inner[..., 1] >= 250).all() and (inner[..., [0, 2]] <= 5).all()


def test_a_square_input_of_the_target_size_is_returned_unchanged():
    frames = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_center_crop(frames, 16), frames)


def test_downscale_is_antialiased():
    # Noise shrunk 8x: an antialiased resize averages ~64 pixels per output pixel, plain
    # bilinear only ~4, so the output variance tells them apart.
    noise = np.random.default_rng(2).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    assert resize_center_crop(noise, 32).std() < 20


def test_a_constant_frame_stays_constant_when_upscaled():
    frames = np.full((1, 10, 14, 3), 77, np.uint8)
    np.testing.assert_array_equal(resize_center_crop(frames, 24), 77)


def test_bad_input_is_refused_with_the_expected_layout():
    with pytest.raises(ValueError, match=r"\(t, h, w, c\)"):
        resize_center_crop(np.zeros((16, 16, 3), np.uint8), 8)
    with pytest.raises(ValueError, match="uint8"):
        resize_center_crop(np.zeros((1, 16, 16, 3), np.float32), 8)

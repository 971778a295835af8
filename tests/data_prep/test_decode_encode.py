import numpy as np
import pytest

from data_prep.decode import available_backends, decode_video
from data_prep.encode import encode_mp4, write_mp4
from data_prep.skip import SkipSample


def _ramp(t: int, h: int, w: int) -> np.ndarray:
    """Frame i is a flat grey of level 20 * i: decoded frames say which frame they are."""
    return np.stack([np.full((h, w, 3), 20 * i, np.uint8) for i in range(t)])


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("size", [16, 24, 32])  # decord 0.6 fails on some widths (16, 24)
def test_mp4_round_trip_at_small_sizes(backend, size):
    data = encode_mp4(_ramp(8, size, size), fps=8)
    decoded = decode_video(data, backend="auto" if backend == "decord" else backend)
    assert decoded.frames.shape == (8, size, size, 3) and decoded.num_frames == 8
    assert decoded.fps == pytest.approx(8.0)
    levels = decoded.frames.reshape(8, -1).mean(axis=1)
    assert np.allclose(levels, 20 * np.arange(8), atol=3)


def test_decode_selected_indices_only():
    decoded = decode_video(encode_mp4(_ramp(8, 32, 32)), indices=[1, 3, 5])
    assert np.allclose(decoded.frames.reshape(3, -1).mean(axis=1), [20, 60, 100], atol=3)
    with pytest.raises(SkipSample, match="outside"):
        decode_video(encode_mp4(_ramp(8, 32, 32)), indices=[9])


def test_bad_files_raise_skip_sample_naming_the_file(tmp_path):
    empty, text = tmp_path / "empty.mp4", tmp_path / "notes.mp4"
    empty.write_bytes(b"")
    text.write_text("not a video")
    for path, reason in [(empty, "zero-byte"), (text, "cannot decode")]:
        with pytest.raises(SkipSample) as err:
            decode_video(path)
        assert str(path) in err.value.reason and reason in err.value.reason


def test_write_mp4_pads_odd_sizes_and_leaves_no_temp_file(tmp_path):
    path = write_mp4(tmp_path / "odd.mp4", _ramp(4, 15, 17))
    assert decode_video(path).frames.shape == (4, 16, 18, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["odd.mp4"]
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(np.zeros((4, 8, 8, 3), np.float32))

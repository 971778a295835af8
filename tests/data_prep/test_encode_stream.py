import numpy as np
import pytest

from data_prep.decode import decode_video
from data_prep.encode import Mp4Writer, write_mp4_streams


def _ramp(start: int, t: int, h: int, w: int) -> np.ndarray:
    """Frame i is a flat grey of level 8 * i: decoded frames say which frame they are."""
    return np.stack([np.full((h, w, 3), 8 * i, np.uint8) for i in range(start, start + t)])


def test_chunks_written_one_by_one_decode_as_one_video_padded_to_even(tmp_path):
    path = tmp_path / "long.mp4"
    with Mp4Writer(path, fps=8) as out:
        for start, t in [(0, 5), (5, 1), (6, 9)]:
            out.write(_ramp(start, t, 15, 17))
    decoded = decode_video(path)
    assert out.frames == 15 and decoded.frames.shape == (15, 16, 18, 3)
    assert np.allclose(decoded.frames.reshape(15, -1).mean(axis=1), 8 * np.arange(15), atol=3)
    assert [p.name for p in tmp_path.iterdir()] == ["long.mp4"]


def test_an_error_mid_video_leaves_no_file_behind(tmp_path):
    with pytest.raises(RuntimeError, match="generation failed"), Mp4Writer(tmp_path / "a.mp4") as out:
        out.write(_ramp(0, 2, 8, 8))
        raise RuntimeError("generation failed")
    assert list(tmp_path.iterdir()) == []


def test_a_chunk_of_another_size_is_rejected_naming_both(tmp_path):
    with pytest.raises(ValueError, match="8x8"), Mp4Writer(tmp_path / "a.mp4") as out:
        out.write(_ramp(0, 2, 8, 8))
        out.write(_ramp(2, 2, 8, 10))
    assert list(tmp_path.iterdir()) == []


def test_write_mp4_streams_writes_one_file_per_video_of_a_batch(tmp_path):
    chunks = (np.stack([_ramp(s, 4, 8, 8), _ramp(s + 10, 4, 8, 8)]) for s in (0, 4, 8))
    paths = write_mp4_streams([tmp_path / "v0.mp4", tmp_path / "v1.mp4"], chunks)
    first, second = (decode_video(p).frames for p in paths)
    assert first.shape == second.shape == (12, 8, 8, 3)
    assert second.mean() > first.mean()

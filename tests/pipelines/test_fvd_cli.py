from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from data_prep.encode import encode_mp4, write_mp4
from data_prep.shard_writer import write_shard
from lvdm.metrics.fvd import FEATURES
from pipelines.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

FRAMES, SIZE = 16, 32


class CommunityStyleI3D(nn.Module):
    """A stand-in with the `i3d_torchscript.pt` call signature: (b 3 t 224 224) -> (b 400)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * FRAMES, 400)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        return self.proj(x.mean(dim=(3, 4)).flatten(1))  # TorchScript compiles no einops


@pytest.fixture(scope="module")
def tiny_i3d(tmp_path_factory) -> Path:
    """The plumbing tests go through `--i3d FILE.pt`, the TorchScript option, at no I3D cost."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    with warnings.catch_warnings():  # torch deprecates TorchScript; the community file is one
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(CommunityStyleI3D()).save(str(path))
    return path


def trusted(i3d: Path) -> tuple[str, ...]:
    """`--i3d FILE --i3d-sha256 HEX`: a TorchScript file loads only pinned (or trusted)."""
    return ("--i3d", str(i3d), "--i3d-sha256", hashlib.sha256(i3d.read_bytes()).hexdigest())


def test_a_torchscript_i3d_is_refused_unpinned_and_untrusted_before_it_is_loaded(tmp_path, tiny_i3d, capsys):
    real = video_folder(tmp_path / "real", range(0, 2))
    assert main(["fvd", str(real), str(real), "--i3d", str(tiny_i3d)]) == 2
    err = capsys.readouterr().err
    assert f"{tiny_i3d} (sha256 " in err and "--i3d-sha256 HEX" in err and "--trust-i3d" in err
    wrong = ["--i3d", str(tiny_i3d), "--i3d-sha256", "0" * 64, "--trust-i3d"]
    assert main(["fvd", str(real), str(real), *wrong]) == 2
    assert f"not the {'0' * 64} it was pinned to" in capsys.readouterr().err
    assert run_fvd(real, real, tmp_path / "fvd.json", "--i3d", str(tiny_i3d), "--trust-i3d")["fvd"] < 1e-6


def clip(seed: int, frames: int = FRAMES) -> np.ndarray:
    """A moving gradient: smooth, so H.264 keeps it and videos of one seed family look alike."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(frames), np.arange(SIZE), np.arange(SIZE), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, size=3)
    channels = [127 + 100 * np.sin((x + y + 2 * t) / 6 + p) for p in phase]
    return np.stack(channels, axis=-1).astype(np.uint8)


def video_folder(root: Path, seeds: range) -> Path:
    for seed in seeds:
        write_mp4(root / f"v{seed:03d}.mp4", clip(seed))
    return root


def run_fvd(real: Path | str, fake: Path | str, out: Path, *extra: str) -> dict:
    code = main(["fvd", str(real), str(fake), "--json", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_two_folders_give_a_json_with_the_figures_and_their_convention(tmp_path, tiny_i3d, capsys):
    real = video_folder(tmp_path / "real", range(0, 4))
    fake = video_folder(tmp_path / "fake", range(10, 14))
    result = run_fvd(real, fake, tmp_path / "out" / "fvd.json", *trusted(tiny_i3d), "--batch-size", "3")
    assert {"fvd", "kvd", "clips_real", "clips_fake", "frames", "features"} <= set(result)
    assert (result["clips_real"], result["clips_fake"], result["frames"]) == (4, 4, FRAMES)
    assert result["features"] == FEATURES
    assert result["fvd"] > 0 and np.isfinite(result["kvd"])
    printed = capsys.readouterr().out
    assert f"FVD16 {result['fvd']:.2f}" in printed and FEATURES in printed


def test_a_shard_set_and_the_folder_it_was_made_from_are_at_distance_zero(tmp_path, tiny_i3d):
    real = video_folder(tmp_path / "real", range(0, 3))
    samples = [
        {"__key__": p.stem, "mp4": p.read_bytes(), "json": {"num_frames": FRAMES}}
        for p in sorted(real.iterdir())
    ]
    write_shard(tmp_path / "shards" / "test-000000.tar", samples[:2])
    write_shard(tmp_path / "shards" / "test-000001.tar", samples[2:])
    result = run_fvd(real, tmp_path / "shards" / "*.tar", tmp_path / "fvd.json", *trusted(tiny_i3d))
    assert result["clips_fake"] == 3
    assert result["fvd"] == pytest.approx(0.0, abs=1e-6)


def test_broken_and_short_videos_are_skipped_and_named(tmp_path, tiny_i3d, capsys):
    real = video_folder(tmp_path / "real", range(0, 3))
    fake = video_folder(tmp_path / "fake", range(10, 13))
    (fake / "broken.mp4").write_bytes(encode_mp4(clip(20))[:300])  # truncated
    (fake / "empty.avi").write_bytes(b"")
    write_mp4(fake / "short.mp4", clip(21, frames=8))
    (fake / "notes.txt").write_text("not a video, not counted")
    result = run_fvd(real, fake, tmp_path / "fvd.json", *trusted(tiny_i3d), "--clips", "3")
    assert result["clips_fake"] == 3
    skipped = {Path(name).name: reason for name, reason in result["skipped_fake"].items()}
    assert set(skipped) == {"broken.mp4", "empty.avi", "short.mp4"}
    assert "zero-byte" in skipped["empty.avi"] and "outside a video of 8 frames" in skipped["short.mp4"]
    assert "3 video(s) skipped" in capsys.readouterr().err


def test_a_folder_without_one_usable_clip_is_an_error_naming_it(tmp_path, tiny_i3d, capsys):
    real = video_folder(tmp_path / "real", range(0, 2))
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "broken.mp4").write_bytes(b"\x00" * 100)
    assert main(["fvd", str(real), str(tmp_path / "fake"), *trusted(tiny_i3d)]) == 1
    err = capsys.readouterr().err
    assert "broken.mp4" in err and f"no usable 16-frame clip in fake {tmp_path / 'fake'}" in err
    assert main(["fvd", str(real), str(tmp_path / "missing"), *trusted(tiny_i3d)]) == 2
    assert "missing does not exist" in capsys.readouterr().err


@pytest.mark.pretrained
def test_real_i3d_on_two_folders(tmp_path, pretrained_home, capsys):
    real = video_folder(tmp_path / "real", range(0, 2))
    fake = video_folder(tmp_path / "fake", range(10, 12))
    result = run_fvd(real, fake, tmp_path / "fvd.json", "--frames", "10")  # 10: I3D's cost is per frame
    assert result["clips_real"] == result["clips_fake"] == 2 and result["frames"] == 10
    assert "warning: real: 2 feature vectors of dimension 400" in capsys.readouterr().err
    assert len(result["warnings"]) == 2
    assert result["fvd"] > 0 and np.isfinite(result["kvd"])

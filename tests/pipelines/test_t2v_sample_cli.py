"""`lvdm sample --prompt`: `--frames` counts video frames, whatever the decoder's ft.

The run is built from its files (`tests.fixtures.t2v_stage`: a random CLIP folder, a tiny video
autoencoder with ft=2, a tiny text-conditioned UNet, the manifest) and the run record a finished
`train_t2v` leaves, so the command is tested end to end in seconds, without training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.decode import decode_video
from pipelines.cli import main
from tests.fixtures.t2v_stage import FT, LATENT_SHAPE, record_t2v_run, write_t2v_stage

RUN_STEPS = 3  # the run's sampling.steps


@pytest.fixture(scope="module")
def t2v_workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("t2v")
    stage = workdir / "stages" / "train_t2v-test"
    write_t2v_stage(stage)
    record_t2v_run(workdir, "20260101-000000-t2v0", stage, sampling_steps=RUN_STEPS)
    return workdir


def _sample(workdir: Path, out: Path, *extra: str, steps: str | None = "2") -> tuple[dict, int]:
    code = main(
        ["sample", "--workdir", str(workdir), "--prompt", "a red circle moving left", "--out", str(out)]
        + (["--steps", steps] if steps else [])
        + list(extra)
    )
    assert code == 0
    return json.loads(out.with_suffix(".json").read_text()), len(decode_video(out.read_bytes()).frames)


@pytest.mark.usefixtures("one_thread")
def test_frames_counts_video_frames_rounding_latents_up_and_cropping(t2v_workdir: Path, tmp_path) -> None:
    # 5 frames at ft=2: 3 latents decode to 6 frames, the surplus one is cropped.
    about, frames = _sample(t2v_workdir, tmp_path / "five.mp4", "--frames", "5")
    assert frames == about["frames"] == 5 and about["latent_frames"] == 3 and about["steps"] == 2
    # A multiple of ft: exactly frames / ft latents, nothing cropped.
    about, frames = _sample(t2v_workdir, tmp_path / "six.mp4", "--frames", "6")
    assert frames == 6 and about["latent_frames"] == 3


@pytest.mark.usefixtures("one_thread")
def test_frames_and_steps_default_to_the_training_window_and_the_runs_sampling(
    t2v_workdir: Path, tmp_path
) -> None:
    """Not `--models`' 50 steps: the text model samples as its pipeline says unless told otherwise."""
    about, frames = _sample(t2v_workdir, tmp_path / "window.mp4", steps=None)
    assert frames == LATENT_SHAPE[1] * FT and about["latent_frames"] == LATENT_SHAPE[1]
    assert about["steps"] == RUN_STEPS


def test_frames_below_one_names_the_flag(t2v_workdir: Path, tmp_path) -> None:
    with pytest.raises(SystemExit, match="--frames 0: give the number of video frames"):
        _sample(t2v_workdir, tmp_path / "none.mp4", "--frames", "0")

"""Hierarchical long text-to-video (issue 18, `t2v.key_stride`): one stride-aware network holds
§3.3's three roles with the caption, and its long videos are keys then fills.

Pure Python (no Ray): the finished `train_t2v` stages are written from their files
(`tests.fixtures.t2v_stage`), and the network's calls are recorded to see which role and which
stride each sampler call asked of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.decode import decode_video
from data_prep.shard_writer import write_shard
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.text_diffusion_training import TextDiffusionTrainer
from lvdm.unet import UNet3D
from pipelines.config import T2VSection, load_pipeline
from stages.contract import read_manifest
from stages.diffusion_stage import trainer_windows, window_of
from stages.t2v_model import TextVideoModel
from stages.train_t2v import check_span, network_kwargs, t2v_task
from tests.conftest import PIPELINES
from tests.fixtures.t2v_stage import FT, LATENT_SHAPE, UNET, record_t2v_run, replace_unet, write_t2v_stage

KEY_STRIDE = 2
SCHEDULE = NoiseSchedule.linear(timesteps=300, linear_start=0.00085, linear_end=0.012)
SAMPLING = {"sampler": "ddim", "steps": 2, "eta": 1.0, "noise_level": 100, "guidance_weight": 0.1}
RED, BLUE = "a red circle moving left", "a blue square moving up"
SECTION = T2VSection(frames=LATENT_SHAPE[1], cond_frames=1, max_noise_level=250, key_stride=KEY_STRIDE)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Two runs with a finished `train_t2v`: `keys` (key_stride 2), `plain` (continuations only)."""
    workdir = tmp_path_factory.mktemp("hierarchical_t2v")
    text_encoder = None
    for run, key_stride in {"keys": KEY_STRIDE, "plain": 1}.items():
        stage = workdir / "stages" / f"train_t2v-{run}"
        text_encoder = write_t2v_stage(stage, text_encoder=text_encoder)["text_encoder"]
        section = SECTION.model_copy(update={"key_stride": key_stride})
        replace_unet(stage, network_kwargs(dict(UNET), section), cond_frames=1, key_stride=key_stride)
        record_t2v_run(workdir, f"20260101-000000-{run}", stage, sampling_steps=2)
    return workdir


def _model(workdir: Path, run: str) -> TextVideoModel:
    return TextVideoModel.load(
        read_manifest(str(workdir / "stages" / f"train_t2v-{run}")), torch.device("cpu")
    )


class Recorder(torch.nn.Module):
    """The network, with every call's role (which latents its mask channel gives) and stride kept."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.calls = network, []

    @property
    def config(self):
        return self.network.config

    def forward(self, x, t, stride=None, **kwargs):
        given = tuple(int(i) for i in torch.nonzero(x[0, -1, :, 0, 0] > 0.5).flatten())
        frames = x.shape[2]
        role = "first" if not given else "fill" if given == (0, frames - 1) else "continue"
        self.calls.append((role, None if stride is None else int(torch.as_tensor(stride).flatten()[0])))
        return self.network(x, t, stride=stride, **kwargs)


def test_key_stride_trains_one_stride_aware_network_in_all_three_roles() -> None:
    task = t2v_task(SECTION)
    assert task.roles == ("uncond", "pred", "interp") and task.strides == (1, KEY_STRIDE)
    assert task.latent_stride == KEY_STRIDE and task.interp_frames == KEY_STRIDE + 1
    kwargs = network_kwargs(dict(UNET), SECTION)
    assert kwargs["max_stride"] == KEY_STRIDE and kwargs["in_channels"] == UNET["in_channels"] + 1
    assert "max_stride" not in network_kwargs(dict(UNET), SECTION.model_copy(update={"key_stride": 1}))

    torch.manual_seed(0)
    trainer = TextDiffusionTrainer(
        UNet3D(**kwargs),
        SCHEDULE,
        null_context=torch.zeros(5, UNET["context_dim"]),
        max_noise_level=task.max_noise_level,
        **trainer_windows(task),
    )
    frames, stride = window_of(task, trainer)
    assert (frames, stride) == (1 + (LATENT_SHAPE[1] - 1) * KEY_STRIDE, 1)  # keys' span, cut per step
    conditioned = []
    for step in range(6):
        logs = trainer.step(torch.randn(2, 4, frames, 8, 8), torch.randn(2, 5, UNET["context_dim"]), step)
        assert np.isfinite(logs["loss"])
        conditioned.append(logs["conditioned_fraction"])
    assert 0.0 in conditioned and 1.0 in conditioned  # the caption-only role and a conditioned one


def test_key_stride_is_checked_at_the_edge_and_hashed_only_when_on() -> None:
    with pytest.raises(ValueError, match="t2v.key_stride=2 needs t2v.cond_frames >= 1"):
        T2VSection(frames=4, key_stride=2)
    with pytest.raises(ValueError, match="t2v.key_stride=4 must be below t2v.frames=4"):
        T2VSection(frames=4, cond_frames=1, key_stride=4)
    plain = set(T2VSection(cond_frames=1).hashed())
    assert set(T2VSection(cond_frames=1, key_stride=2).hashed()) == plain | {"key_stride"}


def test_clips_too_short_for_the_key_windows_fail_at_the_start_naming_the_fields(tmp_path: Path) -> None:
    """frames 4 at key stride 2 spans 7 latents: clips of 6 cannot give one; clips of 7 can."""
    section = T2VSection(frames=4, cond_frames=1, key_stride=2)
    for latents in (6, 7):
        shard = tmp_path / f"train-{latents}.tar"
        samples = [
            {
                "__key__": f"v{i}",
                "npy": np.zeros((4, latents, 8, 8), np.float16),
                "json": {"caption": RED, "latent_frames": latents},
            }
            for i in range(2)
        ]
        write_shard(shard, samples)
        if latents == 6:
            with pytest.raises(
                ValueError, match="t2v.key_stride=2 with t2v.frames=4 needs clips of 7 latents"
            ):
                check_span([str(shard)], section)
        else:
            check_span([str(shard)], section)


@pytest.mark.usefixtures("one_thread")
def test_a_hierarchical_video_is_keys_at_the_key_stride_then_fills_at_the_data_pace(workdir: Path) -> None:
    """11 latents at key stride 2: keys 0, 2, ..., 10 (6 keys: a first window of 4, one
    continuation of 3 at stride 2), then 5 fills of one latent each between neighbouring keys."""
    model = _model(workdir, "keys")
    assert model.strategies == ("hierarchical", "autoregressive") and model.key_stride == KEY_STRIDE
    recorder = Recorder(model.network)
    model.network = recorder
    video = model.sample_latents(
        [RED, BLUE], SCHEDULE, SAMPLING, generator=torch.Generator().manual_seed(0), latents=11
    )
    assert video.shape == (2, LATENT_SHAPE[0], 11, *LATENT_SHAPE[2:]) and torch.isfinite(video).all()
    calls = {(role, stride): recorder.calls.count((role, stride)) for role, stride in set(recorder.calls)}
    steps = SAMPLING["steps"]
    assert calls == {("first", KEY_STRIDE): steps, ("continue", KEY_STRIDE): steps, ("fill", None): 5 * steps}

    recorder.calls.clear()  # the same model drawn autoregressively: every window at stride 1
    model.sample_latents(
        [RED],
        SCHEDULE,
        SAMPLING,
        generator=torch.Generator().manual_seed(0),
        latents=7,
        strategy="autoregressive",
    )
    assert set(recorder.calls) == {("first", 1), ("continue", 1)}


@pytest.mark.usefixtures("one_thread")
def test_the_caption_changes_the_fills_between_the_same_keys(workdir: Path) -> None:
    """Same seed, two prompts: a hierarchical video is the caption's throughout, and the seed,
    not chance, decides it."""
    model = _model(workdir, "keys")

    def video(prompt: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        return model.sample_latents([prompt], SCHEDULE, SAMPLING, generator=generator, latents=9)

    red = video(RED)
    assert (red - video(BLUE)).abs().max() > 1e-4
    assert torch.equal(red, video(RED))


def _sample_cli(workdir: Path, run: str, out: Path, *extra: str) -> dict:
    from pipelines.cli import main

    argv = ["sample", "--workdir", str(workdir), "--run", f"20260101-000000-{run}", "--prompt", RED]
    assert main([*argv, "--frames", "21", "--steps", "2", "--out", str(out), *extra]) == 0
    about = json.loads(out.with_suffix(".json").read_text())
    assert len(decode_video(out.read_bytes()).frames) == about["frames"] == 21
    return about


@pytest.mark.usefixtures("one_thread")
def test_lvdm_sample_prompt_draws_a_key_model_hierarchically_unless_told(
    workdir: Path, tmp_path: Path
) -> None:
    assert _sample_cli(workdir, "keys", tmp_path / "default.mp4")["strategy"] == "hierarchical"
    told = _sample_cli(workdir, "keys", tmp_path / "told.mp4", "--strategy", "autoregressive")
    assert told["strategy"] == "autoregressive" and told["latent_frames"] == 21 // FT + 1


def test_hierarchical_from_a_model_without_keys_names_the_setting_to_retrain_with(
    workdir: Path, tmp_path
) -> None:
    with pytest.raises(SystemExit) as error:
        _sample_cli(workdir, "plain", tmp_path / "plain.mp4", "--strategy", "hierarchical")
    message = str(error.value)
    assert message.startswith(
        "--strategy: strategy 'hierarchical': this text-to-video model draws long videos by"
    )
    assert "--set t2v.key_stride=2" in message and not (tmp_path / "plain.mp4").exists()


def test_the_t2v_demo_accepts_hierarchical_training_on_longer_clips() -> None:
    """What a user sets for hierarchical text-to-video on the synthetic demo validates as one."""
    config = load_pipeline(
        PIPELINES / "bouncing_shapes_t2v.yaml",
        ["data.frames=16", "data.synthetic.frames=16", "t2v.cond_frames=1", "t2v.key_stride=2"],
    )
    assert (config.t2v.key_stride, config.t2v.cond_frames) == (2, 1)

"""Long text-to-video (issue 18): text joins §3.3's mask conditioning (`t2v.cond_frames`).

A model trained with cond_frames > 0 has the mask channel and continues its windows, each one
conditioned on the last latents and the caption; one trained without it samples one window and
says so when asked for more. Everything here is pure Python (no Ray): the finished `train_t2v`
stages are written from their files (`tests.fixtures.t2v_stage`) with small random networks
whose weights are drawn away from their zero initialisation, so that the text reaches the output.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_prep.decode import decode_video
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.unet import UNet3D
from pipelines.config import T2VSection, load_pipeline
from stages.contract import read_manifest
from stages.t2v_model import TextVideoModel
from stages.train_t2v import network_kwargs, t2v_task
from tests.conftest import PIPELINES
from tests.fixtures.t2v_stage import FT, LATENT_SHAPE, UNET, record_t2v_run, replace_unet, write_t2v_stage

MAX_NOISE_LEVEL = 250  # t2v.max_noise_level's default: the pipelines' sampling.noise_level (100) fits
CONTINUING_UNET = UNET | {"in_channels": UNET["in_channels"] + 1, "max_noise_level": MAX_NOISE_LEVEL}
WINDOW = LATENT_SHAPE[1] * FT  # video frames of one training window
SCHEDULE = NoiseSchedule.linear(timesteps=300, linear_start=0.00085, linear_end=0.012)
SAMPLING = {"sampler": "ddim", "steps": 2, "eta": 1.0, "noise_level": 100, "guidance_weight": 0.1}
RED, BLUE = "a red circle moving left", "a blue square moving up"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One workdir, two runs with a finished `train_t2v`: `one` (cond_frames 0), `long` (1)."""
    workdir = tmp_path_factory.mktemp("long_t2v")
    text_encoder = None
    for run, (unet, cond_frames) in {"one": (UNET, 0), "long": (CONTINUING_UNET, 1)}.items():
        stage = workdir / "stages" / f"train_t2v-{run}"
        text_encoder = write_t2v_stage(stage, text_encoder=text_encoder)["text_encoder"]
        replace_unet(stage, unet, cond_frames=cond_frames)
        record_t2v_run(workdir, f"20260101-000000-{run}", stage, sampling_steps=2)
    return workdir


def _model(workdir: Path, run: str) -> TextVideoModel:
    return TextVideoModel.load(
        read_manifest(str(workdir / "stages" / f"train_t2v-{run}")), torch.device("cpu")
    )


def _latents(
    model: TextVideoModel, prompts: list[str], latents: int, given: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalised latents of `model`, every call from the same seed."""
    generator = torch.Generator().manual_seed(0)
    return model.sample_latents(
        prompts, SCHEDULE, SAMPLING, generator=generator, latents=latents, given=given
    )


@pytest.mark.usefixtures("one_thread")
def test_a_continuation_gives_back_the_given_latents_exactly(workdir: Path) -> None:
    model = _model(workdir, "long")
    given = torch.randn(2, LATENT_SHAPE[0], 3, *LATENT_SHAPE[2:], generator=torch.Generator().manual_seed(5))
    video = _latents(model, [RED, BLUE], latents=9, given=given)
    assert video.shape == (2, LATENT_SHAPE[0], 9, *LATENT_SHAPE[2:]) and torch.isfinite(video).all()
    assert torch.equal(video[:, :, :3], given)


@pytest.mark.usefixtures("one_thread")
def test_a_long_video_has_the_frames_asked_for_past_the_window(workdir: Path) -> None:
    """19 frames at ft=2: 10 latents, the first window of 4 then two continuations of 3 (k=1),
    decoded window by window, the surplus frame cropped."""
    model = _model(workdir, "long")
    assert model.continues and model.cond_frames == 1 and model.window_frames == WINDOW == 8
    video = model.sample([RED], SCHEDULE, SAMPLING, generator=torch.Generator().manual_seed(0), frames=19)
    assert video.shape == (1, 3, 19, 2 * LATENT_SHAPE[2], 2 * LATENT_SHAPE[3])
    assert torch.isfinite(video).all() and video.abs().max() <= 1
    assert _latents(model, [RED], latents=10).shape[2] == 10


@pytest.mark.usefixtures("one_thread")
def test_the_caption_changes_the_continuation(workdir: Path) -> None:
    """Same given latents, same seed, two prompts: the continuations differ, the given latents do not."""
    model = _model(workdir, "long")
    given = torch.randn(1, LATENT_SHAPE[0], 1, *LATENT_SHAPE[2:], generator=torch.Generator().manual_seed(5))
    red, blue = (_latents(model, [prompt], latents=6, given=given) for prompt in (RED, BLUE))
    assert torch.equal(red[:, :, :1], blue[:, :, :1])
    assert (red[:, :, 1:] - blue[:, :, 1:]).abs().max() > 1e-4
    assert torch.equal(red, _latents(model, [RED], latents=6, given=given))  # the seed, not chance


def test_the_mask_channel_is_there_only_with_cond_frames() -> None:
    unet = dict(UNET)
    assert network_kwargs(unet, T2VSection()) == unet and t2v_task(T2VSection()).kind == "uncond"
    section = T2VSection(frames=4, cond_frames=2, p_cond=1.0, max_noise_level=50)
    kwargs = network_kwargs(unet, section)
    assert kwargs == unet | {"in_channels": unet["in_channels"] + 1, "max_noise_level": 50}
    assert UNet3D(**kwargs).input_blocks[0][0].weight.shape[1] == unet["in_channels"] + 1
    task = t2v_task(section)  # the prediction network's masks: the first cond_frames latents given
    assert (task.kind, task.cond_frames, task.p_cond, task.max_noise_level) == ("pred", 2, 1.0, 50)
    with pytest.raises(ValueError, match="t2v.cond_frames=4 must be below t2v.frames=4"):
        T2VSection(frames=4, cond_frames=4)


def test_the_text_trainer_draws_prediction_masks_beside_the_captions() -> None:
    from lvdm.text_diffusion_training import TextDiffusionTrainer
    from stages.diffusion_stage import mask_sampler

    torch.manual_seed(0)
    task = t2v_task(T2VSection(frames=3, cond_frames=1, p_cond=1.0, max_noise_level=10))
    trainer = TextDiffusionTrainer(
        UNet3D(**network_kwargs(dict(UNET), T2VSection(frames=3, cond_frames=1, max_noise_level=10))),
        NoiseSchedule.linear(timesteps=100),
        null_context=torch.zeros(5, UNET["context_dim"]),
        mask_sampler=mask_sampler(task),
        max_noise_level=task.max_noise_level,
    )
    logs = trainer.step(torch.randn(2, 4, 3, 8, 8), torch.randn(2, 5, UNET["context_dim"]))
    assert logs["conditioned_fraction"] == 1.0 and np.isfinite(logs["loss"])


def test_sd_weights_fill_a_continuing_network_as_they_fill_a_one_window_one(tmp_path: Path) -> None:
    """SD goes into the unconditional twin and is copied over: with the mask channel zero, the
    continuing network is the one-window network at every noise level; frozen spatial layers
    leave its stem (which reads the mask) and its noise-level embedding trainable."""
    from stages.train_t2v import build_network
    from tests.stages.test_train_t2v import _sd_folder

    _sd_folder(tmp_path)  # its UNet is SD's layout at width 16, context 32
    unet = {
        "model_channels": 16,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "attention_resolutions": (1,),
        "num_heads": 2,
        "norm_groups": 8,
        "context_dim": 32,
        "temporal_length": 4,
        "use_scale_shift_norm": False,
        "temporal_transformer": True,
        "frame_group_norm": True,
    }
    cfg = {"unet_weights": str(tmp_path), "freeze_spatial": True}
    one = build_network(cfg | {"unet": unet})
    long = build_network(cfg | {"unet": network_kwargs(unet | {"in_channels": 4}, T2VSection(cond_frames=1))})
    x, t, context = torch.randn(1, 4, 3, 8, 8), torch.tensor([40]), torch.randn(1, 7, 32)
    with torch.no_grad():
        expected = one(x, t, context=context)
        for level in (0, 100):
            masked = torch.cat([x, torch.zeros(1, 1, 3, 8, 8)], dim=1)
            out = long(masked, t, context=context, noise_level=torch.tensor([level]))
            torch.testing.assert_close(out, expected)
    trained = {name for name, parameter in long.named_parameters() if parameter.requires_grad}
    assert {"input_blocks.0.0.weight", "noise_level_embed.weight"} <= trained
    assert trained - {n for n, p in one.named_parameters() if p.requires_grad} == {
        "input_blocks.0.0.weight",
        "input_blocks.0.0.bias",
        "noise_level_embed.weight",
    }


def _sample_cli(workdir: Path, run: str, out: Path, frames: int) -> tuple[dict, int]:
    from pipelines.cli import main

    argv = ["sample", "--workdir", str(workdir), "--run", f"20260101-000000-{run}", "--prompt", RED]
    assert main(argv + ["--frames", str(frames), "--steps", "2", "--out", str(out)]) == 0
    return json.loads(out.with_suffix(".json").read_text()), len(decode_video(out.read_bytes()).frames)


@pytest.mark.usefixtures("one_thread")
def test_lvdm_sample_prompt_continues_a_continuing_model_past_its_window(workdir: Path, tmp_path) -> None:
    about, frames = _sample_cli(workdir, "long", tmp_path / "long.mp4", 2 * WINDOW + 3)
    assert frames == about["frames"] == 19 and about["latent_frames"] == 10 and about["continued"]


def test_a_one_window_model_asked_for_two_windows_says_it_cannot_continue(workdir: Path, tmp_path) -> None:
    with pytest.raises(SystemExit) as error:
        _sample_cli(workdir, "one", tmp_path / "one.mp4", 2 * WINDOW)
    message = str(error.value)
    assert message.startswith("--frames 16: this text-to-video model samples one window of 8 frames")
    assert "t2v.cond_frames=0" in message and "--set t2v.cond_frames=1" in message
    assert not (tmp_path / "one.mp4").exists()
    _model(workdir, "one").check_continues(WINDOW)  # a window is fine
    with pytest.raises(ValueError, match="t2v.cond_frames"):
        _model(workdir, "one").check_continues(WINDOW + 1)


@pytest.mark.usefixtures("one_thread")
def test_sample_t2v_gives_sample_frames_to_a_continuing_model_only(workdir: Path, tmp_path) -> None:
    """`sample.frames` is the long-video stages' length (1,024 by default): a continuing model's
    videos have it, a one-window model's stay one window, as before."""
    from stages.sample_t2v import sample_prompts

    config = load_pipeline(PIPELINES / "bouncing_shapes_t2v.yaml", ["sampling.steps=2"])
    lengths = {}
    for run in ("one", "long"):
        out = tmp_path / run
        out.mkdir()
        record = sample_prompts(
            out,
            read_manifest(str(workdir / "stages" / f"train_t2v-{run}")),
            [RED],
            videos=1,
            fps=8,
            seed=0,
            max_batch=4,
            schedule=config.diffusion.schedule.model_dump(),
            sampling=config.sampling.model_dump(),
            device=torch.device("cpu"),
            frames=21,
            contact_columns=4,
        )
        video = decode_video((out / record["prompts"][RED]["videos"][0]).read_bytes())
        sheet = np.asarray(Image.open(out / record["prompts"][RED]["contact_sheet"]))
        lengths[run] = (record["frames"], record["continued"], len(video.frames), sheet.shape[1] // 16)
    assert lengths == {"one": (WINDOW, False, WINDOW, WINDOW), "long": (21, True, 21, 4)}


def test_the_continuing_preview_gives_the_first_latents_and_samples_the_rest(workdir: Path, tmp_path) -> None:
    """train_t2v's preview of a continuing model: held-out clips' first latents and captions in,
    the rest of the window sampled (no Ray: a rank-0 session that logs nowhere)."""
    from data_prep.shard_writer import write_shard
    from lvdm.diffusion.text_guidance import text_guided
    from stages.ray_training import WorkerSession
    from stages.train_t2v import Previewer

    c, t, h, w = LATENT_SHAPE
    rng = np.random.default_rng(0)
    samples = [
        {
            "__key__": f"v{i}",
            "npy": rng.standard_normal((c, t, h, w)).astype(np.float16),
            "json": {"caption": caption, "latent_frames": t},
        }
        for i, caption in enumerate((RED, BLUE))
    ]
    write_shard(tmp_path / "test-000000.tar", samples)
    model = _model(workdir, "long")
    cfg = {
        "schedule": {"timesteps": 300, "linear_start": 0.00085, "linear_end": 0.012},
        "sampling": SAMPLING,
        "frames": t,
        "train": {"heldout_clips": 2},
        "heldout_shards": [str(tmp_path / "test-000000.tar")],
        "scale": 1.0,
        "shift": 0.0,
        "task": asdict(t2v_task(T2VSection(frames=t, cond_frames=1))),
        "decoder": read_manifest(str(workdir / "stages" / "train_t2v-long"))["outputs"]["decoder"],
        "guidance_scale": 3.0,
    }
    session = WorkerSession("train_t2v", 0, 1, torch.device("cpu"), None, None)
    previewer = Previewer(cfg, session, model.text, model.text.encode([""])[0])
    metrics = previewer(model.network, step=7)
    assert set(metrics) == {"preview/sample_std", "preview/latent_mse"} and metrics["preview/latent_mse"] > 0
    denoiser = text_guided(model.network, previewer.context, previewer.null_context, 3.0)
    continued = previewer._continuation(denoiser, torch.Generator().manual_seed(7))
    assert continued.shape == previewer.heldout.shape
    assert torch.equal(continued[:, :, :1], previewer.heldout[:, :, :1])
    assert not torch.equal(continued[:, :, 1:], previewer.heldout[:, :, 1:])


def test_the_default_t2v_section_keeps_the_old_cache_keys() -> None:
    """cond_frames, p_cond and max_noise_level are hashed only with cond_frames > 0: every model
    trained before them keeps its stage folder."""
    from pipelines.runner import plan, stage_keys

    before = {
        "caption_dropout",
        "frames",
        "freeze_spatial",
        "guidance_scale",
        "stable_diffusion",
        "text_encoder",
        "train",
        "unet_weights",
    }
    assert set(T2VSection().hashed()) == before
    assert set(T2VSection(cond_frames=1).hashed()) == before | {"cond_frames", "p_cond", "max_noise_level"}

    def keys(*overrides: str) -> dict[str, str]:
        config = load_pipeline(PIPELINES / "bouncing_shapes_t2v.yaml", list(overrides))
        return stage_keys(plan(config), config)

    default = keys()
    assert keys("t2v.p_cond=0.9", "t2v.max_noise_level=100") == default  # unread with cond_frames 0
    changed = keys("t2v.cond_frames=1")
    assert {name for name in default if changed[name] != default[name]} == {
        "train_t2v",
        "sample_t2v",
        "evaluate_t2v",
    }


def test_the_text_guided_network_is_sampled_as_the_network_it_wraps() -> None:
    """The wrapper carries the network's config, so the loops read its mask channel, noise level
    and parameterisation from it: a v-prediction text network is sampled as v, not as ε."""
    from lvdm.diffusion.sampling import sample_latents
    from lvdm.diffusion.text_guidance import text_guided

    torch.manual_seed(0)
    network = UNet3D(**UNET | {"prediction": "v"}).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0, 0.1)
    guided = text_guided(
        network, torch.randn(1, 5, UNET["context_dim"]), torch.zeros(5, UNET["context_dim"]), 2.0
    )
    assert guided.config is network.config

    def sample(prediction: str | None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return sample_latents(
            guided, (1, 4, 2, 8, 8), SCHEDULE, steps=2, generator=generator, prediction=prediction
        )

    assert torch.equal(sample(None), sample("v")) and not torch.equal(sample(None), sample("eps"))
    with pytest.raises(ValueError, match="a batch of 3 latents for 2 captions"):
        text_guided(network, torch.randn(2, 5, 16), torch.zeros(5, 16), 2.0)(
            torch.randn(3, 4, 2, 8, 8), torch.tensor([1, 2, 3])
        )

"""Cache keys hash what changes a stage's result and nothing else (issue 13, item 3)."""

import pytest

from pipelines.config import DiffusionTrainSection, PipelineConfig, TrainSection, load_pipeline
from pipelines.runner import plan, stage_keys
from tests.conftest import PIPELINES, TINY_AUTOENCODER, TINY_DEMO, TINY_DIFFUSION

STAGES = "stages=[shard, train_autoencoder, cache_latents, train_uncond, train_pred, train_interp]"
BASE = TINY_DEMO + TINY_AUTOENCODER + TINY_DIFFUSION + [STAGES]


def _keys(*overrides: str, pipeline: str = "demo.yaml", base: list[str] = BASE) -> dict[str, str]:
    config = load_pipeline(PIPELINES / pipeline, base + list(overrides))
    return stage_keys(plan(config), config)


EXECUTION_SETTINGS = [
    f"{section}.train.{key}={value}"
    for section in ("autoencoder", "train_uncond", "train_pred", "train_interp")
    for key, value in (
        ("num_workers", 16),
        ("use_gpu", "true"),
        ("cpus_per_worker", 8),
        ("loader_workers", 6),
        ("log_every", 7),
        ("preview_every", 9),
        ("heldout_clips", 3),
        ("max_failures", 5),
        ("compile", "true"),
    )
] + ["cache_latents.use_gpu=true", "cache_latents.batch_size=32"]
EXECUTION_SETTINGS += ["cache_latents.engine=ray_data", "cache_latents.concurrency=4"]


@pytest.mark.parametrize("override", EXECUTION_SETTINGS)
def test_execution_settings_change_no_cache_key(override):
    assert _keys(override) == _keys()


@pytest.mark.parametrize(
    ("override", "rerun"),
    [
        ("train_uncond.train.lr=0.01", {"train_uncond", "train_pred", "train_interp"}),
        ("train_uncond.train.batch_size=3", {"train_uncond", "train_pred", "train_interp"}),
        ("train_uncond.train.checkpoint_every=3", {"train_uncond", "train_pred", "train_interp"}),
        ("train_pred.p_cond=0.25", {"train_pred"}),
        (
            "autoencoder.train.precision=fp32",
            {"train_autoencoder", "cache_latents", "train_uncond", "train_pred", "train_interp"},
        ),
        ("cache_latents.precision=fp32", {"cache_latents", "train_uncond", "train_pred", "train_interp"}),
        (
            "shard.crf=30",
            {"shard", "train_autoencoder", "cache_latents", "train_uncond", "train_pred", "train_interp"},
        ),
        (
            "data.synthetic.seed=1",
            {"shard", "train_autoencoder", "cache_latents", "train_uncond", "train_pred", "train_interp"},
        ),
    ],
)
def test_result_settings_change_exactly_their_stages_and_dependents(override, rerun):
    before, after = _keys(), _keys(override)
    assert {name for name in before if before[name] != after[name]} == rerun


def test_sampling_settings_retrain_nothing():
    assert _keys("sampling.steps=7", "sampling.guidance_weight=0.5") == _keys()


@pytest.mark.parametrize(
    ("pipeline", "ignored", "read"),
    [
        (
            "ucf101.yaml",
            ["data.taichi_format=png", "data.webvid_csv={train: a.csv}", "data.frame_folder_fps=5"],
            "data.ucf101_split=2",
        ),
        ("sky_timelapse.yaml", ["data.ucf101_split=3", "data.taichi_format=png"], "data.frame_folder_fps=5"),
        ("taichi.yaml", ["data.ucf101_split=3", "data.frame_folder_fps=5"], "data.taichi_format=png"),
        ("webvid.yaml", ["data.ucf101_split=3", "data.synthetic.seed=4"], "data.webvid_csv={train: a.csv}"),
    ],
)
def test_shard_key_hashes_only_the_chosen_datasets_options(pipeline, ignored, read):
    base = ["data.root=/data/x", "stages=[shard]"]
    keys = _keys(pipeline=pipeline, base=base)
    for override in ignored:
        assert _keys(override, pipeline=pipeline, base=base) == keys, override
    assert _keys(read, pipeline=pipeline, base=base) != keys


def test_frame_rate_of_png_folders_is_hashed_only_for_png_taichi():
    base = ["data.root=/data/x", "stages=[shard]"]
    mp4 = _keys(pipeline="taichi.yaml", base=base)
    assert _keys("data.frame_folder_fps=5", pipeline="taichi.yaml", base=base) == mp4
    png = _keys("data.taichi_format=png", pipeline="taichi.yaml", base=base)
    assert (
        _keys("data.taichi_format=png", "data.frame_folder_fps=5", pipeline="taichi.yaml", base=base) != png
    )


def test_synthetic_ignores_data_root():
    assert _keys("data.root=/anywhere") == _keys()


def test_every_train_section_marks_the_same_execution_settings():
    """A subclass that redeclares a field drops its marker: catch it here, not in a resized run."""
    expected = {
        "num_workers",
        "use_gpu",
        "cpus_per_worker",
        "loader_workers",
        "log_every",
        "preview_every",
        "heldout_clips",
        "max_failures",
        "compile",
    }

    def sections(model):
        for field in model.model_fields.values():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, TrainSection):
                yield annotation
            elif isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                yield from sections(annotation)

    found = list(sections(PipelineConfig))
    assert len(found) == 5  # autoencoder, train_uncond, train_pred, train_interp, t2v
    for section in found:
        hashed = set(section().hashed())
        # Diffusion stages also keep snapshots of their weights: how often is not in the key.
        diffusion = issubclass(section, DiffusionTrainSection)
        execution = expected | ({"snapshot_every"} if diffusion else set())
        # Their rate schedule is hashed only when it is not the release's constant rate, their
        # loss weighting only when on.
        unscheduled = (
            {"lr_schedule", "warmup_steps", "loss_weighting", "min_snr_gamma"} if diffusion else set()
        )
        assert not hashed & execution, section
        assert set(section.model_fields) - hashed == execution | unscheduled, section
        if diffusion:
            assert {"lr_schedule", "warmup_steps"} <= set(section(lr_schedule="cosine").hashed()), section
            weighted = section(loss_weighting="min_snr").hashed()
            assert {"loss_weighting", "min_snr_gamma"} <= set(weighted), section

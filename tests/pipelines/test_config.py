from pathlib import Path

import pytest
import yaml

from pipelines.config import ConfigError, load_pipeline, to_yaml
from tests.conftest import PIPELINES


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_shipped_pipelines_validate_with_paper_settings():
    for name, stride in [("ucf101", 1), ("sky_timelapse", 1), ("taichi", 4), ("webvid", 1)]:
        config = load_pipeline(PIPELINES / f"{name}.yaml", [f"data.root=/data/{name}"])
        assert (config.data.resolution, config.data.frames, config.data.stride) == (256, 16, stride)
        assert config.data.dataset == name and str(config.data.root) == f"/data/{name}"
    assert load_pipeline(PIPELINES / "demo.yaml").data.dataset == "synthetic"


def test_unknown_key_names_file_path_and_allowed_keys(tmp_path):
    path = _write(tmp_path, "name: x\nstages: [shard]\ndata: {dataset: synthetic, resolutoin: 64}\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    message = str(err.value)
    assert str(path) in message and "data.resolutoin" in message and "resolution" in message


def test_wrong_type_and_value_say_what_was_given_and_allowed(tmp_path):
    path = _write(tmp_path, "name: x\nstages: [shard]\ndata: {dataset: kinetics, frames: many}\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    message = str(err.value)
    assert "data.dataset" in message and "'kinetics'" in message and "ucf101" in message
    assert "data.frames" in message and "'many'" in message


def test_set_overrides_any_key_with_yaml_values():
    config = load_pipeline(
        PIPELINES / "demo.yaml",
        ["data.resolution=32", "data.splits=[train]", "data.synthetic.videos={train: 3}"],
    )
    assert config.data.resolution == 32 and config.data.splits == ("train",)
    assert config.data.synthetic.videos == {"train": 3}


def test_real_dataset_without_root_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"data.root is required"):
        load_pipeline(PIPELINES / "ucf101.yaml")


def test_odd_resolution_and_bad_override_syntax_are_refused():
    with pytest.raises(ConfigError, match="even"):
        load_pipeline(PIPELINES / "demo.yaml", ["data.resolution=33"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_pipeline(PIPELINES / "demo.yaml", ["data.resolution"])


def test_paper_pipelines_ship_the_paper_autoencoder():
    from stages.train_autoencoder import describe_model

    config = load_pipeline(PIPELINES / "ucf101.yaml", ["data.root=/data"])
    text = describe_model(config.autoencoder.model.model_dump(), config.data.frames, config.data.resolution)
    assert "7.46M encoder + 11.99M decoder" in text and "latent (4, 4, 32, 32)" in text and "192x" in text


AE_STAGES = "stages=[shard, train_autoencoder, cache_latents]"
DIFFUSION_STAGES = "stages=[shard, train_autoencoder, cache_latents, train_uncond]"


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["autoencoder.model.fs=3"], ["autoencoder.model", "fs=3", "power of 2"]),
        (
            ["autoencoder.model.norm_groups=7"],
            ["autoencoder.model", "norm_groups=7", "pick norm_groups dividing"],
        ),
        (
            ["data.resolution=18", "autoencoder.model.fs=4", "autoencoder.loss.disc_layers=1"],
            ["data.resolution=18", "fs=4", "e.g. 16"],
        ),
        (["data.frames=7"], ["data.frames=7", "autoencoder.model.ft=2", "multiple of 2"]),
        (
            ["autoencoder.loss.disc_layers=4"],
            ["autoencoder.loss.disc_layers=4", "at least 48x48", "lower autoencoder.loss.disc_layers"],
        ),
        (
            ["autoencoder.loss={discriminator: spacetime, disc_layers: 4}"],
            ["autoencoder.loss.disc_layers=4", "data.resolution=32"],
        ),
    ],
)
def test_autoencoder_cross_field_errors_surface_when_the_yaml_is_read(overrides, names):
    with pytest.raises(ConfigError) as err:
        load_pipeline(PIPELINES / "demo.yaml", [AE_STAGES, *overrides])
    message = str(err.value)
    assert "demo.yaml" in message
    for name in names:
        assert name in message, (name, message)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (
            ["diffusion.unet.in_channels=3"],
            ["diffusion.unet.in_channels=3", "latent_channels=4", "set diffusion.unet.in_channels=4"],
        ),
        (["diffusion.unet.out_channels=8"], ["diffusion.unet.out_channels=8", "out_channels=4"]),
        (
            ["diffusion.unet.channel_mult=[1, 1, 1, 1, 1, 1]"],
            ["latent frames are 16x16", "downsampling 32", "diffusion.unet.channel_mult"],
        ),
        (["diffusion.unet.norm_groups=5"], ["diffusion.unet", "norm_groups=5"]),
        (["diffusion.unet.prediction=x0"], ["diffusion.unet.prediction", "'eps'", "'v'"]),
        (
            ["diffusion.unet.temporal_attention_resolutions=[2]"],
            ["temporal_attention_resolutions", "repeats [2]"],
        ),
    ],
)
def test_diffusion_cross_field_errors_surface_when_the_yaml_is_read(overrides, names):
    with pytest.raises(ConfigError) as err:
        load_pipeline(PIPELINES / "demo.yaml", [DIFFUSION_STAGES, *overrides])
    message = str(err.value)
    for name in names:
        assert name in message, (name, message)


def test_cross_field_checks_cover_only_the_stages_a_pipeline_runs():
    """A shard-only pipeline may pick a resolution the (unused) autoencoder could not take."""
    config = load_pipeline(PIPELINES / "demo.yaml", ["stages=[shard]", "data.resolution=18", "data.frames=7"])
    assert config.data.resolution == 18
    with pytest.raises(ConfigError, match="data.frames=7"):
        load_pipeline(PIPELINES / "demo.yaml", ["data.frames=7"])


def test_set_through_a_yaml_alias_changes_only_the_section_named():
    # demo.yaml: `train: &diffusion_train` under train_uncond, `train: *diffusion_train` under
    # train_pred and train_interp; one --set must not train all three for 1,500 steps.
    sections = ("train_uncond", "train_pred", "train_interp")
    shipped = load_pipeline(PIPELINES / "demo.yaml")
    steps, lr = shipped.train_uncond.train.steps, shipped.train_uncond.train.lr
    assert all(shipped.section(s).train.steps == steps for s in sections), "demo.yaml shares one anchor"
    config = load_pipeline(PIPELINES / "demo.yaml", ["train_uncond.train.steps=1500"])
    recorded = yaml.safe_load(to_yaml(config))  # the run's config.yaml: what each stage used
    assert [config.section(s).train.steps for s in sections] == [1500, steps, steps]
    assert [recorded[s]["train"]["steps"] for s in sections] == [1500, steps, steps]
    pred = load_pipeline(PIPELINES / "demo.yaml", ["train_pred.train.lr=0.1"])
    assert [pred.section(s).train.lr for s in sections] == [lr, 0.1, lr]

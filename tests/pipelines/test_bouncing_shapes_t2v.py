"""pipelines/bouncing_shapes_t2v.yaml: the synthetic text-control demo, its config and its DAG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from data_prep.decode import decode_video
from data_prep.sources.synthetic import is_heldout, parse_caption
from pipelines.cli import main
from pipelines.config import ConfigError, SampleSection, SyntheticConfig, load_pipeline
from pipelines.runner import PipelineError, plan, run_pipeline
from tests.conftest import PIPELINES

DEMO = PIPELINES / "bouncing_shapes_t2v.yaml"
# The whole DAG at a few steps (add t2v.train.steps and sample.prompts): 2 cores, same code paths.
TINY = [
    "data.synthetic.videos={train: 16, test: 8}",
    "autoencoder.train.steps=4",
    "autoencoder.loss.disc_start=3",
    "autoencoder.train.normalisation_clips=4",
    "t2v.train.checkpoint_every=2",
    "t2v.train.preview_every=2",
    "sampling.steps=2",
    "sample.videos=1",
    "evaluate.real_clips=4",
    "ray.num_cpus=2",
]


def test_demo_trains_t2v_on_its_own_latents_and_prompts_only_held_out_combinations() -> None:
    config = load_pipeline(DEMO)
    inputs = {stage.name: stage.inputs for stage in plan(config)}
    assert inputs["train_t2v"] == ("cache_latents",)
    assert inputs["evaluate_t2v"] == ("sample_t2v", "shard")
    assert config.t2v.random_text_encoder.width == config.diffusion.unet.context_dim
    assert len(config.sample.prompts) == 8
    assert all(is_heldout(*obj) for prompt in config.sample.prompts for obj in parse_caption(prompt))


def test_train_t2v_needs_exactly_one_latent_source() -> None:
    for stages in (["shard", "train_t2v"], ["shard", "train_autoencoder", "cache_latents", "train_t2v"]):
        config = load_pipeline(DEMO, [f"stages={json.dumps(stages)}"])
        if "cache_latents" in stages:
            assert plan(config)[-1].inputs == ("cache_latents",)
        else:
            with pytest.raises(
                PipelineError, match=r"needs exactly one of \['cache_t2v_latents', 'cache_latents'\]"
            ):
                plan(config)


def test_new_options_leave_existing_cache_keys_alone() -> None:
    """Unset, `sample.prompts` and `synthetic.caption_shapes` are not hashed: no stage of the
    existing pipelines reruns because they exist."""
    assert "prompts" not in SampleSection().hashed()
    assert "caption_shapes" not in SyntheticConfig().hashed()
    assert SampleSection(prompts=("a red circle moving left",)).hashed()["prompts"] == [
        "a red circle moving left"
    ]


def test_sample_t2v_without_prompts_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sample_t2v needs sample.prompts"):
        load_pipeline(DEMO, ["sample.prompts=[]"])


@pytest.mark.slow
def test_demo_dag_runs_and_reports_text_alignment(ray_cluster, tmp_path: Path) -> None:
    """The whole DAG at a few steps: the path, not the model's quality (the README has that)."""
    config = load_pipeline(
        DEMO,
        [
            *TINY,
            "t2v.train.steps=2",
            "sample.prompts=[a red circle moving left, an orange square moving left]",
        ],
    )
    record = run_pipeline(config, tmp_path / "work", str(DEMO), echo=lambda *_: None)
    assert {s.status for s in record.stages.values()} == {"done"}

    evaluation = json.loads((Path(record.stages["evaluate_t2v"].output) / "manifest.json").read_text())
    alignment = evaluation["outputs"]["text_alignment"]
    assert alignment["videos"] == 2 and set(alignment) >= {"colour", "shape", "direction", "all"}
    assert evaluation["outputs"]["real_clips"]["all"] == 1.0  # the detector on the held-out test clips

    client = MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    sample_run = client.get_run(record.stages["sample_t2v"].mlflow_run_id)
    assert sample_run.data.params["prompt.000"] == "a red circle moving left"
    folders = [item.path for item in client.list_artifacts(sample_run.info.run_id, "videos")]
    assert folders == ["videos/a_red_circle_moving_left", "videos/an_orange_square_moving_left"]
    evaluate_run = client.get_run(record.stages["evaluate_t2v"].mlflow_run_id)
    assert evaluate_run.data.metrics["text_alignment/colour"] == alignment["colour"]

    # `lvdm sample --prompt` on the same run: an mp4 of the decoded frames and a record of them.
    out = tmp_path / "red.mp4"
    code = main(
        [
            "sample",
            "--workdir",
            str(tmp_path / "work"),
            "--prompt",
            "a red circle moving left",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    about = json.loads(out.with_suffix(".json").read_text())
    frames = decode_video(out.read_bytes()).frames
    assert about["frames"] == len(frames) == about["latent_frames"] * config.autoencoder.model.ft


@pytest.mark.slow
def test_hierarchical_t2v_trains_and_samples_keys_then_fills(ray_cluster, tmp_path: Path) -> None:
    """`t2v.key_stride` through the whole DAG at a few steps: 16-frame clips (8 latents) hold the
    key windows (4 keys 2 apart span 7), and sample_t2v draws 40-frame videos hierarchically."""
    config = load_pipeline(
        DEMO,
        [
            *TINY,
            "data.frames=16",
            "data.synthetic.frames=16",
            "t2v.cond_frames=1",
            "t2v.key_stride=2",
            "t2v.train.steps=3",
            "sample.frames=40",
            "sample.prompts=[a red circle moving left]",
        ],
    )
    record = run_pipeline(config, tmp_path / "work", str(DEMO), echo=lambda *_: None)
    assert {s.status for s in record.stages.values()} == {"done"}
    trained = json.loads((Path(record.stages["train_t2v"].output) / "manifest.json").read_text())
    assert trained["outputs"]["key_stride"] == 2 and trained["outputs"]["unet_config"]["max_stride"] == 2
    sampled = Path(record.stages["sample_t2v"].output)
    about = json.loads((sampled / "samples.json").read_text())
    assert (about["frames"], about["strategy"]) == (40, "hierarchical")
    video = about["prompts"]["a red circle moving left"]["videos"][0]
    assert len(decode_video((sampled / video).read_bytes()).frames) == 40

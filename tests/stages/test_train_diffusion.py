"""train_uncond -> train_pred / train_interp on Ray Train: killed mid-way, resumed, tracked;
then sample and evaluate on the trained models."""

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from pipelines.config import load_pipeline
from pipelines.runner import PipelineError, run_pipeline
from stages.ray_training import FAULT_ENV
from stages.unet_file import load_unet
from tests.conftest import PIPELINES, TINY_AUTOENCODER, TINY_DEMO, TINY_DIFFUSION

STAGES = (
    "stages=[shard, train_autoencoder, cache_latents, train_uncond, train_pred, train_interp,"
    " sample, evaluate]"
)
# Two 20-frame videos per strategy, evaluated in 10-frame windows (I3D needs 9+) against 4 real clips.
SAMPLE = [
    "data.synthetic.videos={train: 6, test: 4}",
    "sample={videos: 2, frames: 20, settings: [default, neither], contact_columns: 4}",
    "evaluate={window: 10, real_clips: 4, batch_size: 4}",
]
# No LPIPS and no GAN: the autoencoder only has to make latents for the diffusion stages.
CHEAP_AUTOENCODER = ["autoencoder.loss={perceptual_weight: 0, disc_start: 1000}"]


def _run(workdir: Path, **kwargs):
    overrides = TINY_DEMO + TINY_AUTOENCODER + CHEAP_AUTOENCODER + TINY_DIFFUSION + SAMPLE + [STAGES]
    overrides += ["train_uncond.train.snapshot_every=1"]
    config = load_pipeline(PIPELINES / "demo.yaml", overrides)
    return run_pipeline(config, workdir, "demo.yaml", echo=lambda *_: None, **kwargs)


@pytest.mark.pretrained  # the evaluate stage runs the real I3D
def test_diffusion_stages_resume_after_a_crash_then_sample_and_evaluate(
    ray_cluster, pretrained_home, tmp_path, monkeypatch
):
    monkeypatch.setenv(FAULT_ENV, "train_uncond:3")  # crash after step 3; checkpoint at step 2
    with pytest.raises(PipelineError, match="train_uncond"):
        _run(tmp_path)
    failed = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
    assert failed["stages"]["train_uncond"]["status"] == "failed"
    uncond_dir = Path(failed["stages"]["train_uncond"]["output"])
    assert not (uncond_dir / "unet.pt").exists() and not (uncond_dir / "manifest.json").exists()

    monkeypatch.delenv(FAULT_ENV)
    record = _run(tmp_path, run_id=failed["run_id"])
    assert [s.status for s in record.stages.values()] == ["done"] * 8
    manifests = {
        name: json.loads((Path(record.stages[name].output) / "manifest.json").read_text())["outputs"]
        for name in ("train_uncond", "train_pred", "train_interp")
    }
    assert manifests["train_uncond"]["resumed_from_step"] == 2 and manifests["train_uncond"]["steps"] == 4
    assert manifests["train_pred"]["resumed_from_step"] == 0

    # snapshot_every: the EMA weights of every step, steps 1-3 written before the crash (3 again
    # after the resume from 2); the last one is the stage's unet.pt. train_pred kept none.
    uncond_dir = Path(record.stages["train_uncond"].output)
    assert manifests["train_uncond"]["snapshots"] == [
        {"step": s, "file": f"snapshots/unet-step-{s:07d}.pt"} for s in (1, 2, 3, 4)
    ]
    assert manifests["train_pred"]["snapshots"] == []
    final = load_unet(uncond_dir / "unet.pt")[0].state_dict()
    last, meta = load_unet(uncond_dir / "snapshots/unet-step-0000004.pt")
    first = load_unet(uncond_dir / "snapshots/unet-step-0000001.pt")[0].state_dict()
    assert meta["step"] == 4 and all(torch.equal(v, final[k]) for k, v in last.state_dict().items())
    assert not all(torch.equal(v, final[k]) for k, v in first.items())

    # The saved networks rebuild from their files; the conditional ones take the mask channel.
    for name, channels, frames in (("train_uncond", 4, 4), ("train_pred", 5, 2), ("train_interp", 5, 3)):
        model, meta = load_unet(Path(record.stages[name].output) / "unet.pt")
        assert model.config.in_channels == channels and meta["step"] == 4
        assert sum(p.numel() for p in model.parameters()) == manifests[name]["parameters"]
        if channels == 5:
            assert model.config.temporal_length == frames and model.config.max_noise_level == 250
            with torch.no_grad():
                out = model(torch.randn(1, 5, 3, 8, 8), torch.tensor([10]), noise_level=torch.tensor([3]))
            assert out.shape == (1, 4, 3, 8, 8)

    check = manifests["train_pred"]["prediction_check"]
    assert set(check) >= {"prediction", "prediction_unconditioned", "unconditional_model", "repeat_last"}
    assert all(value >= 0 for value in check.values())

    client = MlflowClient(record.mlflow_tracking_uri)
    uncond_run = record.stages["train_uncond"].mlflow_run_id
    assert uncond_run == failed["stages"]["train_uncond"]["mlflow_run_id"], "resume must reattach"
    metrics = client.get_run(uncond_run).data.metrics
    for name in ("loss", "grad_norm", "lr", "latents_per_s", "preview/sample_std"):
        assert name in metrics, name
    assert any(name.startswith("loss/t") for name in metrics)
    assert sorted({m.step for m in client.get_metric_history(uncond_run, "loss")}) == [1, 2, 3, 4]
    previews = [a.path for a in client.list_artifacts(uncond_run, "previews")]
    assert previews and all(p.endswith(".mp4") for p in previews)
    pred_metrics = client.get_run(record.stages["train_pred"].mlflow_run_id).data.metrics
    assert "preview/latent_mse" in pred_metrics and "check/prediction" in pred_metrics
    interp_run = record.stages["train_interp"].mlflow_run_id
    assert [a.path for a in client.list_artifacts(interp_run, "checkpoint")] == ["checkpoint/unet.pt"]

    # sample: every (setting, strategy) job wrote its videos and a contact sheet.
    sample = json.loads((Path(record.stages["sample"].output) / "manifest.json").read_text())["outputs"]
    assert sorted(sample["jobs"]) == [
        "default-autoregressive", "default-hierarchical", "neither-autoregressive", "neither-hierarchical"
    ]  # fmt: skip
    for job in sample["jobs"].values():
        assert len(job["videos"]) == 2
        assert (Path(record.stages["sample"].output) / job["contact_sheet"]).is_file()

    # evaluate: FVD per 10-frame window (2 windows) per job, the floor, synthetic motion, plots.
    evaluate_dir = Path(record.stages["evaluate"].output)
    metrics = json.loads((evaluate_dir / "metrics.json").read_text())
    assert metrics["features"] == "i3d-kinetics400-logits-time-averaged" and metrics["real_clips"] == 4
    assert metrics["real_floor"]["clips"] == 2
    for job in metrics["jobs"].values():
        assert [w["start"] for w in job["fvd_curve"]] == [0, 10]
        assert all(w["fvd"] >= 0 for w in job["fvd_curve"])
        assert len(job["synthetic"]["windows"]) == 2
    assert (evaluate_dir / "fvd_over_time.png").is_file()
    assert (evaluate_dir / "synthetic_motion.png").is_file()
    evaluate_run = record.stages["evaluate"].mlflow_run_id
    assert "default-hierarchical/fvd" in client.get_run(evaluate_run).data.metrics
    assert {a.path for a in client.list_artifacts(evaluate_run, "evaluation")} >= {
        "evaluation/metrics.json", "evaluation/fvd_over_time.png"
    }  # fmt: skip


def test_one_shared_network_trains_and_samples_both_strategies_without_the_other_two(ray_cluster, tmp_path):
    """train_pred.roles [uncond, pred, interp]: no train_uncond, no train_interp; the shared
    network starts from scratch, learns the three roles, and `sample` draws first clips from its
    unconditional mode and fills between keys with it."""
    stages = "stages=[shard, train_autoencoder, cache_latents, train_pred, sample]"
    overrides = TINY_DEMO + TINY_AUTOENCODER + CHEAP_AUTOENCODER + TINY_DIFFUSION + SAMPLE + [stages]
    overrides += ["train_pred.roles=[uncond, pred, interp]", "sample.settings=[default]"]
    config = load_pipeline(PIPELINES / "demo.yaml", overrides)
    record = run_pipeline(config, tmp_path, "demo.yaml", echo=lambda *_: None)
    assert [s.status for s in record.stages.values()] == ["done"] * 5
    pred_dir = Path(record.stages["train_pred"].output)
    manifest = json.loads((pred_dir / "manifest.json").read_text())
    assert manifest["inputs"] == {"cache_latents": manifest["inputs"]["cache_latents"]}
    assert manifest["outputs"]["task"]["roles"] == ["uncond", "pred", "interp"]
    model, _ = load_unet(pred_dir / "unet.pt")
    # interpolation windows fill between keys 3 latents apart: 4 latents, the longest role's.
    assert model.config.in_channels == 5 and model.config.temporal_length == 4
    assert model.config.max_stride == 3
    assert "unconditional_model" not in manifest["outputs"]["prediction_check"]

    sample = json.loads((Path(record.stages["sample"].output) / "manifest.json").read_text())["outputs"]
    assert sorted(sample["jobs"]) == ["default-autoregressive", "default-hierarchical"]
    for job in sample["jobs"].values():
        assert len(job["videos"]) == 2
        for video in job["videos"]:
            assert (Path(record.stages["sample"].output) / video).stat().st_size > 0


def test_a_pipeline_that_samples_needs_an_interpolation_network():
    stages = "stages=[shard, train_autoencoder, cache_latents, train_uncond, train_pred, sample]"
    with pytest.raises(ValueError, match="list train_interp in `stages`, or train a shared network"):
        load_pipeline(PIPELINES / "demo.yaml", TINY_DEMO + [stages])
    with pytest.raises(ValueError, match="distinct roles, and pred among them"):
        load_pipeline(PIPELINES / "demo.yaml", TINY_DEMO + ["train_pred.roles=[uncond, interp]"])

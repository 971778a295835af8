"""A training stage stopped on one Ray Train worker finishes on two from its checkpoint (issue 13).

Worker counts are execution settings: out of the cache key and the Ray Train run name, so
`lvdm resume RUN --set train_uncond.train.num_workers=2` finds the same stage folder and the
newest checkpoint. The per-worker batch is kept; the global batch doubles.
"""

import json
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.config import load_pipeline
from pipelines.runner import PipelineError, run_pipeline
from stages.ray_training import FAULT_ENV
from tests.conftest import PIPELINES, TINY_AUTOENCODER, TINY_DEMO, TINY_DIFFUSION

OVERRIDES = (
    TINY_DEMO
    + TINY_AUTOENCODER
    + ["autoencoder.loss={perceptual_weight: 0, disc_start: 1000}"]  # latents only: no LPIPS, no GAN
    + TINY_DIFFUSION
    + ["stages=[shard, train_autoencoder, cache_latents, train_uncond]"]
)


def test_training_stopped_on_one_worker_finishes_on_two_from_its_checkpoint(
    ray_cluster, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(FAULT_ENV, "train_uncond:3")  # crash after step 3; checkpoint at step 2
    config = load_pipeline(PIPELINES / "demo.yaml", OVERRIDES)
    assert config.train_uncond.train.num_workers == 1
    with pytest.raises(PipelineError, match="train_uncond"):
        run_pipeline(config, tmp_path, "demo.yaml", echo=lambda *_: None)
    failed = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
    stage_dir = Path(failed["stages"]["train_uncond"]["output"])

    monkeypatch.delenv(FAULT_ENV)
    # A result setting is refused on resume: it would start other stages under this run's name.
    assert (
        main(["resume", failed["run_id"], "--workdir", str(tmp_path), "--set", "train_uncond.train.lr=1"])
        == 2
    )
    assert "changes the result of stage(s) ['train_uncond']" in capsys.readouterr().err

    resize = ["--set", "train_uncond.train.num_workers=2"]
    assert main(["resume", failed["run_id"], "--workdir", str(tmp_path), *resize]) == 0
    assert "[train_uncond] cached" not in capsys.readouterr().out
    run = json.loads((tmp_path / "runs" / failed["run_id"] / "run.json").read_text())
    assert run["status"] == "done" and Path(run["stages"]["train_uncond"]["output"]) == stage_dir
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["config"]["train_uncond"]["train"]["num_workers"] == 2
    assert manifest["outputs"]["resumed_from_step"] == 2 and manifest["outputs"]["steps"] == 4
    # The record now says what ran, so a later plain `lvdm resume` keeps two workers.
    recorded = load_pipeline(tmp_path / "runs" / failed["run_id"] / "config.yaml")
    assert recorded.train_uncond.train.num_workers == 2

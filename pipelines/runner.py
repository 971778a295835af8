"""The pipeline runner: DAG order, cache keys, manifests, MLflow runs, resume.

Ray Workflows is gone from Ray, and a pipeline of half a dozen coarse stages does not need a
workflow engine: completion is a `manifest.json` in a stage's output folder, so the runner
is a loop over stages in dependency order that skips the complete ones.
"""

from __future__ import annotations

import json
import os
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from data_prep.atomic import FolderLockedError, exclusive_folder, remove_stale_temporaries, write_json_atomic
from pipelines.config import PipelineConfig, to_yaml
from pipelines.run_record import RunRecord, StageState, new_run_id
from stages import tracking
from stages.contract import MANIFEST, Stage, StageContext, cache_key, read_manifest
from stages.registry import STAGES

STAGE_STATE = "stage.json"  # in-progress marker holding the MLflow run id, for reattaching


class PipelineError(RuntimeError):
    """A stage failed; the message names it. The run record holds the traceback."""


def plan(config: PipelineConfig, until: str | None = None) -> list[Stage]:
    """Stages in dependency order, cut to `until` and what it needs."""
    unknown = [name for name in config.stages if name not in STAGES]
    if unknown:
        raise PipelineError(f"stages: unknown stage(s) {unknown}; known stages: {sorted(STAGES)}")
    order: list[Stage] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise PipelineError(f"stages: dependency cycle {' -> '.join(chain + (name,))}")
        if any(s.name == name for s in order):
            return
        stage = STAGES[name]
        for upstream in stage.inputs:
            if upstream not in config.stages:
                raise PipelineError(
                    f"stages: {name!r} needs {upstream!r}, which the pipeline does not list; "
                    "add it to `stages`"
                )
            visit(upstream, chain + (name,))
        order.append(stage)

    targets = config.stages
    if until is not None:
        if until not in config.stages:
            raise PipelineError(f"--until {until!r}: not a stage of this pipeline ({list(config.stages)})")
        targets = (until,)
    for name in targets:
        visit(name, ())
    return order


def stage_keys(stages: list[Stage], config: PipelineConfig) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in stages:
        keys[stage.name] = cache_key(stage, config, {u: keys[u] for u in stage.inputs})
    return keys


def stage_dir(workdir: Path, stage: Stage, key: str) -> Path:
    return workdir / "stages" / f"{stage.name}-{key}"


def run_pipeline(
    config: PipelineConfig,
    workdir: Path,
    pipeline_path: str,
    until: str | None = None,
    run_id: str | None = None,
    echo=print,
) -> RunRecord:
    """Run (or, given `run_id`, resume) a pipeline; returns the final run record."""
    workdir = workdir.resolve()
    stages = plan(config, until)
    keys = stage_keys(stages, config)
    record = _open_record(config, workdir, pipeline_path, run_id)
    record.until = until
    for stage in stages:
        state = record.stages.get(stage.name) or StageState()
        state.key, state.output = keys[stage.name], str(stage_dir(workdir, stage, keys[stage.name]))
        if state.status != "done" or read_manifest(Path(state.output)) is None:
            state.status, state.error = "pending", None
        record.stages[stage.name] = state
    record.status, record.error, record.pid = "running", None, os.getpid()
    record.save()

    uri = config.mlflow.tracking_uri or tracking.default_tracking_uri(workdir)
    try:
        _check_tracking_server(uri)
        experiment_id = tracking.ensure_experiment(uri, config.mlflow.experiment or config.name, workdir)
        parent = tracking.start_run(
            uri,
            experiment_id,
            name=f"{config.name}-{record.run_id}",
            tags={"lvdm.pipeline": config.name, "lvdm.run_id": record.run_id},
            reattach_run_id=record.mlflow_parent_run_id,
        )
    except Exception as err:
        record.status, record.error = "failed", str(err)
        record.save()
        if isinstance(err, PipelineError):
            raise
        raise PipelineError(f"mlflow.tracking_uri {uri}: {type(err).__name__}: {err}") from err
    record.mlflow_parent_run_id, record.mlflow_tracking_uri = parent.run_id, uri
    record.save()
    tracking.log_artifact(parent, record.folder / "config.yaml")

    manifests: dict[str, dict] = {}
    try:
        for stage in stages:
            manifests[stage.name] = _run_stage(
                stage, config, keys, manifests, record, parent, experiment_id, echo
            )
    except BaseException as err:
        record.status = "failed"
        record.error = f"{type(err).__name__}: {err}"
        record.save()
        tracking.end_run(parent, "FAILED" if not isinstance(err, KeyboardInterrupt) else "KILLED")
        raise
    record.status = "done"
    record.save()
    tracking.end_run(parent, "FINISHED")
    return record


def _check_tracking_server(uri: str) -> None:
    """Fail in seconds, naming the URI, when an MLflow server does not answer.

    MlflowClient retries a refused connection with backoff for minutes and then raises a
    traceback about urllib3; any HTTP answer (even 404 from a proxy) counts as reachable.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        raise PipelineError(
            f"mlflow.tracking_uri {uri}: no MLflow server answers there "
            f"({getattr(err, 'reason', err)}). Start it (`mlflow server --host 127.0.0.1 --port PORT ...`) "
            "or fix mlflow.tracking_uri (`--set mlflow.tracking_uri=...`; leave it unset for the "
            "embedded store in the workdir)"
        ) from None


def _open_record(config: PipelineConfig, workdir: Path, pipeline_path: str, run_id: str | None) -> RunRecord:
    if run_id is not None:
        record = RunRecord.load(workdir, run_id)
    else:
        record = RunRecord(
            run_id=new_run_id(), pipeline=pipeline_path, name=config.name, workdir=str(workdir)
        )
    record.folder.mkdir(parents=True, exist_ok=True)
    # Rewritten on every resume: `lvdm resume RUN --set <section>.train.num_workers=16` changes
    # execution settings only (same cache keys), and the record must say what runs now.
    config_path = record.folder / "config.yaml"
    tmp = config_path.with_name(".config.yaml.tmp")
    tmp.write_text(to_yaml(config))
    tmp.replace(config_path)
    return record


def _run_stage(
    stage: Stage,
    config: PipelineConfig,
    keys: Mapping[str, str],
    manifests: Mapping[str, dict],
    record: RunRecord,
    parent: tracking.Tracking,
    experiment_id: str,
    echo,
) -> dict:
    state = record.stages[stage.name]
    out_dir = Path(state.output)
    manifest = read_manifest(out_dir)
    if manifest is not None:
        state.status, state.mlflow_run_id = (
            ("done" if state.status == "done" else "cached"),
            manifest.get("mlflow_run_id"),
        )
        record.save()
        echo(f"[{stage.name}] cached: {out_dir}")
        return manifest

    # One writer per stage folder, for the stage's whole run: a second run on this workdir
    # must not take this run's live temporaries for a killed run's leftovers.
    owner = {"run_id": record.run_id, "stage": stage.name}
    try:
        with exclusive_folder(out_dir, owner):
            return _run_locked_stage(
                stage, config, keys, manifests, record, parent, experiment_id, echo, out_dir
            )
    except FolderLockedError as err:
        state.status, state.error = "failed", str(err)
        record.save()
        raise PipelineError(f"stage {stage.name!r}: {err}") from None


def _run_locked_stage(
    stage: Stage,
    config: PipelineConfig,
    keys: Mapping[str, str],
    manifests: Mapping[str, dict],
    record: RunRecord,
    parent: tracking.Tracking,
    experiment_id: str,
    echo,
    out_dir: Path,
) -> dict:
    state = record.stages[stage.name]
    finished = read_manifest(out_dir)  # by a run that held the lock just before this one
    if finished is not None:
        state.status, state.mlflow_run_id = "cached", finished.get("mlflow_run_id")
        record.save()
        echo(f"[{stage.name}] cached: {out_dir}")
        return finished
    for path in remove_stale_temporaries(out_dir):
        echo(f"[{stage.name}] removed {path.name}, left half-written by an earlier, killed run")
    in_progress = read_json_or_none(out_dir / STAGE_STATE) or {}
    stage_tracking = tracking.start_run(
        parent.tracking_uri,
        experiment_id,
        name=f"{stage.name}-{keys[stage.name]}",
        tags={"lvdm.stage": stage.name, "lvdm.cache_key": keys[stage.name], "lvdm.run_id": record.run_id},
        parent_run_id=parent.run_id,
        reattach_run_id=in_progress.get("mlflow_run_id"),
    )
    write_json_atomic(out_dir / STAGE_STATE, {"mlflow_run_id": stage_tracking.run_id})
    tracking.log_params(
        stage_tracking, {s: config.section(s).model_dump(mode="json") for s in stage.sections}
    )
    state.status, state.started, state.ended = "running", time.time(), None
    state.mlflow_run_id = stage_tracking.run_id
    record.save()
    echo(f"[{stage.name}] running -> {out_dir}")

    context = StageContext(
        name=stage.name,
        key=keys[stage.name],
        config=config,
        out_dir=out_dir,
        inputs={name: manifests[name] for name in stage.inputs},
        tracking=stage_tracking,
        run_name=f"{stage.name}-{keys[stage.name]}",
    )
    try:
        outputs = stage.run(context)
    except BaseException as err:
        state.status, state.ended = "failed", time.time()
        state.error = "".join(traceback.format_exception(err))[-4000:]
        record.save()
        tracking.end_run(stage_tracking, "FAILED" if not isinstance(err, KeyboardInterrupt) else "KILLED")
        if isinstance(err, Exception):
            raise PipelineError(f"stage {stage.name!r} failed: {type(err).__name__}: {err}") from err
        raise

    state.ended = time.time()
    manifest = {
        "stage": stage.name,
        "key": keys[stage.name],
        "config": {s: config.section(s).model_dump(mode="json") for s in stage.sections},
        "inputs": {name: keys[name] for name in stage.inputs},
        "outputs": outputs,
        "mlflow_run_id": stage_tracking.run_id,
        "run_id": record.run_id,
        "duration_s": state.ended - state.started,
    }
    write_json_atomic(out_dir / MANIFEST, manifest)
    tracking.log_artifact(stage_tracking, out_dir / MANIFEST)
    tracking.end_run(stage_tracking, "FINISHED")
    state.status = "done"
    record.save()
    echo(f"[{stage.name}] done in {state.ended - state.started:.1f}s")
    manifest["out_dir"] = str(out_dir)
    return manifest


def read_json_or_none(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None

"""The pipeline runner: DAG order, cache keys, manifests, MLflow runs, resume.

Ray Workflows is gone from Ray, and a pipeline of half a dozen coarse stages does not need a
workflow engine: completion is a `manifest.json` in a stage's output folder, so the runner
walks the stages in dependency order, skips the complete ones, and runs at the same time
those whose inputs are complete (`train_pred` and `train_interp` both need only
`train_uncond`), each in a driver thread that waits on its Ray work.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import socket
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from data_prep import storage
from data_prep.atomic import FolderLockedError, exclusive_folder, remove_stale_temporaries
from lvdm.credentials import basic_auth, split_userinfo, strip_userinfo, userinfo
from pipelines.config import PipelineConfig, TrainSection, to_yaml
from pipelines.run_record import RunRecord, StageState, new_run_id
from stages import tracking
from stages.cluster_check import (
    WorkdirUnreachableError,
    alive_nodes,
    autoscaler_running,
    bundle_text,
    check_workdir_reach,
    fit_together,
    worker_bundle,
)
from stages.contract import MANIFEST, Stage, StageContext, cache_key, read_manifest
from stages.registry import STAGES

STAGE_STATE = "stage.json"  # in-progress marker holding the MLflow run id, for reattaching


class PipelineError(RuntimeError):
    """A stage failed; the message names it. The run record holds the traceback."""


def plan(
    config: PipelineConfig, until: str | None = None, registry: Mapping[str, Stage] = STAGES
) -> list[Stage]:
    """Stages in dependency order, cut to `until` and what it needs."""
    unknown = [name for name in config.stages if name not in registry]
    if unknown:
        raise PipelineError(f"stages: unknown stage(s) {unknown}; known stages: {sorted(registry)}")
    order: list[Stage] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise PipelineError(f"stages: dependency cycle {' -> '.join(chain + (name,))}")
        if any(s.name == name for s in order):
            return
        stage = _choose_inputs(registry[name], config.stages)
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


def _choose_inputs(stage: Stage, listed: tuple[str, ...]) -> Stage:
    """`stage` with each of its `one_of` groups resolved to the one member the pipeline lists,
    and those of its `optional_inputs` the pipeline lists."""
    chosen = [name for name in stage.optional_inputs if name in listed]
    for group in stage.one_of:
        present = [name for name in group if name in listed]
        if len(present) != 1:
            raise PipelineError(
                f"stages: {stage.name!r} needs exactly one of {list(group)}; the pipeline lists "
                f"{present or 'none'}: list one of them in `stages`"
            )
        chosen += present
    if not chosen:
        return stage
    return dataclasses.replace(stage, inputs=stage.inputs + tuple(chosen), one_of=(), optional_inputs=())


def stage_keys(stages: list[Stage], config: PipelineConfig) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in stages:
        keys[stage.name] = cache_key(stage, config, {u: keys[u] for u in stage.inputs})
    return keys


def stage_dir(workdir: storage.Location, stage: Stage, key: str) -> str:
    return storage.join(workdir, "stages", f"{stage.name}-{key}")


def run_pipeline(
    config: PipelineConfig,
    workdir: storage.Location,
    pipeline_path: str,
    until: str | None = None,
    run_id: str | None = None,
    echo: Callable[[str], None] = print,
    registry: Mapping[str, Stage] = STAGES,
) -> RunRecord:
    """Run (or, given `run_id`, resume) a pipeline; returns the final run record."""
    workdir = storage.absolute(workdir)
    stages = plan(config, until, registry)
    keys = stage_keys(stages, config)
    record = _open_record(config, workdir, pipeline_path, run_id)
    record.until = until
    for stage in stages:
        state = record.stages.get(stage.name) or StageState()
        state.key, state.output = keys[stage.name], stage_dir(workdir, stage, keys[stage.name])
        if state.status != "done" or read_manifest(state.output) is None:
            state.status, state.error = "pending", None
        record.stages[stage.name] = state
    record.status, record.error, record.pid = "running", None, os.getpid()
    record.host = socket.gethostname()  # a resume or resubmission may drive it from elsewhere
    record.save()

    uri = _adopt_credentials(config.mlflow.tracking_uri) or tracking.default_tracking_uri(workdir)
    try:
        _check_tracking_server(uri)
        experiment_id = tracking.ensure_experiment(uri, config.mlflow.experiment or config.name, workdir)
        parent = tracking.start_run(
            uri,
            experiment_id,
            name=f"{config.name}-{record.run_id}",
            tags={"lvdm.pipeline": config.name, "lvdm.run_id": record.run_id},
            reattach_run_id=record.mlflow_parent_run_id,
            warn=lambda message: echo(f"warning: {message}"),
        )
    except Exception as err:
        record.status, record.error = "failed", strip_userinfo(str(err))
        record.save()
        if isinstance(err, PipelineError):
            raise
        message = f"mlflow.tracking_uri {uri}: {type(err).__name__}: {err}"
        raise PipelineError(strip_userinfo(message)) from err
    record.mlflow_parent_run_id, record.mlflow_tracking_uri = parent.run_id, uri
    record.mlflow_experiment_id = experiment_id
    record.save()
    echo(f"MLflow: {tracking.where_to_look(uri, experiment_id)}")
    tracking.log_artifact(parent, storage.join(record.folder, "config.yaml"))

    run = _Run(config, keys, record, parent, experiment_id, _one_line_at_a_time(echo))
    try:
        _run_stages(run, stages)
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


@dataclass(frozen=True)
class _Run:
    """What every stage of one pipeline run shares."""

    config: PipelineConfig
    keys: Mapping[str, str]
    record: RunRecord
    parent: tracking.Tracking
    experiment_id: str
    echo: Callable[[str], None]
    # Set on Ctrl-C once the running stages are recorded killed: their threads, whose Ray calls
    # fail as the process shuts Ray down, must not overwrite that with the shutdown's error.
    abandoned: threading.Event = field(default_factory=threading.Event)


def _run_stages(run: _Run, stages: list[Stage]) -> None:
    """Start every stage whose inputs are complete; as each ends, start what it unblocked.

    A stage is a Python function on the driver that submits Ray work (tasks, a Ray Train fit) and
    waits for it, so one thread per running stage is all the concurrency the driver needs. Two
    training stages start together only when the cluster holds both worker groups (`_has_room`);
    otherwise the second starts when the first ends. A failed stage stops only the stages that
    need it ("blocked"): the others run to their end, then the run fails naming every failure.
    """
    manifests: dict[str, dict] = {}
    failures: dict[str, BaseException] = {}
    blocked: dict[str, list[str]] = {}  # stage -> its inputs that failed or were blocked
    waiting = list(stages)  # in dependency order: a stage comes after all its inputs
    holding: dict[str, list[dict[str, float]]] = {}  # running stage -> its Ray Train workers
    ended: queue.SimpleQueue[tuple[str, dict | BaseException]] = queue.SimpleQueue()
    told_to_wait: set[str] = set()
    try:
        while waiting or holding:
            for stage in list(waiting):
                lost = [name for name in stage.inputs if name in failures or name in blocked]
                if lost:
                    waiting.remove(stage)
                    blocked[stage.name] = lost
                    _block(run, stage, lost)
                elif all(name in manifests for name in stage.inputs):
                    if _start(run, stage, manifests, holding, ended, told_to_wait):
                        waiting.remove(stage)
            if not holding:
                # Nothing running: the stages left (if any) were just blocked. A waiting stage
                # with nothing running cannot happen: the first waiting stage's inputs are all
                # resolved (dependency order), and with an idle cluster it has room to start.
                assert not waiting, f"stages {[s.name for s in waiting]} can never start"
                break
            name, outcome = ended.get()
            del holding[name]
            if isinstance(outcome, dict):
                manifests[name] = outcome
            elif isinstance(outcome, Exception):
                failures[name] = outcome
            else:
                raise outcome  # SystemExit and the like from a stage: stop as before
    except BaseException as err:
        _abandon(run, holding, err)
        raise
    if failures:
        messages = [_failure_message(name, err) for name, err in failures.items()]
        if blocked:
            messages.append(
                "not started: "
                + ", ".join(f"{name} (needs {', '.join(lost)})" for name, lost in blocked.items())
            )
        raise PipelineError("; ".join(messages)) from next(iter(failures.values()))


def _start(
    run: _Run,
    stage: Stage,
    manifests: Mapping[str, dict],
    holding: dict[str, list[dict[str, float]]],
    ended: queue.SimpleQueue,
    told_to_wait: set[str],
) -> bool:
    """Start `stage` in a thread, unless its workers must wait for a running stage's to end."""
    complete = read_manifest(run.record.stages[stage.name].output) is not None
    workers = [] if complete else _worker_group(stage, run.config)
    if not _has_room(workers, holding):
        if stage.name not in told_to_wait:
            told_to_wait.add(stage.name)
            training = ", ".join(name for name, group in holding.items() if group)
            run.echo(
                f"[{stage.name}] waits for {training} to finish: the cluster has no room for "
                f"{len(workers)} more Ray Train worker(s) of {bundle_text(workers[0])} beside theirs"
            )
        return False
    if not complete:
        from stages.ray_session import ensure_ray

        # Here, not in the stage's thread: ray.init sets its SIGTERM handler in the main thread only.
        ensure_ray(run.config.ray.address, run.config.ray.num_cpus)
        try:
            check_workdir_reach(run.record.workdir, alive_nodes(), autoscaler_running())
        except WorkdirUnreachableError as err:
            raise PipelineError(str(err)) from None
    holding[stage.name] = workers
    inputs = {name: manifests[name] for name in stage.inputs}
    # Daemon: Ctrl-C reaches the main thread only, and a stage thread left waiting on a fit
    # must not keep the interrupted process alive; Ray ends the driver's workers with it.
    threading.Thread(
        target=_stage_thread, args=(run, stage, inputs, ended), name=f"stage-{stage.name}", daemon=True
    ).start()
    return True


def _stage_thread(run: _Run, stage: Stage, inputs: Mapping[str, dict], ended: queue.SimpleQueue) -> None:
    """Run one stage and always report how it ended: the main thread waits for that report."""
    outcome: dict | BaseException = RuntimeError(f"stage {stage.name!r} ended without a result")
    try:
        outcome = _run_stage(run, stage, inputs)
    except BaseException as err:
        outcome = err
        state = run.record.stages[stage.name]
        if state.status != "failed" and not run.abandoned.is_set():  # failed outside the stage's code
            state.status, state.ended = "failed", time.time()
            state.error = "".join(traceback.format_exception(err))[-4000:]
            run.record.save()
    finally:
        ended.put((stage.name, outcome))


def _worker_group(stage: Stage, config: PipelineConfig) -> list[dict[str, float]]:
    """The Ray Train workers a stage asks for: a stage reading a section with a `train`
    subsection trains on its `num_workers`; none for a stage of Ray tasks: Ray queues tasks
    by itself, and `check_tasks` has made sure each fits on a node."""
    for name in stage.sections:
        train = getattr(config.section(name), "train", None)
        if isinstance(train, TrainSection):
            return [worker_bundle(train)] * train.num_workers
    return []


def _has_room(workers: list[dict[str, float]], holding: Mapping[str, list[dict[str, float]]]) -> bool:
    others = [group for group in holding.values() if group]
    if not workers or not others:
        return True  # alone, a training stage's own check_training says whether it can ever fit
    if autoscaler_running():
        return True  # its waiting worker group is what makes the autoscaler add nodes
    return fit_together([*others, workers], alive_nodes())


def _block(run: _Run, stage: Stage, lost: list[str]) -> None:
    state = run.record.stages[stage.name]
    state.status, state.error = "blocked", f"not started: needs {', '.join(lost)}, which did not finish"
    run.record.save()
    run.echo(f"[{stage.name}] {state.error}")


def _abandon(run: _Run, running: Iterable[str], err: BaseException) -> None:
    """Ctrl-C (or a stage's SystemExit): record the running stages killed and end their MLflow
    runs; their daemon threads end with the process, and `lvdm resume` continues them."""
    run.abandoned.set()
    for name in running:
        state = run.record.stages[name]
        if state.status != "running":
            continue
        state.status, state.ended, state.error = "failed", time.time(), f"{type(err).__name__}: interrupted"
        if state.mlflow_run_id:
            tracking.end_run(tracking.Tracking(run.parent.tracking_uri, state.mlflow_run_id), "KILLED")
    run.record.save()


def _failure_message(name: str, err: BaseException) -> str:
    return str(err) if isinstance(err, PipelineError) else f"stage {name!r}: {type(err).__name__}: {err}"


def _one_line_at_a_time(echo: Callable[[str], None]) -> Callable[[str], None]:
    """`echo` for concurrent stages: print writes a line and its newline in two calls."""
    lock = threading.Lock()

    def locked(line: str) -> None:
        with lock:
            echo(line)

    return locked


def _adopt_credentials(uri: str | None) -> str | None:
    """The tracking URI without its `user:password@`, which move to MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD, where MLflow's client reads them (Ray workers started after this
    inherit them; a cluster's own need them set there). Left in the URI they would be printed by
    MLflow ("View run at …"), pickled into Ray Train's saved trainer and written into run.json."""
    found = userinfo(uri) if uri else None
    if found is None:
        return uri
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = found
    return strip_userinfo(uri)


def _check_tracking_server(uri: str) -> None:
    """Fail in seconds, naming the URI, when an MLflow server does not answer or refuses us.

    MlflowClient retries a refused connection with backoff for minutes and then raises a
    traceback about urllib3. The probe is an API call, not `/health`: MLflow 3 answers `/health`
    to any Host header but refuses API calls whose Host it does not allow (403), so a server can
    look healthy while every log call fails. Any other HTTP answer counts as reachable.

    Credentials go as MLflow sends them: `user:password@` in the URI, else MLFLOW_TRACKING_USERNAME
    and MLFLOW_TRACKING_PASSWORD, as a Basic `Authorization` header (urllib would take the
    userinfo for a port, and print it). No message shows them.
    """
    if not uri.startswith(("http://", "https://")):
        return
    bare, headers = split_userinfo(uri)
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not headers and user and password:
        headers = basic_auth(user, password)
    shown = strip_userinfo(uri)
    probe = bare.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        urllib.request.urlopen(urllib.request.Request(probe, headers=headers), timeout=10).close()
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        if err.code == 401:
            given = "were refused" if headers else "are needed"
            raise PipelineError(
                f"mlflow.tracking_uri {shown}: the server asks for credentials, and they {given} "
                f"(HTTP 401). Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (on the cluster "
                "too, for `lvdm submit`), or give them once as --set mlflow.tracking_uri=https://USER:"
                "PASSWORD@HOST; they are never written into run records or config.yaml"
            ) from None
        if err.code == 403 and "Host header" in body:
            host = urllib.parse.urlsplit(bare).netloc
            raise PipelineError(
                f"mlflow.tracking_uri {shown}: the server refuses requests addressed to {host!r} "
                f"(MLflow's host check: {body.strip()[:120]}). Restart it with "
                f"`--allowed-hosts {host},localhost:*,127.0.0.1:*` or reach it by an address it "
                "allows (its private IP)"
            ) from None
    except (urllib.error.URLError, OSError) as err:
        raise PipelineError(
            f"mlflow.tracking_uri {shown}: no MLflow server answers there "
            f"({strip_userinfo(str(getattr(err, 'reason', err)))}). "
            "Start it (`mlflow server --host 127.0.0.1 --port PORT ...`) "
            "or fix mlflow.tracking_uri (`--set mlflow.tracking_uri=...`; leave it unset for the "
            "embedded store in the workdir)"
        ) from None


def _open_record(config: PipelineConfig, workdir: str, pipeline_path: str, run_id: str | None) -> RunRecord:
    if run_id is not None:
        record = RunRecord.load(workdir, run_id)
    else:
        record = RunRecord(
            run_id=new_run_id(), pipeline=pipeline_path, name=config.name, workdir=str(workdir)
        )
    # Rewritten on every resume: `lvdm resume RUN --set <section>.train.num_workers=16` changes
    # execution settings only (same cache keys), and the record must say what runs now.
    storage.write_bytes(storage.join(record.folder, "config.yaml"), to_yaml(config).encode())
    return record


def _run_stage(run: _Run, stage: Stage, inputs: Mapping[str, dict]) -> dict:
    """Run one stage in its folder (or find it complete); `inputs` are its inputs' manifests."""
    record, echo = run.record, run.echo
    state = record.stages[stage.name]
    out_dir = state.output
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
            return _run_locked_stage(run, stage, inputs, out_dir)
    except FolderLockedError as err:
        state.status, state.error = "failed", str(err)
        record.save()
        raise PipelineError(f"stage {stage.name!r}: {err}") from None


def _run_locked_stage(run: _Run, stage: Stage, inputs: Mapping[str, dict], out_dir: str) -> dict:
    config, keys, record, echo = run.config, run.keys, run.record, run.echo
    state = record.stages[stage.name]
    finished = read_manifest(out_dir)  # by a run that held the lock just before this one
    if finished is not None:
        state.status, state.mlflow_run_id = "cached", finished.get("mlflow_run_id")
        record.save()
        echo(f"[{stage.name}] cached: {out_dir}")
        return finished
    for path in remove_stale_temporaries(out_dir):
        echo(f"[{stage.name}] removed {path.name}, left half-written by an earlier, killed run")
    in_progress = read_json_or_none(storage.join(out_dir, STAGE_STATE)) or {}
    stage_tracking = tracking.start_run(
        run.parent.tracking_uri,
        run.experiment_id,
        name=f"{stage.name}-{keys[stage.name]}",
        tags={"lvdm.stage": stage.name, "lvdm.cache_key": keys[stage.name], "lvdm.run_id": record.run_id},
        parent_run_id=run.parent.run_id,
        reattach_run_id=in_progress.get("mlflow_run_id"),
        warn=lambda message: echo(f"[{stage.name}] warning: {message}"),
    )
    # Rewritten every time: a run that replaced a lost one is the run to reattach to next.
    storage.write_json(storage.join(out_dir, STAGE_STATE), {"mlflow_run_id": stage_tracking.run_id})
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
        inputs=inputs,
        tracking=stage_tracking,
        run_name=f"{stage.name}-{keys[stage.name]}",
    )
    try:
        outputs = stage.run(context)
    except BaseException as err:
        if run.abandoned.is_set():
            raise
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
    storage.write_json(storage.join(out_dir, MANIFEST), manifest)
    tracking.log_artifact(stage_tracking, storage.join(out_dir, MANIFEST))
    tracking.end_run(stage_tracking, "FINISHED")
    state.status = "done"
    record.save()
    echo(f"[{stage.name}] done in {state.ended - state.started:.1f}s")
    manifest["out_dir"] = out_dir
    return manifest


def read_json_or_none(path: storage.Location) -> dict | None:
    return storage.read_json(path) if storage.is_file(path) else None

"""`lvdm submit` / `lvdm logs`: a pipeline as a Ray Job, and the job's side of it.

The submitting machine validates the pipeline file with its `--set` overrides, and sends the
*resolved* config (in the job's `runtime_env.env_vars`, so the job runs exactly what was
checked here) with the project's four packages as the job's `py_modules`. On the cluster, the
entrypoint (`python -m pipelines.submit RUN_ID ...`) records a run under that id in the workdir and runs
it like `lvdm run`: the runner writes the resolved config to `<workdir>/runs/<run>/config.yaml`.

Ray never retries a job. Submitting the same pipeline again *is* the retry: same workdir,
same cache keys, same Ray Train run names, so complete stages are skipped and training
continues from its newest checkpoint. Each submission gets a fresh id naming pipeline and run
(`lvdm-<pipeline>-<run id>`), since Ray refuses a duplicate submission id.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import yaml

from data_prep import storage
from pipelines.config import PipelineConfig, load_pipeline, to_yaml, validate
from pipelines.run_record import RunRecord, new_run_id

CONFIG_ENV = "LVDM_SUBMITTED_CONFIG"  # the resolved pipeline YAML, in the job's env_vars
PIPELINE_ENV = "LVDM_SUBMITTED_PIPELINE"  # the pipeline file it came from, for `lvdm status`
# The code a job runs, shipped as Ray `py_modules`: these four packages and nothing else of the
# folder they sit in. A `working_dir` upload would take whatever lies beside them (`.env`,
# `.aws/`, keys, datasets, a workdir, `mlflow.db`), or all of site-packages from an installed copy.
PACKAGES = ("lvdm", "data_prep", "stages", "pipelines")
# Never uploaded, even from inside a package folder: caches and secrets. (Ray adds .git and
# .gitignore'd paths itself.)
EXCLUDES = ["**/__pycache__", "*.pyc", ".env*", "*.pem", "*.key", ".aws", ".ssh", "*.db"]
AGENT_WAIT_S = 60  # how long a fresh head may take to start its job agent
TERMINAL = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}


def job_config(config: PipelineConfig) -> PipelineConfig:
    """The config as the job must run it: inside a Ray Job the driver joins the job's own
    cluster (`address: auto`); `ray.num_cpus` sizes a local cluster and is refused there."""
    raw = config.model_dump(mode="json")
    raw["ray"] = {**raw["ray"], "address": "auto", "num_cpus": None}
    return validate(raw, source="submitted pipeline")


def package_folders() -> list[str]:
    """Where this process imports the project's packages from: the checkout (editable install)
    or site-packages (installed), found without importing them."""
    folders = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(
                f"package {name!r} is not importable here: install the project (`pip install -e .` in it)"
            )
        folders.append(str(Path(next(iter(spec.submodule_search_locations))).resolve()))
    return folders


def job_runtime_env(config: PipelineConfig, pipeline: str) -> dict:
    """The job's code (the packages, as `py_modules`) and its resolved config (`env_vars`)."""
    return {
        "py_modules": package_folders(),
        "excludes": EXCLUDES,
        "env_vars": {CONFIG_ENV: to_yaml(config), PIPELINE_ENV: str(pipeline)},
    }


def resolve_workdir(workdir: str) -> str:
    """A URI as given; a local path made absolute on this machine. A relative path would land
    in the job's temporary copy of the project and vanish with it, and a resubmission would
    find nothing to resume: on a cluster the workdir must be storage every node sees."""
    if "://" in workdir:
        return workdir
    return str(Path(workdir).expanduser().resolve())


def submit(
    pipeline: str,
    *,
    address: str | None,
    workdir: str,
    overrides: list[str],
    until: str | None,
    echo=print,
) -> tuple[str, str]:
    """Validate, submit; return (submission id, run id)."""
    from pipelines.runner import plan

    config = job_config(load_pipeline(pipeline, overrides))
    # What the job's runner checks first (unknown stages, a stage whose input is not listed,
    # `--until`), checked here: a mistake is an error in seconds, not a failed job.
    plan(config, until)
    run_id = new_run_id()
    submission_id = f"lvdm-{config.name}-{run_id}"
    workdir = resolve_workdir(workdir)
    entrypoint = f"python -m pipelines.submit {run_id} --workdir {shlex.quote(workdir)}"
    if until:
        entrypoint += f" --until {shlex.quote(until)}"
    client = _client(address)
    job = {
        "entrypoint": entrypoint,
        "submission_id": submission_id,
        "runtime_env": job_runtime_env(config, pipeline),
        "metadata": {"lvdm.pipeline": config.name, "lvdm.run_id": run_id, "lvdm.workdir": workdir},
    }
    # A head that has just started answers the dashboard before its job agent is up ("No
    # available agent to submit job"); no job was created, so the same id can be sent again.
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            client.submit_job(**job)
            break
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    echo(submission_id)
    echo(
        f"submitted {pipeline} as job {submission_id} (run {run_id}, workdir {workdir}); follow it with "
        f"`lvdm logs {submission_id} --follow` or `lvdm status {run_id} --workdir {workdir}`"
    )
    return submission_id, run_id


def wait(submission_id: str, address: str | None, echo=print) -> int:
    """Stream the job's logs until it ends; its exit code: 0 SUCCEEDED, 1 FAILED, 130 STOPPED."""
    client = _client(address)
    follow(client, submission_id, echo)
    while (status := str(client.get_job_status(submission_id).value)) not in TERMINAL:
        time.sleep(1)  # the log stream can end a moment before the status turns terminal
    info = client.get_job_info(submission_id)
    echo(
        f"job {submission_id}: {status}"
        + (f" ({info.message})" if status != "SUCCEEDED" and info.message else "")
    )
    return TERMINAL[status]


def logs(submission_id: str, address: str | None, follow_: bool, echo=print) -> int:
    client = _client(address)
    if follow_:
        follow(client, submission_id, echo)
    else:
        echo(client.get_job_logs(submission_id), end="")
    return 0


def _client(address: str | None):
    """A Jobs API client; an unreachable dashboard is an error naming the address and the fix."""
    from ray.job_submission import JobSubmissionClient

    from pipelines.runner import PipelineError

    try:
        return JobSubmissionClient(address)
    except ConnectionError as err:
        shown = address or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265 (default)"
        raise PipelineError(
            f"--address {shown}: no Ray dashboard answers there ({err}). Give the head's dashboard, "
            "e.g. --address http://127.0.0.1:8265 after `ray dashboard ray_cluster.yaml` forwards it"
        ) from None


def follow(client, submission_id: str, echo=print) -> None:
    async def tail() -> None:
        async for lines in client.tail_job_logs(submission_id):
            echo(lines, end="")

    asyncio.run(tail())


def job_main(argv: list[str] | None = None) -> int:
    """The job's entrypoint on the cluster: record the run under the submitted id, run it."""
    from pipelines.execute import execute
    from pipelines.runner import PipelineError

    parser = argparse.ArgumentParser(prog="python -m pipelines.submit")
    parser.add_argument("run_id")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--until")
    args = parser.parse_args(argv)
    text = os.environ.get(CONFIG_ENV)
    if not text:
        print(f"error: {CONFIG_ENV} is not set: this entrypoint is run by `lvdm submit`", file=sys.stderr)
        return 2
    config = validate(yaml.safe_load(text), source=f"submitted pipeline (job env {CONFIG_ENV})")
    workdir = storage.absolute(args.workdir)  # a local path or an object-store URI
    pipeline = os.environ.get(PIPELINE_ENV, "submitted")
    record = RunRecord(run_id=args.run_id, pipeline=pipeline, name=config.name, workdir=workdir)
    record.save()  # creates the run's folder (a local one; an object store has none)
    # `ray job stop` sends SIGTERM (then SIGKILL after a few seconds): make it a KeyboardInterrupt,
    # so the runner records the running stages failed and ends their MLflow runs KILLED.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return execute(config, workdir, pipeline, until=args.until, run_id=args.run_id)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(job_main())

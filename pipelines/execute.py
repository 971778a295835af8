"""Run a validated pipeline in this process and show its status: what `lvdm run`, `lvdm resume`
and a submitted job's entrypoint (`pipelines.submit.job_main`) share.

A layer below both `pipelines.cli` and `pipelines.submit`, so neither imports the other for it.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time

from data_prep import storage
from pipelines import generate_cli
from pipelines.run_record import RunRecord, list_runs


class WorkdirError(ValueError):
    """`--workdir` cannot be written; nothing was started."""


def execute(config, workdir: str, pipeline: str, until: str | None, run_id: str | None) -> int:
    """Check the workdir and the cluster in seconds, run the pipeline, print its status and outputs."""
    from pipelines.runner import run_pipeline
    from stages.cluster_check import check_address

    check_writable(workdir)
    check_address(config.ray.address)  # seconds, not minutes of Ray's own GCS retries
    before = set(list_runs(workdir))
    try:
        record = run_pipeline(config, workdir, pipeline, until=until, run_id=run_id)
    except BaseException:
        # Show this invocation's run, if it got as far as recording one; never the workdir's
        # latest, which may be another run's (or, on a fresh workdir, a "no runs" error that
        # would hide the real one).
        mine = run_id or run_started_here(workdir, before)
        if mine is not None:
            print_status(RunRecord.load(workdir, mine))
        raise
    print_status(record)
    print(f"run {record.run_id}: {record.status}  (lvdm status {record.run_id} --workdir {workdir})")
    generate_cli.print_outputs(record)
    return 0


def check_writable(workdir: str) -> None:
    """Before anything is started: a local workdir (and its `runs/`, `stages/`), or the nearest
    folder above it that exists, must take a new file. Nothing is created: a probe file is made
    and removed. Without this, a read-only workdir ends in a traceback from inside the runner."""
    if storage.is_uri(workdir):
        return  # an object store says so on the first write, with the bucket in the message
    folder = storage.local(workdir)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder", str(existing))
        for probe_in in [existing, *(p for p in (folder / "runs", folder / "stages") if p.is_dir())]:
            fd, probe = tempfile.mkstemp(prefix=".lvdm-write-test-", dir=probe_in)
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise WorkdirError(
            f"--workdir {workdir} is not writable ({type(err).__name__}: {err.strerror}: {err.filename}): "
            "a run writes its record, stage outputs and the MLflow store there. Give a writable "
            f"--workdir, or make {workdir} writable again (a read-only mount, an immutable attribute "
            "(chattr -i), permissions, or a file where a folder should be). Nothing was written; "
            "complete stages there are kept and reused once it is writable"
        ) from None


def run_started_here(workdir: str, before: set[str]) -> str | None:
    """The run this process recorded since `before` (another process may record runs meanwhile)."""
    for run_id in sorted(set(list_runs(workdir)) - before):
        if RunRecord.load(workdir, run_id).pid == os.getpid():
            return run_id
    return None


def print_status(record: RunRecord) -> None:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
    print(f"run {record.run_id}  pipeline {record.name}  status {record.display_status}  started {created}")
    if record.error:
        print(f"error: {record.error}")
    rows = [("stage", "status", "duration", "output")]
    for name, state in record.stages.items():
        status = (
            "interrupted"
            if state.status == "running" and record.display_status == "interrupted"
            else state.status
        )
        duration = f"{state.duration_s:.1f}s" if state.duration_s is not None else "-"
        rows.append((name, status, duration, state.output))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])

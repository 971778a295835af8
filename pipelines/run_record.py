"""The record of one pipeline run: `<workdir>/runs/<run_id>/run.json` + its resolved config.

It is what `lvdm status` prints and what `lvdm resume` reruns. Completion itself is never
read from here: a stage is complete exactly when its output folder holds a manifest, so a
run record that is stale (a killed process) cannot make the runner skip unfinished work.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, field

from data_prep import storage

RUNS = "runs"


@dataclass
class StageState:
    status: str = "pending"  # pending | running | done | cached | failed | blocked (by a failed input)
    key: str = ""
    output: str = ""
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    mlflow_run_id: str | None = None

    @property
    def duration_s(self) -> float | None:
        return None if self.started is None or self.ended is None else self.ended - self.started


@dataclass
class RunRecord:
    run_id: str
    pipeline: str
    name: str
    workdir: str
    status: str = "running"  # running | done | failed
    created: float = field(default_factory=time.time)
    error: str | None = None
    mlflow_parent_run_id: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_experiment_id: str | None = None  # None in records written before it was recorded
    until: str | None = None  # `--until`: a resume stops at the same stage
    pid: int = field(default_factory=os.getpid)  # the `lvdm` process driving the run
    # The machine of `pid`: a submitted run is driven on the cluster's head, not where `lvdm
    # status` runs. None in records written before it was recorded.
    host: str | None = field(default_factory=socket.gethostname)
    stages: dict[str, StageState] = field(default_factory=dict)

    @property
    def display_status(self) -> str:
        """`running` while the driving process lives, `interrupted` once it is gone; a run
        driven on another machine reads `running on HOST`, since its process cannot be seen."""
        if self.status != "running":
            return self.status
        if self.host is not None and self.host != socket.gethostname():
            return f"running on {self.host}"
        return "running" if _alive(self.pid) else "interrupted"

    @property
    def folder(self) -> str:
        """A location (data_prep.storage): the workdir may be on an object store."""
        return storage.join(self.workdir, RUNS, self.run_id)

    def __post_init__(self) -> None:
        # Not a field (asdict would copy it): concurrent stages save from their threads, and two
        # writers of run.json would share one temporary name.
        self._lock = threading.Lock()

    def save(self) -> None:
        """Write the record; thread-safe, and each save holds every change made before it."""
        with self._lock:
            storage.write_json(storage.join(self.folder, "run.json"), asdict(self))

    def complete(self, stage: str) -> bool:
        """Whether `stage` finished here (run or found cached) and left its output folder."""
        state = self.stages.get(stage)
        return state is not None and state.status in ("done", "cached") and bool(state.output)

    @classmethod
    def load(cls, workdir: storage.Location, run_id: str) -> RunRecord:
        path = storage.join(workdir, RUNS, run_id, "run.json")
        if not storage.is_file(path):
            known = ", ".join(list_runs(workdir)) or "none"
            raise FileNotFoundError(
                f"no run {run_id!r} under {storage.join(workdir, RUNS)} (runs there: {known})"
            )
        raw = storage.read_json(path)
        raw["stages"] = {name: StageState(**state) for name, state in raw["stages"].items()}
        raw.setdefault("host", None)  # unknown, not this machine's
        return cls(**raw)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def list_runs(workdir: storage.Location) -> list[str]:
    folder = storage.join(workdir, RUNS)
    return [run for run in storage.listdir(folder) if storage.is_file(storage.join(folder, run, "run.json"))]


def run_with_stage(workdir: storage.Location, stage: str, run_id: str | None = None) -> RunRecord | None:
    """`run_id`'s record if its `stage` is complete; without `run_id`, the newest run whose
    `stage` is: the run a command that reads one stage's outputs should default to. None if none."""
    for candidate in [run_id] if run_id else sorted(list_runs(workdir), reverse=True):
        record = RunRecord.load(workdir, candidate)
        if record.complete(stage):
            return record
    return None


def latest_run(workdir: storage.Location) -> str:
    runs = list_runs(workdir)
    if not runs:
        raise FileNotFoundError(
            f"no pipeline runs under {storage.join(workdir, RUNS)}; start one with `lvdm run`"
        )
    return runs[-1]

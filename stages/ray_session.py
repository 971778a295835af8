"""Joining or starting the Ray cluster, once per process, only when a stage has work; and
waiting for a stage's fan-out of Ray tasks."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping

import ray
import torch
from tqdm import tqdm


def ensure_ray(address: str | None, num_cpus: int | None = None) -> None:
    """`ray.init` once. It replaces the process's SIGTERM handler with one that calls
    `sys.exit`: a handler the caller installed (the submitted job's: SIGTERM from `ray job stop`
    as a KeyboardInterrupt, so the runs end KILLED) is put back. Without one, Ray's stays: for a
    local cluster it also stops the Ray processes this driver started."""
    if ray.is_initialized():
        return
    # Workers import this project from the driver's environment; on a local cluster they
    # share its filesystem, so no runtime_env upload is needed.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ours = signal.getsignal(signal.SIGTERM)
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, log_to_driver=True)
    if callable(ours) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, ours)


def task_device() -> torch.device:
    """Inside a Ray task: torch threads = the CPUs Ray granted (it pins OMP to them), and the
    GPU when the task was granted one."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")


def wait_all(
    refs: Mapping[ray.ObjectRef, str], desc: str, unit: str, sizes: Mapping[str, int] | None = None
) -> list[tuple[str, ray.exceptions.RayError]]:
    """Wait for every task of `refs` (ref -> name), with a progress bar; `(name, error)` of each
    that failed, the error as `ray.get` raised it (a RayTaskError, or a RayError for a worker
    that died: segfault, OOM kill).

    Every task, not until the first failure: stopping there would leave the others writing into
    the stage folder behind the error, and name only one of the bad inputs; a rerun redoes only
    the tasks without a record. `sizes` (name -> units) weights the bar; one unit per task else.
    """
    failures: list[tuple[str, ray.exceptions.RayError]] = []
    total = sum(sizes[name] for name in refs.values()) if sizes else len(refs)
    with tqdm(total=total, desc=desc, unit=unit) as bar:
        remaining = list(refs)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            name = refs[done[0]]
            try:
                ray.get(done[0])
            except ray.exceptions.RayError as err:
                failures.append((name, err))
            bar.update(sizes[name] if sizes else 1)
    return failures

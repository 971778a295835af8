"""Joining or starting the Ray cluster, once per process, only when a stage has work."""

from __future__ import annotations

import os

import ray
import torch


def ensure_ray(address: str | None, num_cpus: int | None = None) -> None:
    if ray.is_initialized():
        return
    # Workers import this project from the driver's environment; on a local cluster they
    # share its filesystem, so no runtime_env upload is needed.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, log_to_driver=True)


def task_device() -> torch.device:
    """Inside a Ray task: torch threads = the CPUs Ray granted (it pins OMP to them), and the
    GPU when the task was granted one."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")

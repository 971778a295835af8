"""Joining or starting the Ray cluster, once per process, only when a stage has work."""

from __future__ import annotations

import os

import ray


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

"""The Ray Train plumbing every training stage shares (autoencoder, uncond, pred, interp).

Shaped like Ray's own Train examples: the driver builds one `TorchTrainer` (`fit`); each
worker runs a stage's loop, which calls `start_worker`, `restore` and `train_steps` from here
and supplies only what is model-specific (how to build a batch loader, one optimiser step,
the state to checkpoint, a preview). What lives here, once:

- the run name: the stage's deterministic `<stage>-<cache key>`, so a rerun builds a new
  trainer with the same `RunConfig(storage_path, name)` and Ray Train V2 hands the newest
  checkpoint to `get_checkpoint()` (there is no `TorchTrainer.restore` in V2);
- checkpoints every N steps from rank 0, loaded with `torch.load(weights_only=True)`: the
  workdir is shared storage, and a pickled object in a checkpoint must not run code on the
  driver or a worker;
- fault injection for tests (`LVDM_FAULT_INJECT=<stage>:<step>`), rank-0 MLflow logging,
  the progress bar, and a per-segment loader so a resumed run replays the same data;
- `train.compile` (`compile_network`) and the throughput every stage logs per interval:
  `clips_per_s` over all workers, the counted model TFLOP/s per worker and, on a GPU with a
  known peak, MFU (`lvdm.mfu`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data_prep import storage
from lvdm.mfu import count_flops, device_peak
from lvdm.parallel import unwrap
from lvdm.precision import autocast_dtype
from stages import tracking
from stages.checkpoint_load import load_weights_file
from stages.contract import StageContext, Tracking

FAULT_ENV = "LVDM_FAULT_INJECT"  # "<stage>:<step>": crash after that step of a fresh start (tests)
TRAINER_STATE = "trainer.pt"


def fit(ctx: StageContext, loop: Callable[[dict], None], loop_config: dict, train: Any) -> dict:
    """Run `loop` on `train.num_workers` Ray Train workers; return the final checkpoint's state.

    `train` is the stage's typed train section (num_workers, use_gpu, cpus_per_worker,
    max_failures). The loop gets `loop_config` plus the stage name, tracking and fault step.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from stages.cluster_check import check_tracking_reach, check_training
    from stages.ray_session import ensure_ray

    config = {
        **loop_config,
        "stage": ctx.name,
        "tracking": dataclasses.asdict(ctx.tracking),
        "fault_step": fault_step(ctx.name),
        "out_dir": ctx.out_dir,
    }
    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    # Before any worker starts: an impossible request is an error naming the --set that fits,
    # not 60 s of waiting and a controller traceback.
    check_training(ctx.name, ctx.config, train)
    check_tracking_reach(ctx.name, ctx.tracking.tracking_uri)
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=train.use_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker} | ({"GPU": 1} if train.use_gpu else {}),
        ),
        run_config=ray.train.RunConfig(
            name=ctx.run_name,
            storage_path=storage.join(ctx.out_dir, "ray"),
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        return load_state(Path(folder) / TRAINER_STATE)


def load_state(path: Path) -> dict:
    """A checkpoint's state dict, refusing anything but tensors and plain containers."""
    return load_weights_file(path, "rerun the stage to train from the previous checkpoint")


def fault_step(stage: str) -> int | None:
    name, _, step = os.environ.get(FAULT_ENV, "").partition(":")
    return int(step) if name == stage and step else None


@dataclass
class WorkerSession:
    """What a worker knows about itself; `log` is set on rank 0 only (it alone logs)."""

    stage: str
    rank: int
    world: int
    device: torch.device
    log: Tracking | None
    fault_step: int | None
    resumed_from: int = 0

    def autocast_dtype(self, precision: str) -> torch.dtype | None:
        return autocast_dtype(precision, self.device)


def compile_network(model: nn.Module, train: dict, backend: str = "inductor") -> None:
    """`train.compile`: torch.compile the network's forward in place, after its trainer exists.

    In place (`nn.Module.compile`), not `torch.compile(model)`: the latter wraps the network
    in an OptimizedModule whose state dict keys carry an `_orig_mod.` prefix, which would leak
    into every checkpoint and weights file. After the trainer: a deep copy of a compiled module
    (the EMA copy) would keep calling the original's compiled forward, i.e. the raw weights.
    Works inside DDP, which calls the inner module's (compiled) `__call__`.
    """
    if train.get("compile"):
        unwrap(model).compile(backend=backend)


def start_worker(cfg: dict, train: dict) -> WorkerSession:
    """Rank, device, seed and thread count for this worker."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.manual_seed(train["seed"] + rank)
    torch.set_num_threads(train["cpus_per_worker"])  # Ray pins OMP threads to the CPUs it granted
    return WorkerSession(
        stage=cfg["stage"],
        rank=rank,
        world=context.get_world_size(),
        device=ray.train.torch.get_device(),
        log=Tracking(**cfg["tracking"]) if rank == 0 else None,
        fault_step=cfg["fault_step"],
    )


def restore(session: WorkerSession) -> dict | None:
    """The newest checkpoint's state of this run (Ray Train V2 resume), or None on a fresh start."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        state = load_state(Path(folder) / TRAINER_STATE)
    session.resumed_from = state["step"]
    print(f"[{session.stage}] resumed from the checkpoint at step {state['step']}")
    return state


def train_steps(
    session: WorkerSession,
    *,
    start: int,
    train: dict,
    loader: Callable[[int, int], Iterable[torch.Tensor]],
    step: Callable[[torch.Tensor, int], dict[str, float]],
    state: Callable[[int, bool], dict],
    preview: Callable[[int], dict[str, float]] | None = None,
    items_name: str = "clips_per_s",
    metrics: Callable[[], dict[str, float]] | None = None,
    snapshot: Callable[[int], None] | None = None,
) -> None:
    """The loop every training stage runs, from `start` to `train["steps"]`.

    `loader(segment, batches)` yields this rank's batches of one checkpoint interval
    (segment = step // checkpoint_every: a resumed run replays exactly the data it would
    have seen); `step(batch, global_step)` does one optimiser step and returns its logs;
    `state(step, final)` is the checkpoint payload (rank 0); `preview(step)` logs samples
    and returns metrics; `metrics()` adds logs gathered over the log window; `snapshot(step)`
    keeps the weights every `train["snapshot_every"]` steps (rank 0; a resumed run writes the
    ones of the steps it replays again).

    The first step runs under a FLOP counter (once; it is a little slower for it): with the
    window's wall time that gives the model TFLOP/s per worker and, against the device's
    peak, the MFU logged beside the clips/s.
    """
    from tqdm import tqdm

    every, total = train["checkpoint_every"], train["steps"]
    snapshot_every = train.get("snapshot_every")  # diffusion stages only
    current = start
    flops_per_step: int | None = None
    peak = device_peak(session.device, session.autocast_dtype(train["precision"]))
    bar = tqdm(total=total, initial=current, desc=session.stage, disable=session.rank != 0, mininterval=5)
    while current < total:
        batches = min(every - current % every, total - current)
        window_start, window_step = time.perf_counter(), current
        for batch in loader(current // every, batches):
            batch = batch.to(session.device)
            if flops_per_step is None:
                logs, flops_per_step = count_flops(lambda batch=batch, at=current: step(batch, at))
            else:
                logs = step(batch, current)
            current += 1
            bar.update(1)
            if session.fault_step is not None and current == session.fault_step and session.resumed_from == 0:
                raise RuntimeError(f"injected failure after step {current} ({FAULT_ENV})")
            if session.log and current % train["log_every"] == 0:
                seconds = max(time.perf_counter() - window_start, 1e-9)
                steps = current - window_step
                rate = steps * train["batch_size"] * session.world / seconds  # all workers
                extra = metrics() if metrics else {}
                extra |= throughput(flops_per_step, steps, seconds, peak)
                tracking.log_metrics(
                    session.log,
                    {**logs, **extra, "lr": train["lr"], items_name: rate, "clips_per_s": rate},
                    current,
                )
                window_start, window_step = time.perf_counter(), current
            if session.log and preview and current % train["preview_every"] == 0:
                tracking.log_metrics(session.log, preview(current), current)
            if snapshot and session.rank == 0 and snapshot_every and current % snapshot_every == 0:
                snapshot(current)
        report(session, current, state, final=current >= total)
    bar.close()


def throughput(
    flops_per_step: int | None, steps: int, seconds: float, peak: tuple[str, float] | None
) -> dict[str, float]:
    """One worker's counted model TFLOP/s over a log window, and its MFU where the peak is known."""
    if not flops_per_step:
        return {}
    achieved = flops_per_step * steps / seconds
    logs = {"tflops_per_worker": achieved / 1e12}
    if peak is not None:
        logs["mfu"] = achieved / peak[1]
    return logs


def report(session: WorkerSession, step: int, state: Callable[[int, bool], dict], final: bool) -> None:
    """Every worker reports (Ray Train expects it); rank 0 attaches the checkpoint."""
    import ray.train

    metrics = {"step": step}
    if session.rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    payload = {**state(step, final), "step": step, "resumed_from_step": session.resumed_from}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(payload, Path(folder) / TRAINER_STATE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def log_video(session: WorkerSession, frames, name: str, fps: int = 8) -> None:
    """Write `frames (t h w c)` uint8 as H.264 mp4 and attach it to the stage's run."""
    from data_prep.encode import write_mp4

    if session.log is None:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = write_mp4(Path(folder) / name, frames, fps=fps)
        tracking.log_artifact(session.log, path, "previews")

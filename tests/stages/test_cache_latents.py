"""Stage `cache_latents` on a real local Ray cluster, with a tiny random autoencoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from pipelines.config import load_pipeline
from stages.autoencoder_file import FILENAME, save_autoencoder
from stages.cache_latents import run
from stages.contract import StageContext, Tracking
from tests.conftest import PIPELINES, TINY_DEMO


def test_every_failed_shard_is_named_after_all_tasks_finished(ray_cluster, tmp_path):
    videos, ae_dir, out = tmp_path / "videos", tmp_path / "ae", tmp_path / "latents"
    for folder in (videos, ae_dir, out):
        folder.mkdir()
    shards = ["train-000000.tar", "train-000001.tar"]
    for name in shards:
        (videos / name).write_bytes(b"not a tar archive" * 64)  # a corrupt video shard
    model = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8))
    save_autoencoder(ae_dir / FILENAME, model, scale=1.0, shift=0.0, step=0)
    config = load_pipeline(PIPELINES / "demo.yaml", [*TINY_DEMO, "ray.num_cpus=2"])
    ctx = StageContext(
        name="cache_latents",
        key="test",
        config=config,
        out_dir=out,
        inputs={
            "shard": {"out_dir": str(videos), "outputs": {"shards": {"train": shards}}},
            "train_autoencoder": {
                "out_dir": str(ae_dir),
                "outputs": {"autoencoder": FILENAME, "scale": 1.0, "shift": 0.0},
            },
        },
        tracking=Tracking("unused: the stage fails before it logs", "none"),
        run_name="cache_latents-test",
    )
    with pytest.raises(RuntimeError, match="2 of 2 video shards failed") as info:
        run(ctx)
    assert all(name in str(info.value) for name in shards)
    assert not any(Path(out).glob("*.tar")), "no latent shard from a failed task"


def _tiny_video_shards(folder: Path) -> list[tuple[str, str]]:
    """Three shards of the synthetic demo (one holds a video too short for a clip) and a corrupt one."""
    from data_prep.chunks import plan_chunks, process_chunk
    from data_prep.sources import DATASETS

    found = DATASETS["synthetic"](None, ["train"], num_videos={"train": 5}, num_frames=12, resolution=16)
    sources = []
    for chunk in plan_chunks(found.videos, 2):
        process_chunk(chunk, folder, 16, 4, crf=18)
        sources.append(("train", str(folder / f"{chunk.name}.tar")))
    (folder / "train-000009.tar").write_bytes(b"not a tar archive" * 64)
    return [*sources, ("train", str(folder / "train-000009.tar"))]


def test_decoding_runs_in_its_own_tasks_and_asks_for_them_without_deprecated_arguments(
    ray_cluster, tmp_path, capsys
):
    """Ray Data fuses maps with equal resource requests: the decode tasks' own request keeps them
    apart from the CPU encoder actors, and it is given the supported way (no RayDeprecationWarning,
    which `ray_remote_args_fn` raised: gone in Ray 2.64)."""
    import warnings

    from ray.util.annotations import RayDeprecationWarning

    from stages.cache_latents_stream import streaming_dataset

    jobs = [{"split": "train", "src": str(tmp_path / f"train-00000{i}.tar")} for i in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RayDeprecationWarning)
        settings = {"batch_size": 2, "precision": "fp32", "use_gpu": False, "concurrency": 1}
        dataset = streaming_dataset(jobs, "unused.pt", frames=8, stride=1, **settings)
    capsys.readouterr()
    dataset.explain()  # plans only: nothing runs
    optimized = capsys.readouterr().out.split("Physical Plan (Optimized)")[1]
    assert "TaskPoolMapOperator[FlatMap(DecodeShard)]" in optimized, optimized
    assert "ActorPoolMapOperator[Map(EncodeVideos)]" in optimized, optimized


@pytest.mark.slow  # ~10 s of Ray Data start-up on 2 cores (60 s on a loaded box)
def test_the_ray_data_engine_writes_the_task_engines_files_bit_for_bit(ray_cluster, tmp_path):
    from pipelines.config import CacheLatentsSection
    from stages.cache_latents import encode_pending

    videos = tmp_path / "videos"
    videos.mkdir()
    sources = _tiny_video_shards(videos)
    model = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8))
    save_autoencoder(tmp_path / FILENAME, model, scale=0.5, shift=0.1, step=0)
    outputs = {}
    for engine in ("tasks", "ray_data"):
        settings = CacheLatentsSection(engine=engine, batch_size=2, precision="fp32")
        out = tmp_path / engine
        failures = encode_pending(settings, sources, out, str(tmp_path / FILENAME), frames=8, stride=1)
        assert len(failures) == 1 and failures[0].startswith("train-000009.tar ("), failures
        outputs[engine] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert len([name for name in outputs["tasks"] if name.suffix == ".tar"]) == 3
    assert outputs["ray_data"] == outputs["tasks"]
    records = [json.loads(v) for k, v in outputs["tasks"].items() if k.suffix == ".json"]
    assert sum(len(r["skipped"]) for r in records) == 0 and sum(len(r["rows"]) for r in records) == 5

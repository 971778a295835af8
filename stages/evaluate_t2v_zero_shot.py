"""Stage `evaluate_t2v_zero_shot`: the zero-shot UCF-101 protocol of text-to-video papers.

A text-to-video model trained on captioned web video (WebVid-style) has never seen UCF-101; its
101 action class names are turned into prompts, `zero_shot.videos_per_class` videos are generated
for each, and FVD16 / KVD16 are computed against the real clips of the official test split.
LVDM-T2V reports FVD 641.80 this way (paper §5). What is implemented, exactly (`protocol()`,
written into metrics.json and the manifest):

- prompt: the class name of `classInd.txt` with its CamelCase split into lower-case words
  (`zero_shot_prompts.class_prompt`: "ApplyEyeMakeup" -> "apply eye makeup", "YoYo" -> "yo yo"), unless
  `zero_shot.prompt_file` (YAML or JSON, class -> prompt) gives that class its own;
- generated: `videos_per_class` videos per class, uniform over the chosen classes (all 101 by
  default: 100 x 101 = 10,100 videos, the ~10K samples zero-shot UCF-101 figures are commonly
  reported on), `window` frames each at the trained model's resolution, through `sample_t2v`'s own
  generation code (`generate_videos`), seeded per class, embedded as generated (uint8 frames, not
  re-read from their mp4s as `evaluate` does);
- real: every clip of `testlist0<split>.txt` of the chosen classes (or a seeded subset of
  `real_clips`), one per video: its first `window` frames at `stride`, short side resized to the
  generated size and centre-cropped (`data_prep.frames`, the training clips' geometry);
- features: I3D's Kinetics-400 logits averaged over time on both sets, as `evaluate` does
  (`lvdm.metrics.fvd`), the real set's cached under `<workdir>/cache/i3d/`; the real-vs-real floor
  at the generated set's size beside the figure.

Resumable per class: each class's videos, contact sheet and I3D features go to `classes/<Class>/`,
its record `class.json` written last; a rerun redoes only the classes without a record. Classes are
striped over `zero_shot.workers` Ray tasks side by side (a GPU each with `zero_shot.use_gpu`), then
one task scores them all; the driver writes metrics.json and logs the figures, the prompts and one
contact sheet per class to MLflow.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import ray
import torch

from data_prep import storage
from stages import tracking
from stages.cluster_check import check_tasks
from stages.contract import Stage, StageContext
from stages.ray_session import ensure_ray, task_device
from stages.zero_shot_prompts import chosen_classes, class_prompts

METRICS = "metrics.json"
CLASS_RECORD = "class.json"
CONTACT_ROWS = 4  # videos per class contact sheet: 100 rows of 256-px frames would be a 25,600-px PNG
PUBLISHED = {"LVDM-T2V (He et al. 2022, §5)": 641.80}


def run(ctx: StageContext) -> dict:
    from stages.evaluate import i3d_cache

    section = ctx.config.zero_shot
    classes = chosen_classes(section.root, section.classes)  # a typo fails here, before any generation
    prompts = class_prompts(classes, section.prompt_file)
    i3d = {
        "i3d": str(section.i3d) if section.i3d else None,
        "i3d_sha256": section.i3d_sha256,
        "trust_i3d": section.trust_i3d,
        "home": str(ctx.config.weights.home) if ctx.config.weights.home else None,
        "batch_size": section.batch_size,
    }
    generation = i3d | {
        "videos_per_class": section.videos_per_class,
        "window": section.window,
        "guidance_scale": section.guidance_scale,
        "seed": section.seed,
        "fps": section.fps,
        "max_batch": section.max_batch,
        "schedule": ctx.config.diffusion.schedule.model_dump(),
        "sampling": ctx.config.sampling.model_dump(),
    }
    scoring = i3d | {
        "root": section.root,
        "split": section.split,
        "videos_per_class": section.videos_per_class,
        "window": section.window,
        "stride": section.stride or ctx.config.data.stride,
        "real_clips": section.real_clips,
        "seed": section.seed,
        "cache": i3d_cache(ctx.out_dir),
    }
    workers = min(section.workers, len(classes))
    print(
        f"[evaluate_t2v_zero_shot] {section.videos_per_class} videos for each of {len(classes)} UCF-101 "
        f"classes in {workers} task(s); real clips: testlist0{section.split}.txt"
    )
    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    check_tasks(
        "evaluate_t2v_zero_shot",
        f"zero_shot.use_gpu={section.use_gpu}",
        {"CPU": 1, "GPU": int(section.use_gpu)},
    )
    gpus = {"num_gpus": 1 if section.use_gpu else 0}
    manifest, names = ctx.inputs["train_t2v"], list(classes)
    stripes = [{name: classes[name] for name in names[k::workers]} for k in range(workers)]
    done = ray.get(
        [
            _generate_task.options(**gpus).remote(ctx.out_dir, manifest, stripe, prompts, generation)
            for stripe in stripes
        ]
    )
    records = {name: record for stripe in done for name, record in stripe.items()}
    records = {name: records[name] for name in classes}  # classInd's order
    metrics = ray.get(_score_task.options(**gpus).remote(ctx.out_dir, records, prompts, scoring))

    storage.write_json(storage.join(ctx.out_dir, METRICS), metrics)
    tracking.log_params(ctx.tracking, {"prompt": {name: entry["prompt"] for name, entry in prompts.items()}})
    figures = {"zero_shot/fvd16": metrics["fvd16"]["fvd"], "zero_shot/kvd16": metrics["fvd16"]["kvd"]}
    if metrics["real_floor"]:
        figures |= {
            "real_floor/fvd": metrics["real_floor"]["fvd"],
            "real_floor/kvd": metrics["real_floor"]["kvd"],
        }
    tracking.log_metrics(ctx.tracking, figures, 0)
    tracking.log_artifact(ctx.tracking, storage.join(ctx.out_dir, METRICS), "evaluation")
    for entry in metrics["classes"].values():
        tracking.log_artifact(
            ctx.tracking, storage.join(ctx.out_dir, entry["contact_sheet"]), "contact_sheets"
        )
    for line in summary_lines(metrics):
        print(f"[evaluate_t2v_zero_shot] {line}")
    return {
        "metrics": METRICS,
        "fvd16": metrics["fvd16"],
        "real_floor": metrics["real_floor"],
        "generated_videos": metrics["generated_videos"],
        "real_clips": metrics["real_clips"],
        "protocol": metrics["protocol"],
    }


# --- the work: generation tasks side by side, then one scoring task -----------------------


@ray.remote(num_cpus=1)
def _generate_task(out_dir: str, train_manifest: dict, classes: dict, prompts: dict, options: dict) -> dict:
    return generate_classes(out_dir, train_manifest, classes, prompts, device=task_device(), **options)


@ray.remote(num_cpus=1)
def _score_task(out_dir: str, records: dict, prompts: dict, options: dict) -> dict:
    return score(out_dir, records, prompts, device=task_device(), **options)


def evaluate_zero_shot(
    out_dir: str,
    train_manifest: dict,
    classes: dict[str, int],
    prompts: dict[str, dict[str, str]],
    *,
    generation: dict,
    scoring: dict,
    device: torch.device,
) -> dict:
    """`generate_classes` then `score` in this process: the metrics as JSON-ready data (no Ray,
    no MLflow). `generation` and `scoring` are their keyword arguments."""
    records = generate_classes(out_dir, train_manifest, classes, prompts, device=device, **generation)
    return score(out_dir, records, prompts, device=device, **scoring)


def generate_classes(
    out_dir: str,
    train_manifest: dict,
    classes: dict[str, int],
    prompts: dict[str, dict[str, str]],
    *,
    videos_per_class: int,
    window: int,
    guidance_scale: float | None,
    seed: int,
    fps: float,
    i3d: str | None,
    home: str | None,
    max_batch: int,
    batch_size: int,
    schedule: dict,
    sampling: dict,
    device: torch.device,
    i3d_sha256: str | None = None,
    trust_i3d: bool = False,
) -> dict[str, dict]:
    """`generate_class` for each of `classes` (`{name: 0-based label}`): `{name: its record}`. The
    text-to-video model and I3D are opened only if a class is left to generate."""
    from lvdm.metrics.fvd import load_fvd_model

    @functools.cache
    def i3d_model() -> torch.nn.Module:
        return load_fvd_model(i3d, home=home, sha256=i3d_sha256, trust=trust_i3d).to(device).eval()

    @functools.cache
    def text_video_model():
        from stages.t2v_model import TextVideoModel

        return TextVideoModel.load(train_manifest, device)

    records = {}
    for position, (name, label) in enumerate(classes.items(), start=1):
        records[name] = generate_class(
            out_dir,
            name,
            prompts[name]["prompt"],
            text_video_model,
            i3d_model,
            videos=videos_per_class,
            window=window,
            seed=seed * 1000 + label,  # per class: a rerun of one class draws the same videos
            guidance_scale=guidance_scale,
            max_batch=max_batch,
            batch_size=batch_size,
            fps=fps,
            schedule=schedule,
            sampling=sampling,
            device=device,
        )
        print(f"[evaluate_t2v_zero_shot] class {position}/{len(classes)} {name}: {records[name]['status']}")
    return records


def score(
    out_dir: str,
    records: dict[str, dict],
    prompts: dict[str, dict[str, str]],
    *,
    root: str,
    split: int,
    videos_per_class: int,
    window: int,
    stride: int,
    real_clips: int | None,
    seed: int,
    i3d: str | None,
    home: str | None,
    cache: str,
    batch_size: int,
    device: torch.device,
    i3d_sha256: str | None = None,
    trust_i3d: bool = False,
) -> dict:
    """FVD/KVD of the classes' generated features (`records`, in class order) against the real
    test clips of the same classes, the floor beside it, the protocol and per-class counts."""
    from lvdm.metrics.fvd import FEATURES, fvd_kvd, i3d_weights_id, load_fvd_model, real_floor

    classes = list(records)

    def i3d_model() -> torch.nn.Module:  # only if the real set is not cached yet
        return load_fvd_model(i3d, home=home, sha256=i3d_sha256, trust=trust_i3d).to(device).eval()

    generated = np.concatenate(
        [_read_features(storage.join(out_dir, r["features"])) for r in records.values()]
    )
    sizes = {tuple(r["size"]) for r in records.values()}
    if len(sizes) != 1:
        raise ValueError(f"{out_dir}: the class records hold videos of several sizes {sorted(sizes)}")
    height, width = sizes.pop()

    listed = real_test_videos(root, split, set(classes), limit=real_clips, seed=seed)
    key = real_set_key(
        root, split, sorted(classes), window=window, stride=stride, size=height, limit=real_clips
    )
    key = f"{key}-seed{seed}" if real_clips else key
    real = real_feature_set(
        listed,
        i3d_model,
        cache=cache,
        key=f"{key}-i3d{i3d_weights_id(i3d, home=home)}",
        window=window,
        stride=stride,
        size=height,
        batch_size=batch_size,
    )
    floor_clips = min(len(generated), real.count // 2)
    per_class_real = {name: 0 for name in classes}
    for video in listed:
        per_class_real[video.meta["class_name"]] += 1
    return {
        "protocol": protocol(
            split=split,
            classes=len(classes),
            videos_per_class=videos_per_class,
            window=window,
            stride=stride,
            size=(height, width),
            real_clips=real_clips,
            prompt_sources=sorted({p["source"] for p in prompts.values()}),
        ),
        "features": FEATURES,
        "fvd16": fvd_kvd(real, generated),
        "real_floor": real_floor(real.features, clips=floor_clips) if floor_clips >= 2 else None,
        "generated_videos": len(generated),
        "real_clips": real.count,
        "real_listed": len(listed),
        "published_fvd": PUBLISHED,
        "classes": {
            name: {
                "prompt": prompts[name]["prompt"],
                "prompt_source": prompts[name]["source"],
                "generated": len(records[name]["videos"]),
                "real_listed": per_class_real[name],
                "contact_sheet": records[name]["contact_sheet"],
            }
            for name in classes
        },
    }


def generate_class(
    out_dir: str,
    name: str,
    prompt: str,
    text_video_model: Callable,
    i3d_model: Callable[[], torch.nn.Module],
    *,
    videos: int,
    window: int,
    seed: int,
    guidance_scale: float | None,
    max_batch: int,
    batch_size: int,
    fps: float,
    schedule: dict,
    sampling: dict,
    device: torch.device,
) -> dict:
    """One class's videos, contact sheet and I3D features in `classes/<name>/`, its record last.
    A record for the same prompt and count means the class is done: it is returned as it is."""
    from data_prep.encode import write_mp4
    from lvdm.metrics.fvd import i3d_features
    from stages.sample import write_contact_sheet
    from stages.sample_t2v import generate_videos

    folder = storage.join(out_dir, "classes", name)
    record_path = storage.join(folder, CLASS_RECORD)
    if storage.is_file(record_path):
        record = storage.read_json(record_path)
        if record.get("prompt") == prompt and len(record.get("videos", ())) == videos:
            return record | {"status": "done earlier, kept"}
        storage.delete(record_path)  # another prompt: the folder is rewritten, its record last
    generator = torch.Generator(device).manual_seed(seed)
    frames = generate_videos(
        text_video_model(),
        [prompt] * videos,
        generator=generator,
        max_batch=max_batch,
        schedule=schedule,
        sampling=sampling,
        guidance_scale=guidance_scale,
        frames=window,
    )  # b t h w c uint8
    features = i3d_features(i3d_model(), iter(frames), batch_size=batch_size)
    relative = f"classes/{name}"
    with storage.staged_folder(folder, last=(CLASS_RECORD,)) as local:
        names = [f"video-{k:03d}.mp4" for k in range(videos)]
        for file_name, clip in zip(names, frames, strict=True):
            write_mp4(Path(local) / file_name, clip, fps=fps)
        sheet = f"{name}.png"  # named by class: MLflow's contact_sheets/ holds every class's side by side
        write_contact_sheet(Path(local) / sheet, list(np.moveaxis(frames[:CONTACT_ROWS], 1, 0)))
        _write_features(Path(local) / "features.npy", features)
        record = {
            "class": name,
            "prompt": prompt,
            "seed": seed,
            "size": list(frames.shape[2:4]),
            "frames": int(frames.shape[1]),
            "videos": [f"{relative}/{n}" for n in names],
            "contact_sheet": f"{relative}/{sheet}",
            "features": f"{relative}/features.npy",
        }
        storage.write_json(Path(local) / CLASS_RECORD, record)
    return record | {"status": f"{videos} videos generated"}


def _write_features(path: Path, features: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, features, allow_pickle=False)
    storage.write_bytes(path, buffer.getvalue())


def _read_features(location: str) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(location)), allow_pickle=False)


# --- the real clips ---------------------------------------------------------------------


def real_test_videos(root: str, split: int, classes: set[str], *, limit: int | None, seed: int) -> list:
    """The `SourceVideo`s of `testlist0<split>.txt` in `classes`, in list order: all, or a seeded
    random `limit` of them (the list is in class order, so its first `limit` would be a few classes)."""
    from data_prep.sources.ucf101 import discover

    videos = [v for v in discover(root, ["test"], split).videos if v.meta["class_name"] in classes]
    if not videos:
        raise ValueError(
            f"{root}: testlist0{split}.txt lists no present video of the evaluated classes; check "
            "zero_shot.root and zero_shot.classes"
        )
    if limit is not None and limit < len(videos):
        keep = np.sort(np.random.default_rng(seed).permutation(len(videos))[:limit])
        videos = [videos[i] for i in keep]
    return videos


def real_set_key(root: str, split: int, classes: list[str], **clip_rule) -> str:
    """The real set's statistics key: the split files' bytes (which videos), the classes and the
    clip rule. UCF-101's videos are fixed by its release, so its lists name the set."""
    from data_prep.sources.ucf101 import SPLIT_DIR

    digest = hashlib.sha256()
    for list_file in ("classInd.txt", f"testlist{split:02d}.txt"):
        digest.update(storage.read_bytes(storage.join(root, SPLIT_DIR, list_file)))
    digest.update(json.dumps({"classes": classes, **clip_rule}, sort_keys=True).encode())
    return f"ucf101-test{split}-{digest.hexdigest()[:16]}"


def real_feature_set(
    videos: list,
    i3d_model: Callable[[], torch.nn.Module],
    *,
    cache: str,
    key: str,
    window: int,
    stride: int,
    size: int,
    batch_size: int,
):
    """The real clips' I3D `FeatureSet`, from the cache or computed once and cached."""
    from lvdm.metrics.fvd import cached_feature_set, i3d_features

    def compute() -> np.ndarray:
        skipped: dict[str, str] = {}
        features = i3d_features(
            i3d_model(),
            real_clips_of(videos, window=window, stride=stride, size=size, skipped=skipped),
            batch_size=batch_size,
            progress=True,
            total=len(videos),
            desc="I3D UCF-101 test",
        )
        for name, reason in skipped.items():
            print(f"[evaluate_t2v_zero_shot] skipped real clip {name}: {reason}")
        return features

    return cached_feature_set(cache, key, compute)


def real_clips_of(
    videos: list, *, window: int, stride: int, size: int, skipped: dict[str, str]
) -> Iterator[np.ndarray]:
    """`(window size size 3)` uint8 per video: frames 0, stride, ... of it, short side to `size`,
    centre crop. A video too short or unreadable is skipped into `skipped` (path -> reason)."""
    from data_prep.clip_sampling import clip_span
    from data_prep.frames import resize_center_crop
    from data_prep.skip import SkipSample
    from data_prep.sources.base import load_frames

    indices = list(range(0, clip_span(window, stride), stride))
    for video in videos:
        try:
            yield resize_center_crop(load_frames(video, indices).frames, size)
        except SkipSample as skip:
            skipped[video.path] = skip.reason


# --- what it says -----------------------------------------------------------------------


def protocol(
    *,
    split: int,
    classes: int,
    videos_per_class: int,
    window: int,
    stride: int,
    size: tuple[int, int],
    real_clips: int | None,
    prompt_sources: list[str],
) -> dict:
    """The protocol as run, in words and numbers: what a reader needs to compare a figure."""
    subset = f"a seeded subset of {real_clips} of " if real_clips else ""
    return {
        "name": "zero-shot UCF-101 text-to-video FVD16",
        "prompts": "each class's name in classInd.txt, CamelCase split into lower-case words "
        "('ApplyEyeMakeup' -> 'apply eye makeup')"
        + ("; zero_shot.prompt_file's entry where it has one" if "file" in prompt_sources else ""),
        "generated": f"{videos_per_class} videos per class x {classes} classes, {window} frames at "
        f"{size[0]}x{size[1]}, seeded per class; embedded as generated (the mp4s are for viewing)",
        "real": f"{subset}the testlist0{split}.txt videos of those classes, one clip each: frames "
        f"0..{(window - 1) * stride} every {stride}, short side to {size[0]} + centre crop",
        "features": "I3D Kinetics-400 logits averaged over time, frames resized bilinearly to 224x224",
        "fvd": "Frechet distance of Gaussians fitted to the two feature sets; "
        "KVD: unbiased cubic-kernel MMD2",
        "floor": "the same metrics between two disjoint random halves of the real clips, at the generated "
        "set's size (at most half the real clips)",
        "split": split,
        "classes": classes,
        "videos_per_class": videos_per_class,
        "window": window,
        "stride": stride,
    }


def summary_lines(metrics: dict) -> list[str]:
    fvd, floor = metrics["fvd16"], metrics["real_floor"]
    lines = [
        f"FVD16 {fvd['fvd']:.2f}, KVD16 {fvd['kvd']:.4f}: {metrics['generated_videos']} generated videos vs "
        f"{metrics['real_clips']} UCF-101 test clips ({metrics['protocol']['classes']} classes)",
        f"real-vs-real floor: FVD {floor['fvd']:.2f}, KVD {floor['kvd']:.4f} at {floor['clips']} clips "
        "per side"
        if floor
        else "real-vs-real floor: too few real clips",
    ]
    lines += [f"published: {name} FVD {value:.2f}" for name, value in metrics["published_fvd"].items()]
    return lines


STAGE = Stage(
    name="evaluate_t2v_zero_shot",
    run=run,
    sections=("zero_shot", "sampling"),
    inputs=("train_t2v",),
    description="zero-shot UCF-101: class names as prompts, FVD16/KVD16 against the test split",
)

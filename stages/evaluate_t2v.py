"""Stage `evaluate_t2v`: text alignment of the text-to-video samples, exactly (synthetic data).

Every video of `sample_t2v` is read with the synthetic-motion detector and checked against its
prompt (`data_prep.text_alignment`): the fraction of videos whose detected objects have the
named colours, shapes and directions of motion. Beside it, with the same detector:
- `real_clips`: the test split's own clips (held-out combinations, through the shard stage's
  H.264) with their true captions: the ceiling, about 1;
- whether each prompt is held out: none of its (colour, shape, direction) objects appears in
  a training caption, so a high score there is composition, not recall.
Goals (issue 18): colour >= 0.9, shape >= 0.8, direction >= 0.7; chance 1/8, 1/2, 1/4.
The figures go to `metrics.json`, the manifest, MLflow and the end of the run's output.
"""

from __future__ import annotations

import json

from data_prep import storage
from stages import tracking
from stages.contract import Stage, StageContext

METRICS = "metrics.json"


def run(ctx: StageContext) -> dict:
    from data_prep.decode import decode_video
    from data_prep.sources.synthetic import parse_caption
    from data_prep.text_alignment import ASPECTS, CHANCE, GOALS, alignment
    from stages.shard import discover

    if ctx.config.data.dataset != "synthetic" or ctx.config.data.synthetic.caption_shapes is None:
        raise ValueError(
            "evaluate_t2v measures text alignment on the captioned synthetic dataset: set data.dataset: "
            "synthetic and data.synthetic.caption_shapes (see pipelines/bouncing_shapes_t2v.yaml)"
        )
    sample, shard = ctx.inputs["sample_t2v"], ctx.inputs["shard"]
    seen = {
        obj
        for video in discover(ctx.config.data).videos
        if video.split == "train"
        for obj in parse_caption(video.meta["caption"])
    }
    per_prompt, everything = {}, []
    for prompt, entry in sample["outputs"]["prompts"].items():
        videos = [
            (decode_video(storage.read_bytes(storage.join(sample["out_dir"], path))).frames, prompt)
            for path in entry["videos"]
        ]
        everything += videos
        per_prompt[prompt] = alignment(videos) | {"heldout": not set(parse_caption(prompt)) & seen}
    generated = alignment(everything)
    real = alignment(real_clips(shard, ctx.config.evaluate.real_clips))
    metrics = {
        "generated": generated,
        "real_clips": real,
        "prompts": per_prompt,
        "heldout_prompts": sum(p["heldout"] for p in per_prompt.values()),
        "chance": CHANCE,
        "goals": {
            a: {"goal": GOALS[a], "value": generated[a], "met": generated[a] >= GOALS[a]} for a in ASPECTS
        },
    }
    storage.write_json(storage.join(ctx.out_dir, METRICS), metrics)
    tracking.log_artifact(ctx.tracking, storage.join(ctx.out_dir, METRICS), "evaluation")
    figures = {f"text_alignment/{a}": generated[a] for a in (*ASPECTS, "all")}
    figures |= {f"text_alignment_real/{a}": real[a] for a in (*ASPECTS, "all")}
    tracking.log_metrics(ctx.tracking, figures, 0)
    for line in summary_lines(metrics):
        print(f"[evaluate_t2v] {line}")
    return {"metrics": METRICS, "text_alignment": generated, "real_clips": real, "goals": metrics["goals"]}


def real_clips(shard: dict, limit: int) -> list:
    """(frames, caption) of the first `limit` stored test clips (train if there is no test split):
    the split `evaluate` compares with, chosen by the same function."""
    from data_prep.decode import decode_video
    from data_prep.shard_writer import read_shard
    from stages.evaluate import real_split_of

    _, shards = real_split_of(shard)
    clips = []
    for location in shards:
        for _, fields in read_shard(location):
            clips.append((decode_video(fields["mp4"]).frames, json.loads(fields["json"])["caption"]))
            if len(clips) == limit:
                return clips
    return clips


def summary_lines(metrics: dict) -> list[str]:
    """The headline: generated vs real vs chance per aspect, goals met or MISS, prompts held out."""
    generated, real, chance = metrics["generated"], metrics["real_clips"], metrics["chance"]
    lines = [
        f"text alignment of {generated['videos']} videos for {len(metrics['prompts'])} prompts "
        f"({metrics['heldout_prompts']} held out from training):"
    ]
    for aspect, goal in metrics["goals"].items():
        lines.append(
            f"  {aspect:9s} {generated[aspect]:.3f}  (goal {goal['goal']:.2f}: "
            f"{'met' if goal['met'] else 'MISS'}; chance {chance[aspect]:.3f}; real clips {real[aspect]:.3f})"
        )
    lines.append(f"  all three {generated['all']:.3f}  (real clips {real['all']:.3f})")
    return lines


STAGE = Stage(
    name="evaluate_t2v",
    run=run,
    sections=("evaluate",),
    inputs=("sample_t2v", "shard"),
    description="text alignment of text-to-video samples (synthetic): named colours, shapes, directions",
)

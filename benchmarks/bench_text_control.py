"""Text alignment of the synthetic text-to-video model against training steps, in-process (issue 18).

`pipelines/bouncing_shapes_t2v.yaml` has to reach its text-control goals (colour >= 0.9,
shape >= 0.8, direction >= 0.7 on held-out prompts) within 15 minutes on 2 cores. A pipeline
run gives one figure per 15 minutes; this script gives the curve, for any `--set` of that file,
on the latents of a finished run, without Ray:

- it reads the pipeline file with the same overrides (`--set diffusion.unet.prediction=v`),
  builds the network, the frozen random text encoder and `TextDiffusionTrainer` as `train_t2v`
  does (`stages.train_t2v.network_kwargs`, `build_network`, the same trainer arguments), and
  trains on the run's `cache_latents` shards;
- at each `--eval-at` step it samples the EMA network as `sample_t2v` does (`TextVideoModel`,
  `generate_videos`: the file's sampler, guidance scale, 8 videos per prompt), passes every
  video through H.264 as the stage stores it, and scores it with `evaluate_t2v`'s
  `data_prep.text_alignment.alignment`, for the file's 8 held-out prompts and for 8 prompts
  seen in training (one per colour): held-out below seen is a failure to compose, both low a
  failure to learn;
- at the end it asks which words the network reads: its loss on 64 training windows at
  t = 200 / 500 / 800 / 950 with the true captions and with one word swapped (direction to
  its opposite, circle to square, colour to the palette's opposite one) or the caption
  dropped. A word whose swap leaves the loss where it was is a word the network ignores.

    W=workdir of `lvdm run pipelines/bouncing_shapes_t2v.yaml`
    python benchmarks/bench_text_control.py --workdir W --eval-at 500,1000,1500
    python benchmarks/bench_text_control.py --workdir W --eval-at 500,1000,1500 \
        --set diffusion.unet.prediction=eps --set 'diffusion.unet.attention_resolutions=[1, 2]'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.decode import decode_video
from data_prep.encode import write_mp4
from data_prep.loader import latent_window_loader
from data_prep.sources.synthetic import COLOUR_NAMES, DIRECTIONS, SHAPES, object_caption, parse_caption
from data_prep.text_alignment import alignment
from lvdm.autoencoder import normalise
from lvdm.random_clip import write_random_clip
from lvdm.text_diffusion_training import TextDiffusionTrainer
from lvdm.text_encoder import TextEncoder
from pipelines.config import load_pipeline
from stages.diffusion_stage import latent_shards, schedule_of, trainer_windows, window_of
from stages.sample_t2v import generate_videos
from stages.t2v_model import VIDEO_AUTOENCODER, TextVideoModel, load_decoder
from stages.train_t2v import build_network, network_kwargs, t2v_task
from stages.unet_file import save_unet

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "bouncing_shapes_t2v.yaml"


def seen_prompts() -> list[str]:
    """One training combination per colour: colour i with the (i+3)-th (shape, direction) pair,
    never the held-out i-th (`synthetic.is_heldout`)."""
    pairs = [(s, d) for s in SHAPES for d in DIRECTIONS]
    prompts = []
    for i, colour in enumerate(COLOUR_NAMES):
        shape, direction = pairs[(i + 3) % len(pairs)]
        prompts.append(object_caption(colour, shape, direction))
    return prompts


def through_h264(clips: np.ndarray, fps: float, scratch: Path) -> list[np.ndarray]:
    """Each `t h w c` uint8 clip written as the sample stage writes it and decoded back."""
    out = []
    for i, clip in enumerate(clips):
        path = scratch / f"{i}.mp4"
        write_mp4(path, clip, fps=fps)
        out.append(decode_video(path.read_bytes()).frames)
    return out


def score(
    model: TextVideoModel,
    prompts: list[str],
    config,
    videos: int,
    scratch: Path,
    *,
    seed: int | None = None,
    sampling: dict | None = None,
    guidance_scale: float | None = None,
) -> dict:
    """`videos` per prompt sampled as `sample_t2v` does (the config's seed, sampler and the
    model's guidance unless given), through H.264, scored as `evaluate_t2v` does."""
    asked = [p for p in prompts for _ in range(videos)]
    clips = generate_videos(
        model,
        asked,
        generator=torch.Generator().manual_seed(config.sample.seed if seed is None else seed),
        max_batch=64,
        schedule=config.diffusion.schedule.model_dump(),
        sampling=config.sampling.model_dump() if sampling is None else sampling,
        guidance_scale=guidance_scale,
    )
    return alignment(zip(through_h264(clips, config.sample.fps, scratch), asked, strict=True))


OPPOSITE = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "circle": "square",
    "square": "circle",
}
PROBE_TIMESTEPS = (200, 500, 800, 950)


def swapped(caption: str, word: str) -> str:
    """The caption with one word changed: `word` is "direction", "shape", "colour" or "none"
    (the empty caption, what caption dropout trains)."""
    if word == "none":
        return ""
    ((colour, shape, direction),) = parse_caption(caption)
    if word == "direction":
        direction = OPPOSITE[direction]
    elif word == "shape":
        shape = OPPOSITE[shape]
    else:
        colour = COLOUR_NAMES[(COLOUR_NAMES.index(colour) + len(COLOUR_NAMES) // 2) % len(COLOUR_NAMES)]
    return object_caption(colour, shape, direction)


def caption_only(network, x_t: torch.Tensor, noise_level: int) -> tuple[torch.Tensor, dict]:
    """The input and keywords of a network's caption-only mode: a continuing network
    (`t2v.cond_frames`) gets its mask channel with nothing given and the sampler's noise level,
    as the first window of a video is drawn (`long_video_steps.sample_clips`)."""
    config, extra = network.config, {}
    if config.in_channels > config.out_channels:
        x_t = torch.cat([x_t, torch.zeros_like(x_t[:, :1])], dim=1)
    if config.max_noise_level:
        extra["noise_level"] = torch.full((len(x_t),), noise_level, dtype=torch.long)
    return x_t, extra


@torch.no_grad()
def word_reliance(
    network, text, schedule, latents: torch.Tensor, captions: list[str], noise_level: int = 0
) -> list[str]:
    """Table rows: per timestep, the network's loss (its own target) with the true captions and
    with each word swapped, on the same noise, in its caption-only mode."""
    from lvdm.diffusion.parameterisation import model_prediction, v_target

    generator = torch.Generator().manual_seed(0)
    rows = []
    for step in PROBE_TIMESTEPS:
        t = torch.full((len(latents),), step, dtype=torch.long)
        noise = torch.randn(latents.shape, generator=generator)
        x_t = schedule.q_sample(latents, t, noise)
        target = v_target(latents, noise, t, schedule) if model_prediction(network) == "v" else noise
        x, extra = caption_only(network, x_t, noise_level)
        losses = []
        for word in ("true", "direction", "shape", "colour", "none"):
            asked = captions if word == "true" else [swapped(c, word) for c in captions]
            out = network(x, t, context=text.encode(asked), **extra)
            losses.append(((out - target) ** 2).mean().item())
        rows.append(f"| {step} | " + " | ".join(f"{loss:.4f}" for loss in losses) + " |")
    return rows


def stage_manifest(workdir: Path, stage: str) -> dict:
    folders = sorted((workdir / "stages").glob(f"{stage}-*"), key=lambda p: p.stat().st_mtime)
    done = [f for f in folders if (f / "manifest.json").is_file()]
    if not done:
        raise SystemExit(f"no finished {stage} stage under {workdir}/stages: run the pipeline first")
    manifest = json.loads((done[-1] / "manifest.json").read_text())
    return manifest | {"out_dir": str(done[-1])}


def build(config, scratch: Path) -> tuple[TextEncoder, dict, TextDiffusionTrainer]:
    """The frozen random text encoder, the network's kwargs and the trainer, as `train_t2v` builds them."""
    t2v, train = config.t2v, config.t2v.train
    options = t2v.random_text_encoder
    text = TextEncoder.from_folder(
        write_random_clip(scratch / "clip", options.width, options.layers, options.heads, options.seed)
    )
    kwargs = network_kwargs(config.diffusion.unet.model_dump(mode="json"), t2v)
    task = t2v_task(t2v)
    trainer = TextDiffusionTrainer(
        build_network({"unet": kwargs, "unet_weights": None, "freeze_spatial": False}),
        schedule_of(config.diffusion.schedule.model_dump()),
        null_context=text.encode([""])[0],
        caption_dropout=t2v.caption_dropout,
        **trainer_windows(task),
        max_noise_level=task.max_noise_level,
        lr=train.lr,
        weight_decay=train.weight_decay,
        grad_clip=train.grad_clip,
        ema_decay=train.ema_decay,
        loss_type=config.diffusion.loss_type,
        seed=train.seed,
    )
    return text, kwargs, trainer


def ema_network(kwargs: dict, trainer: TextDiffusionTrainer) -> torch.nn.Module:
    network = build_network({"unet": kwargs, "unet_weights": None, "freeze_spatial": False})
    network.load_state_dict(trainer.ema.state_dict()["model"])
    return network.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, required=True, help="a bouncing_shapes_t2v run's workdir")
    parser.add_argument("--set", action="append", default=[], help="an override of the pipeline file")
    parser.add_argument("--eval-at", default="500,1000,1500", help="steps at which to score")
    parser.add_argument("--videos", type=int, default=8, help="per prompt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", type=Path, help="write the last EMA network here (`lvdm.unet` file)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_pipeline(PIPELINE, args.set)
    t2v = config.t2v
    cache = stage_manifest(args.workdir, "cache_latents")
    shards, _ = latent_shards(cache, "cache_latents")
    scale, shift = cache["outputs"]["scale"], cache["outputs"]["shift"]
    scratch = Path(tempfile.mkdtemp(prefix="bench-t2v-"))
    text, kwargs, trainer = build(config, scratch)
    decoder = load_decoder(VIDEO_AUTOENCODER, cache["outputs"]["autoencoder"], torch.device("cpu"))
    params = sum(p.numel() for p in trainer.network.parameters())
    print(
        f"overrides: {args.set or 'none'}; {params:,} parameters; "
        f"batch {t2v.train.batch_size}, lr {t2v.train.lr}"
    )

    def windows(batch_size: int, batches: int, frames: int = t2v.frames, stride: int = 1):
        return latent_window_loader(
            shards,
            frames=frames,
            stride=stride,
            batch_size=batch_size,
            batches_per_epoch=batches,
            captions=True,
        )

    # Training windows as train_t2v loads them: whole spans for a key-stride network's roles.
    frames, stride = window_of(t2v_task(t2v), trainer)
    batches = iter(windows(t2v.train.batch_size, 10**9, frames, stride))
    print("| step | s/step | loss | held-out colour / shape / direction | seen colour / shape / direction |")
    print("|---|---|---|---|---|")
    step, seconds, losses = 0, 0.0, []
    for target in sorted(int(s) for s in args.eval_at.split(",")):
        started = time.perf_counter()
        while step < target:
            batch = next(batches)
            context = text.encode(batch.captions)
            losses.append(trainer.step(normalise(batch.latents, scale, shift), context, step)["loss"])
            step += 1
        seconds += time.perf_counter() - started
        ema = ema_network(kwargs, trainer)
        model = TextVideoModel(
            network=ema,
            text=text,
            decode_latents=decoder.decode,
            scale=scale,
            shift=shift,
            latent_shape=(batch.latents.shape[1], t2v.frames, *batch.latents.shape[3:]),
            guidance_scale=t2v.guidance_scale,
            ft=decoder.ft,
            cond_frames=t2v.cond_frames,
            key_stride=t2v.key_stride,
            decode_windows=decoder.decode_windows,
        )
        prompt_sets = (list(config.sample.prompts), seen_prompts())
        figures = [score(model, prompts, config, args.videos, scratch) for prompts in prompt_sets]
        cells = [" / ".join(f"{f[a]:.2f}" for a in ("colour", "shape", "direction")) for f in figures]
        loss = np.mean(losses[-100:])
        print(f"| {step} | {seconds / step:.2f} | {loss:.3f} | {cells[0]} | {cells[1]} |", flush=True)
    if args.save:
        save_unet(args.save, kwargs, ema.state_dict(), step)
    probe = next(iter(windows(64, 1)))
    print("\nloss of the EMA network on 64 training windows, true captions and one word swapped:")
    print("| t | true | direction | shape | colour | no caption |\n|---|---|---|---|---|---|")
    schedule = schedule_of(config.diffusion.schedule.model_dump())
    latents = normalise(probe.latents, scale, shift)
    for row in word_reliance(ema, text, schedule, latents, probe.captions, config.sampling.noise_level):
        print(row)


if __name__ == "__main__":
    main()

"""What the small models need to generate videos that look like the data (issue 21).

Trains the demo's unconditional UNet in-process (no Ray) on synthetic latents from a trained
demo autoencoder, samples 16-frame clips, decodes them and prints, against real clips of the
test split: pixel coverage of shapes (fraction of pixels with a channel above 64) and mean
absolute frame-to-frame change as ratios to real, and each latent channel's sampled mean and
std against the data's. Every row of the README's "What stopped the small models" table is one
call of this script, e.g.

    lvdm run --until cache_latents --workdir W          # a demo autoencoder
    python benchmarks/bench_generation_quality.py --autoencoder W/stages/train_autoencoder-*/autoencoder.pt \
        --videos 512 --steps 1500 --lr 1e-3 --normalisation channel --sample-steps 10,20

`--task pred` trains the prediction model instead (first `--cond` latents given with p = 0.5,
windows at the `--strides` given, told the stride) and prints the held-out continuation latent
MSE at each stride against a still frame (`lvdm.prediction_check.continuation_errors`).
One thread by default: run it beside other work with `chrt -r 1` for stable step times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
from einops import rearrange

from data_prep.appearance import appearance as exact_appearance
from data_prep.appearance import appearance_ratios, mean_appearance
from data_prep.decode import decode_video
from data_prep.encode import encode_mp4
from data_prep.sources.synthetic import render, simulate
from lvdm.autoencoder import denormalise, latent_normalisation, normalise
from lvdm.diffusion.loss import WEIGHTINGS
from lvdm.diffusion.masks import prediction_mask
from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion.strides import window_span
from lvdm.diffusion_training import DiffusionTrainer
from lvdm.latent_stats import WindowedLatentStats
from lvdm.long_video import SamplingSettings, autoregressive_latents, to_uint8_frames
from lvdm.lr_schedule import SCHEDULES
from lvdm.prediction_check import continuation_errors
from lvdm.unet import UNet3D
from stages.autoencoder_file import load_autoencoder
from stages.position_check import position_check
from stages.unet_file import save_unet

FRAMES, RESOLUTION, CLIP = 24, 32, 8  # the demo's videos and autoencoder clips


def synthetic_metas(count: int, split: int) -> list[dict]:
    """The demo source's videos `(seed 0, split, index)`: their trajectories and shapes."""
    return [
        {"resolution": RESOLUTION} | simulate(np.random.default_rng([0, split, i]), FRAMES, RESOLUTION, 3)
        for i in range(count)
    ]


def synthetic_videos(count: int, split: int, crf: int | None = None) -> np.ndarray:
    """`n t h w c` uint8: the frames of `synthetic_metas`, raw or through H.264 at `crf` (yuv420p,
    as the shard stage stores them)."""
    videos = [render(meta) for meta in synthetic_metas(count, split)]
    if crf is not None:
        videos = [decode_video(encode_mp4(video, crf=crf)).frames for video in videos]
    return np.stack(videos)


@torch.no_grad()
def encode(autoencoder, videos: np.ndarray) -> torch.Tensor:
    """Posterior means `n c l h w` of whole videos, clip by clip (as cache_latents stores them)."""
    x = torch.from_numpy(videos).float().div(127.5).sub(1)
    x = rearrange(x, "n t h w c -> n c t h w")
    return torch.cat(
        [autoencoder.encode(x[:, :, s : s + CLIP]).mode() for s in range(0, FRAMES, CLIP)], dim=2
    )


@torch.no_grad()
def decode(autoencoder, latents: torch.Tensor) -> np.ndarray:
    latent_clip = CLIP // autoencoder.config.ft
    parts = [
        autoencoder.decode(latents[:, :, s : s + latent_clip])
        for s in range(0, latents.shape[2], latent_clip)
    ]
    return to_uint8_frames(torch.cat(parts, dim=2)).numpy()


def appearance(frames: np.ndarray) -> dict[str, float]:
    values = frames.astype(np.float32)
    return {
        "coverage": float((values.max(-1) > 64).mean()),
        "change": float(np.abs(np.diff(values, axis=1)).mean()),
    }


def windows_at(latents: torch.Tensor, frames: int, stride: int, count: int) -> torch.Tensor:
    span = window_span(frames, stride)
    starts = [(i * 5) % (latents.shape[2] - span + 1) for i in range(count)]
    return torch.stack([latents[i % len(latents), :, s : s + span : stride] for i, s in enumerate(starts)])


def train(
    args, network: UNet3D, latents: torch.Tensor, at=None, shard_normalisation=None, **trainer_options
) -> DiffusionTrainer:
    """`args.steps` steps of random windows of `latents`; `at(step, trainer)` runs after each
    step listed in `--eval-at` (one run gives the curve of a figure against training steps:
    at a constant learning rate step k of a longer run is a k-step run). With
    `shard_normalisation` (scale, shift), the batches come from `--latent-shards` through the
    pipeline's loader instead, normalised with it."""
    evaluate_at = {int(s) for s in args.eval_at.split(",") if s}
    trainer = DiffusionTrainer(
        network,
        NoiseSchedule.linear(),
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        total_steps=args.steps,
        ema_decay=args.ema,
        loss_type="l2",
        loss_weighting=args.loss_weighting,
        min_snr_gamma=args.min_snr_gamma,
        autocast_dtype=None if args.fp32 else torch.bfloat16,
        **trainer_options,
    )
    generator = torch.Generator().manual_seed(1 + args.seed)
    span = trainer_options.get("frames", 4)
    if trainer_options.get("strides"):
        span = window_span(span, max(trainer_options["strides"]))
    batches = pipeline_batches(args, span) if shard_normalisation is not None else None
    started = time.perf_counter()
    for step in range(args.steps):
        if batches is not None:
            batch = normalise(next(batches), *shard_normalisation)
        else:
            video = torch.randint(0, len(latents), (args.batch,), generator=generator)
            start = torch.randint(0, latents.shape[2] - span + 1, (args.batch,), generator=generator)
            batch = torch.stack(
                [latents[v, :, s : s + span] for v, s in zip(video.tolist(), start.tolist(), strict=True)]
            )
        loss = trainer.step(batch, step)["loss"]
        if (step + 1) % 500 == 0:
            seconds = (time.perf_counter() - started) / (step + 1)
            print(f"step {step + 1}: loss {loss:.4f}, {seconds:.3f} s/step", flush=True)
        if at is not None and step + 1 in evaluate_at:
            at(step + 1, trainer)
    return trainer


def cached_latents(pattern: str) -> torch.Tensor:
    """`n c l h w`: every sequence of the latent shards matching `pattern`, raw as cached."""
    import glob
    import io

    from data_prep.shard_writer import read_shard

    sequences = [
        np.load(io.BytesIO(fields[ext]), allow_pickle=False)
        for path in sorted(glob.glob(pattern))
        for _, fields in read_shard(path)
        for ext in fields
        if ext.endswith("npy")
    ]
    if not sequences:
        raise SystemExit(f"--latent-shards {pattern!r}: no cached latents")
    return torch.from_numpy(np.stack(sequences)).float()


def pipeline_batches(args, span: int, epoch_batches: int = 500):
    """Endless raw-latent batches from a run's latent cache by the diffusion stages' own loader
    (`data_prep.loader.latent_window_loader`: a shard stream with a shuffle buffer), one epoch
    of `epoch_batches` after another, as the stages draw them between checkpoints."""
    import glob

    from data_prep.loader import latent_window_loader

    shards = sorted(glob.glob(args.latent_shards))
    if not shards:
        raise SystemExit(f"--latent-shards {args.latent_shards!r}: no shard matches")
    epoch = 0
    while True:
        yield from latent_window_loader(
            shards,
            frames=span,
            batch_size=args.batch,
            batches_per_epoch=epoch_batches,
            seed=args.seed,
            epoch=epoch,
            shuffle_buffer=args.shuffle_buffer,
        )
        epoch += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--autoencoder", required=True, help="a demo autoencoder.pt")
    parser.add_argument("--task", choices=["uncond", "pred"], default="uncond")
    parser.add_argument("--videos", type=int, default=32, help="distinct training videos (the demo had 32)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument(
        "--cache-uniform",
        action="store_true",
        help="with --latent-shards: its latents in memory, drawn uniformly (not by the pipeline's loader)",
    )
    parser.add_argument(
        "--shuffle-buffer", type=int, default=64, help="with --latent-shards: the loader's (the stages' 64)"
    )
    parser.add_argument(
        "--latent-shards",
        help="uncond: train on batches of a run's latent cache (a glob of its train-*.tar) drawn by "
        "the pipeline's loader, instead of uniform draws over --videos encoded here",
    )
    parser.add_argument(
        "--train-crf",
        type=int,
        help="train on the videos through H.264 at this crf, as the pipeline's shards hold them "
        "(default: raw renders); samples are still scored against raw renders",
    )
    parser.add_argument(
        "--lr-schedule", choices=SCHEDULES, default="constant", help="cosine: lr to 0 at --steps"
    )
    parser.add_argument(
        "--loss-weighting", choices=WEIGHTINGS, default="none", help="min_snr: Min-SNR-γ per example"
    )
    parser.add_argument("--min-snr-gamma", type=float, default=5.0)
    parser.add_argument("--width", type=int, default=32, help="model_channels")
    parser.add_argument("--attention", default="2", help="attention_resolutions, e.g. 1,2")
    parser.add_argument(
        "--temporal-attention", default="", help="temporal_attention_resolutions (time only), e.g. 1"
    )
    parser.add_argument("--prediction", choices=["eps", "v"], default="eps", help="network output")
    parser.add_argument("--normalisation", choices=["scalar", "channel"], default="scalar")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--sample-steps", default="20", help="DDIM steps, comma-separated")
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--sampler", choices=["ddim", "dpmpp", "ddpm"], default="ddim", help="uncond")
    parser.add_argument(
        "--eval-at", default="", help="uncond: also score the EMA network after these steps, e.g. 500,1000"
    )
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--cond", type=int, default=1, help="pred: latents given")
    parser.add_argument(
        "--strides", default="1,2", help="pred: strides trained on (one: no stride embedding)"
    )
    parser.add_argument(
        "--rollout",
        default="",
        help="pred: autoregressive rollouts of 64 latents after training, one per setting "
        "'s:w:steps:eta:last;...', e.g. '100:0.1:10:1:release;100:0.1:10:0:x0'",
    )
    parser.add_argument("--p-cond", type=float, default=0.5, help="pred: fraction of windows given frames")
    parser.add_argument("--save", default="", help="pred: write the EMA network here (a unet.pt)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training draws, initial weights and sampling noise (figures move with it)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    autoencoder, meta = load_autoencoder(args.autoencoder)
    from_loader = bool(args.latent_shards) and not args.cache_uniform
    if args.latent_shards:
        # The run's cached latents in memory: drawn uniformly like this script's own with
        # --cache-uniform, else only their scale/shift is taken, so that the two ways of drawing
        # batches differ in nothing else.
        train_latents = cached_latents(args.latent_shards)
    else:
        train_latents = encode(autoencoder, synthetic_videos(args.videos, split=0, crf=args.train_crf))
    test_latents = encode(autoencoder, synthetic_videos(64, split=1))
    if args.normalisation == "channel":
        scale, shift = latent_normalisation(train_latents, per_channel=True)
    else:
        scale, shift = meta["scale"], meta["shift"]
        scale, shift = (float(v) if isinstance(v, int | float) else float(np.mean(v)) for v in (scale, shift))
    data, heldout = normalise(train_latents, scale, shift), normalise(test_latents, scale, shift)
    result: dict = {
        "args": vars(args),
        "data_mean": per_channel(data, "mean"),
        "data_std": per_channel(data, "std"),
    }
    channels = autoencoder.config.latent_channels  # the reference file's is 8, the demo's 4
    unet = dict(
        model_channels=args.width,
        channel_mult=[1, 2],
        num_res_blocks=1,
        attention_resolutions=[int(a) for a in args.attention.split(",")],
        temporal_attention_resolutions=[int(a) for a in args.temporal_attention.split(",") if a],
        prediction=args.prediction,
        num_heads=4,
        temporal_length=4,
        norm_groups=8,
    )
    if args.task == "uncond":
        real_clips = synthetic_videos(64, split=1)[: args.samples, :8]
        real = appearance(real_clips)
        real_exact = mean_appearance([exact_appearance(clip) for clip in real_clips])
        result["real"] = real | {"exact": real_exact}
        curve: dict[int, dict] = {}

        def figures(step: int, trainer: DiffusionTrainer) -> None:
            curve[step] = unconditional_figures(args, trainer, autoencoder, scale, shift, real, real_exact)
            print(json.dumps({"step": step, **curve[step]}), flush=True)

        trainer = train(
            args,
            UNet3D(in_channels=channels, out_channels=channels, **unet),
            data,
            at=figures,
            shard_normalisation=(scale, shift) if from_loader else None,
        )
        if args.steps not in curve:
            figures(args.steps, trainer)
        result |= curve[args.steps]
        result["curve"] = curve
    else:
        strides = [int(s) for s in args.strides.split(",")]
        network = UNet3D(
            in_channels=channels + 1,
            out_channels=channels,
            max_noise_level=250,
            max_stride=max(strides) if len(strides) > 1 else 0,
            **unet,
        )
        mask = lambda b, f, g: prediction_mask(b, f, k=args.cond, p=args.p_cond, generator=g)  # noqa: E731
        if len(strides) > 1:
            trainer = train(
                args, network, data, mask_sampler=mask, max_noise_level=250, strides=strides, frames=4
            )
        else:
            data = data[:, :, :: strides[0]]
            trainer = train(args, network, data, mask_sampler=mask, max_noise_level=250)
        for stride in strides:
            clips = windows_at(heldout, 4, stride, 32)
            errors = continuation_errors(
                trainer.ema.model.eval(),
                None,
                clips,
                trainer.schedule,
                cond_frames=args.cond,
                steps=int(args.sample_steps.split(",")[0]),
                eta=args.eta,
                stride=stride if len(strides) > 1 else None,
            )
            result[f"stride{stride}"] = {k: round(v, 4) for k, v in errors.items()}
        result["position"] = positions(args, trainer, autoencoder, scale, shift, strides)
        if args.save:
            save_unet(
                args.save, dataclasses.asdict(network.config), trainer.ema.model.state_dict(), args.steps
            )
            with open(f"{args.save}.normalisation.json", "w") as out:
                json.dump({"scale": scale, "shift": shift}, out)
        for setting in filter(None, args.rollout.split(";")):
            result[f"rollout {setting}"] = rollout(trainer.ema.model.eval(), trainer.schedule, setting)
    print(json.dumps(result), flush=True)


def unconditional_figures(
    args, trainer: DiffusionTrainer, autoencoder, scale, shift, real: dict, real_exact: dict
) -> dict:
    """The EMA network's samples (8 frames each) against real clips, per sampler step count:
    the crude coverage/change ratios of the README's first table and the exact appearance
    statistics of the reference goals (`data_prep.appearance`: shape count, size, on-palette
    fraction), each a ratio to real, and the sampled latents' per-channel mean and std."""
    model = trainer.ema.model.eval()
    figures = {}
    for steps in (int(s) for s in args.sample_steps.split(",")):
        sample = sample_latents(
            model,
            (args.samples, model.config.out_channels, 4, 16, 16),
            trainer.schedule,
            sampler=args.sampler,
            steps=steps,
            eta=args.eta,
            generator=torch.Generator().manual_seed(7 + args.seed),
        )
        frames = decode(autoencoder, denormalise(sample, scale, shift))
        fake = appearance(frames)
        exact = appearance_ratios(mean_appearance([exact_appearance(clip) for clip in frames]), real_exact)
        figures[f"{args.sampler}{steps}"] = {
            "coverage_ratio": fake["coverage"] / real["coverage"],
            "change_ratio": fake["change"] / real["change"],
            "exact_vs_real": {k: None if v is None else round(v, 3) for k, v in exact.items()},
            "sample_mean": per_channel(sample, "mean"),
            "sample_std": per_channel(sample, "std"),
        }
    return figures


def positions(args, trainer: DiffusionTrainer, autoencoder, scale, shift, strides: list[int]) -> dict:
    """train_pred's exact check (`stages.position_check`) at stride 1 on 32 held-out videos:
    position error in pixels (and the fraction of shapes found by colour) at +4/+8/+16 frames,
    for the prediction (s = 100, w = 0.1, DDIM η = 0, as the reference run samples) and a
    still frame."""
    clips = [(meta, render(meta)) for meta in synthetic_metas(32, split=1)]
    sampling = SamplingSettings(
        steps=int(args.sample_steps.split(",")[0]), eta=0.0, noise_level=100, guidance_weight=0.1
    )
    results = position_check(
        trainer.ema.model.eval(),
        None,
        autoencoder,
        clips,
        trainer.schedule,
        scale=scale,
        shift=shift,
        cond_frames=args.cond,
        clip_latents=4,
        latent_stride=1,
        unconditional_latents=4,
        encode_window=CLIP,
        sampling=sampling,
        stride=1 if len(strides) > 1 else None,
    )
    return {
        row: {
            k: [None if v[m] is None else round(v[m], 2) for m in ("error", "found")]
            for k, v in results[row].items()
        }
        for row in ("prediction", "prediction_no_perturbation", "still_frame", "autoencoder")
    }


def rollout(model: UNet3D, schedule: NoiseSchedule, setting: str) -> list[list[float]]:
    """Per window of 8 latents (16 frames) of 8 autoregressive videos of 64 latents: the mean
    over channels of |channel mean| and of channel std (normalised data: 0 and 1)."""
    s, w, steps, eta, last = setting.split(":")
    sampling = SamplingSettings(
        steps=int(steps), eta=float(eta), noise_level=int(s), guidance_weight=float(w), ddim_last_step=last
    )
    stats = WindowedLatentStats(window=8)
    chunks = autoregressive_latents(
        model,
        schedule,
        videos=8,
        latents=64,
        latent_shape=(model.config.out_channels, 16, 16),
        clip=4,
        cond_frames=1,
        sampling=sampling,
        generator=torch.Generator().manual_seed(0),
        stride=1,
    )
    for chunk in chunks:
        stats.add(chunk)
    return [
        [round(float(np.mean(np.abs(window["mean"]))), 2), round(float(np.mean(window["std"])), 2)]
        for window in stats.windows()
    ]


def per_channel(latents: torch.Tensor, statistic: str) -> list[float]:
    values = rearrange(latents, "b c t h w -> c (b t h w)")
    return [round(v, 3) for v in getattr(values, statistic)(dim=1).tolist()]


if __name__ == "__main__":
    main()

"""Held-out PSNR of the demo autoencoder per N training steps, baseline beside the fix.

    python benchmarks/bench_demo_autoencoder.py                        # every configuration
    python benchmarks/bench_demo_autoencoder.py --configs baseline demo_mse --steps 480 --every 120
    python benchmarks/bench_demo_autoencoder.py --configs demo_mse --precision fp32 bf16

Trains `pipelines/demo.yaml`'s autoencoder (8x32x32 clips, fs=4, ft=2, hidden 16) with the
library alone (no Ray, no MLflow) on bouncing-shapes clips generated in memory by
`data_prep.sources.synthetic` (the demo's train / test split and seed, no H.264 round
trip), and prints for each configuration and precision: held-out PSNR every `--every`
steps (16 test clips, posterior mean, as the stage's preview), the all-black PSNR of the
same clips for reference, the mean colour error inside each shape (0-255 RGB, from the
true positions in the metadata) and seconds per step. Timings on a shared CPU are noisy.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from data_prep.clip_sampling import frames_to_model_range
from data_prep.sources import synthetic
from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.autoencoder_training import AutoencoderTrainer, psnr
from lvdm.discriminator import build_discriminator
from lvdm.losses.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig

FRAMES, RESOLUTION, VIDEO_FRAMES = 8, 32, 24


@dataclass(frozen=True)
class Setting:
    """One demo configuration: model, loss, optimiser and data."""

    model: dict = field(default_factory=dict)
    reconstruction: str = "l1"
    lr: float = 3e-4
    sample_posterior: bool = True
    half_size: tuple[float, float] = (0.08, 0.15)


SETTINGS = {
    # pipelines/demo.yaml before the fix, without LPIPS (--lpips adds it: 4x the step cost).
    "baseline": Setting(model={"norm_groups": 16}),
    # pipelines/demo.yaml after: MSE, no LPIPS (and 480 steps in the old 120 steps' time).
    "demo_mse": Setting(model={"norm_groups": 16}, reconstruction="mse"),
    # Candidates tried on top: resize-conv upsampling, 4 GroupNorm groups, posterior mean,
    # higher lr; and the same on bigger shapes (data change).
    "nearest_gn4": Setting(
        model={"norm_groups": 4, "upsample": "nearest"}, reconstruction="mse", lr=1e-3, sample_posterior=False
    ),
    "bigger_shapes": Setting(
        model={"norm_groups": 4, "upsample": "nearest"},
        reconstruction="mse",
        lr=1e-3,
        sample_posterior=False,
        half_size=(0.15, 0.3),
    ),
}


def clips(split: str, count: int, half_size: tuple[float, float], seed: int = 0):
    """`count` videos of `split` cut into non-overlapping 8-frame clips, with per-clip meta."""
    saved = synthetic.HALF_SIZE_RANGE
    synthetic.HALF_SIZE_RANGE = half_size
    try:
        videos = synthetic.discover(None, [split], {split: count}, VIDEO_FRAMES, RESOLUTION, seed).videos
    finally:
        synthetic.HALF_SIZE_RANGE = saved
    out, metas = [], []
    for video in videos:
        frames = synthetic.render(video.meta)
        for start in range(0, VIDEO_FRAMES - FRAMES + 1, FRAMES):
            out.append(frames_to_model_range(frames[start : start + FRAMES]))
            metas.append({**video.meta, "positions": video.meta["positions"][start : start + FRAMES]})
    return torch.from_numpy(np.stack(out)), metas


def colour_error(x: torch.Tensor, recon: torch.Tensor, metas: list[dict]) -> float:
    """Mean |RGB difference| (0-255) of each visible shape's mean colour, original vs reconstruction."""
    errors = []
    to_rgb = lambda v: (v.clamp(-1, 1) + 1) * 127.5  # noqa: E731
    for clip, rec, meta in zip(to_rgb(x), to_rgb(recon), metas, strict=True):
        size = meta["resolution"]
        centres = np.arange(size) + 0.5
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        for t, positions in enumerate(meta["positions"]):
            for shape, (cx, cy) in zip(meta["shapes"], positions, strict=True):
                # The shape's core only (one pixel in from its edge): edges blur in any codec.
                half = shape["half_size"] - 1.0
                if shape["shape"] == "circle":
                    inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
                else:
                    inside = np.maximum(np.abs(xs - cx), np.abs(ys - cy)) <= half
                mask = torch.from_numpy(inside)
                truth = clip[:, t][:, mask].mean(dim=1)
                if mask.sum() < 2 or (truth - torch.tensor(shape["colour"])).abs().max() > 8:
                    continue  # occluded by a later shape
                errors.append((rec[:, t][:, mask].mean(dim=1) - truth).abs().mean().item())
    return float(np.mean(errors))


def train(name: str, setting: Setting, args, precision: str) -> None:
    torch.manual_seed(args.seed)
    train_clips, _ = clips("train", 32, setting.half_size)
    test_clips, test_meta = clips("test", 8, setting.half_size)
    config = AutoencoderConfig(hidden=16, fs=4, ft=2, **setting.model)
    model = VideoAutoencoder(config)
    perceptual = None
    if args.lpips:
        from lvdm.losses.lpips import load_lpips

        perceptual = load_lpips("vgg")
    loss = AutoencoderLoss(
        AutoencoderLossConfig(
            reconstruction=setting.reconstruction,
            perceptual_weight=1.0 if args.lpips else 0.0,
            disc_start=10**9,  # the demo's GAN only joins for its last steps; left out here
        ),
        perceptual,
    )
    trainer = AutoencoderTrainer(
        model,
        build_discriminator("frame", num_layers=3, base_channels=32),
        loss,
        lr=setting.lr,
        autocast_dtype=torch.bfloat16 if precision == "bf16" else None,
        seed=args.seed,
        sample_posterior=setting.sample_posterior,
    )
    black = psnr(test_clips, torch.full_like(test_clips, -1.0))
    print(f"\n{name} [{precision}] {setting}  (all-black output: {black:.2f} dB)")
    rng = np.random.default_rng(args.seed)
    seconds = 0.0
    for step in range(1, args.steps + 1):
        batch = train_clips[rng.choice(len(train_clips), args.batch_size, replace=False)]
        start = time.perf_counter()
        trainer.step(batch, step - 1)
        seconds += time.perf_counter() - start
        if step % args.every == 0 or step == args.steps:
            recon = trainer.reconstruct(test_clips)
            print(
                f"  step {step:5d}  held-out PSNR {psnr(test_clips, recon):6.2f} dB  "
                f"shape colour error {colour_error(test_clips, recon, test_meta):5.1f}/255  "
                f"{seconds / step:.3f} s/step",
                flush=True,
            )


def step_seconds(setting: Setting, steps: int, batch_size: int) -> dict[str, float]:
    """Median s/step of fp32 and bf16 autocast, their steps interleaved so both see the same load."""
    batch = clips("train", 4, setting.half_size)[0][:batch_size]
    trainers = {}
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = VideoAutoencoder(AutoencoderConfig(hidden=16, fs=4, ft=2, **setting.model))
        loss = AutoencoderLoss(
            AutoencoderLossConfig(
                reconstruction=setting.reconstruction, perceptual_weight=0.0, disc_start=10**9
            )
        )
        disc = build_discriminator("frame", num_layers=3, base_channels=32)
        trainers[precision] = AutoencoderTrainer(model, disc, loss, lr=setting.lr, autocast_dtype=dtype)
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for step in range(steps + 1):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.step(batch, step)
            if step:  # the first step of each warms up oneDNN
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=480)
    parser.add_argument("--every", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lpips", action="store_true", help="add LPIPS-VGG (needs `lvdm weights fetch`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-steps", type=int, default=0, help="only time fp32 vs bf16 (interleaved)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.timing_steps:
        for name in args.configs:
            seconds = step_seconds(SETTINGS[name], args.timing_steps, args.batch_size)
            print(f"{name}: " + ", ".join(f"{p} {s:.3f} s/step" for p, s in seconds.items()))
        return
    for name in args.configs:
        for precision in args.precision:
            train(name, SETTINGS[name], args, precision)


if __name__ == "__main__":
    main()

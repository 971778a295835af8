"""Cost of the pretrained networks on CPU: I3D (FVD's feature extractor) and LPIPS-VGG (the AE loss).

    python benchmarks/bench_pretrained.py [--i3d-batches 1 8 --i3d-repeats 2 --lpips-repeats 5]

1. I3D clips/s for 16x224x224 clips at batch 1 and 8 (inference, `torch.no_grad`).
2. LPIPS-VGG on the demo's clips (batch 2 x 16 frames of 64x64, frames folded into the batch as
   the autoencoder loss does): forward + backward to the reconstruction, per clip, and its share of
   one `AutoencoderTrainer.step` at that size (default `AutoencoderConfig`, L1 + LPIPS, no GAN).

Uses the real weights when `lvdm weights fetch` has run, else random ones (same cost). A script,
not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from einops import rearrange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout

from lvdm.losses.lpips import load_lpips  # noqa: E402
from lvdm.metrics.i3d import InceptionI3d, load_i3d  # noqa: E402
from lvdm.pretrained.cache import MissingWeightsError  # noqa: E402


def seconds_per_call(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernel selection
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench_i3d(batches: list[int], repeats: int) -> None:
    try:
        model, weights = load_i3d(), "Kinetics-400"
    except MissingWeightsError:
        model, weights = InceptionI3d().eval(), "random"
    print(f"I3D ({weights} weights), 16x224x224 clips, no_grad:")
    for b in batches:
        video = torch.rand(b, 3, 16, 224, 224) * 2 - 1
        with torch.no_grad():
            s = seconds_per_call(lambda v=video: model(v), repeats)
        print(f"  batch {b:>2}: {b / s:6.2f} clips/s ({s:.2f} s per batch)")


def bench_lpips(repeats: int, steps: int) -> None:
    try:
        lpips, weights = load_lpips("vgg"), "ImageNet VGG16"
    except MissingWeightsError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lpips, weights = load_lpips("vgg", random=True), "random"
    b, t, size = 2, 16, 64
    x = torch.rand(b, 3, t, size, size) * 2 - 1
    recon = (torch.rand(b, 3, t, size, size) * 2 - 1).requires_grad_(True)

    def loss_step() -> None:
        frames = (rearrange(v, "b c t h w -> (b t) c h w") for v in (x, recon))
        lpips(*frames).mean().backward()

    s = seconds_per_call(loss_step, repeats)
    print(f"LPIPS-VGG ({weights} trunk), batch {b} x {t} frames of {size}x{size}, forward + backward:")
    print(f"  {s * 1000 / b:.1f} ms per clip, {s * 1000 / (b * t):.2f} ms per frame")
    try:
        from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
        from lvdm.autoencoder_training import AutoencoderTrainer
        from lvdm.discriminator import build_discriminator
        from lvdm.losses.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
    except ImportError as err:  # the autoencoder is optional for this figure
        print(f"  (no autoencoder step to compare with: {err})")
        return
    torch.manual_seed(0)
    loss = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=1.0, disc_start=10**9), lpips)
    trainer = AutoencoderTrainer(VideoAutoencoder(AutoencoderConfig()), build_discriminator("frame"), loss)
    counter = iter(range(10**6))
    step = seconds_per_call(lambda: trainer.step(x, next(counter)), steps)
    print(
        f"  one AutoencoderTrainer.step (default config, L1 + LPIPS) on that batch: {step:.2f} s; "
        f"LPIPS share {s / step:.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--i3d-batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--i3d-repeats", type=int, default=2)
    parser.add_argument("--lpips-repeats", type=int, default=5)
    parser.add_argument("--ae-steps", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu")
    bench_lpips(args.lpips_repeats, args.ae_steps)
    bench_i3d(args.i3d_batches, args.i3d_repeats)


if __name__ == "__main__":
    main()

"""Autoencoder figures: training throughput on this machine, and the paper's compression.

    python benchmarks/bench_autoencoder.py                       # paper model, 64x64x16 demo clips
    python benchmarks/bench_autoencoder.py --hidden 16 --steps 5 # a lighter demo model

1. Training throughput (clips/s) of one `AutoencoderTrainer.step` at the demo clip size,
   for three losses: reconstruction only; + LPIPS-VGG per frame (random trunk: same cost as
   the real one); + the per-frame PatchGAN (the steady state after `disc_start`).
2. The size of one paper-size latent (LVDM Table 2, "#Dims 16k") beside its pixel count,
   from the shape the paper model actually outputs for a zero 256x256x16 clip
   (`--no-paper-forward` uses the config arithmetic instead).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from dataclasses import asdict

import lpips
import torch
from torch import nn

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.autoencoder_training import AutoencoderTrainer
from lvdm.discriminator import build_discriminator
from lvdm.losses.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig


def random_lpips() -> nn.Module:
    """LPIPS-VGG from the `lpips` package with a random trunk: the real network's cost, no download.

    Not `lvdm.losses.lpips.load_lpips(random=True)`: that wrapper refuses inputs outside
    [-1.5, 1.5], which an untrained decoder produces within a step.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lpips 0.1.4 calls torchvision's deprecated `pretrained=`
        net = lpips.LPIPS(pretrained=False, pnet_rand=True, net="vgg", verbose=False)
    return FrameLPIPS(net)


class FrameLPIPS(nn.Module):
    """`lpips.LPIPS` returns `(b, 1, 1, 1)`; the loss wants `(b,)`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y).flatten()


def clips_per_second(
    config: AutoencoderConfig, batch: torch.Tensor, perceptual: nn.Module | None, gan: bool, steps: int
) -> float:
    torch.manual_seed(0)
    loss = AutoencoderLoss(
        AutoencoderLossConfig(perceptual_weight=1.0 if perceptual else 0.0, disc_start=0 if gan else 10**9),
        perceptual,
    )
    trainer = AutoencoderTrainer(VideoAutoencoder(config), build_discriminator("frame"), loss)
    trainer.step(batch, 0)  # warm-up: allocator, oneDNN kernel selection
    start = time.perf_counter()
    for step in range(1, steps + 1):
        trainer.step(batch, step)
    return steps * batch.shape[0] / (time.perf_counter() - start)


def paper_latent_shape(forward: bool) -> tuple[tuple[int, ...], str]:
    config = AutoencoderConfig.paper()
    if not forward:
        return (
            config.latent_channels,
            16 // config.ft,
            256 // config.fs,
            256 // config.fs,
        ), "config arithmetic"
    model = VideoAutoencoder(config).eval()
    start = time.perf_counter()
    with torch.no_grad():
        latent = model.encode(torch.zeros(1, 3, 16, 256, 256)).mean
    return tuple(latent.shape[1:]), f"encoder forward pass, {time.perf_counter() - start:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--fs", type=int, default=8)
    parser.add_argument("--ft", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--no-paper-forward", action="store_true")
    args = parser.parse_args()

    config = AutoencoderConfig(hidden=args.hidden, fs=args.fs, ft=args.ft, norm_groups=min(32, args.hidden))
    params = sum(p.numel() for p in VideoAutoencoder(config).parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print(f"config: {asdict(config)}")
    print(f"autoencoder parameters: {params / 1e6:.2f}M")
    print(
        f"clips: batch {args.batch} x 3 x {args.frames} x {args.size} x {args.size}, {args.steps} timed steps"
    )
    batch = torch.rand(args.batch, 3, args.frames, args.size, args.size) * 2 - 1

    rec = clips_per_second(config, batch, None, gan=False, steps=args.steps)
    perceptual = random_lpips()
    rec_lpips = clips_per_second(config, batch, perceptual, gan=False, steps=args.steps)
    full = clips_per_second(config, batch, perceptual, gan=True, steps=args.steps)
    print(f"{'loss':<34}{'clips/s':>10}{'vs rec only':>14}")
    for name, value in (
        ("reconstruction (L1)", rec),
        ("+ LPIPS-VGG per frame", rec_lpips),
        ("+ LPIPS + frame PatchGAN", full),
    ):
        print(f"{name:<34}{value:>10.3f}{value / rec:>13.2f}x")

    shape, source = paper_latent_shape(forward=not args.no_paper_forward)
    latent, pixels = math.prod(shape), 3 * 16 * 256 * 256
    print(f"paper latent of a 256x256x16 clip: {shape} = {latent:,} numbers ({source})")
    print(f"pixels of that clip: 3x16x256x256 = {pixels:,} values; compression {pixels / latent:.0f}x")


if __name__ == "__main__":
    main()

"""fp32 vs bf16 autocast training steps on this machine: what `precision: auto` buys.

    python benchmarks/bench_precision.py                 # demo and paper-size steps, CPU
    python benchmarks/bench_precision.py --device cuda   # the same on a GPU

`auto` picks bf16 where the hardware computes it natively (CUDA with bf16; CPUs with AMX or
AVX512-BF16). Native does not mean faster at every size: autocast casts weights and
activations per op, and on tiny tensors those casts cost more than the arithmetic saves.
This prints, side by side, seconds per training step in fp32 and under bf16 autocast for

1. the demo autoencoder (8x32x32 clips, batch 4, L1, no LPIPS) and the paper autoencoder
   (16x64x64 clips, batch 1);
2. the demo UNet (4x4x16x16 latents, batch 8) and a paper-layout UNet at reduced width
   (4x4x32x32 latents, batch 1, `--paper-channels`).
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.autoencoder_training import AutoencoderTrainer
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion_training import DiffusionTrainer
from lvdm.discriminator import build_discriminator
from lvdm.losses.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from lvdm.precision import cpu_has_native_bf16
from lvdm.unet import UNet3D


def seconds_per_step(step, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def autoencoder_step(config: AutoencoderConfig, clip: tuple, batch: int, dtype, device):
    torch.manual_seed(0)
    model = VideoAutoencoder(config).to(device)
    loss = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0, disc_start=10**9), None).to(device)
    trainer = AutoencoderTrainer(model, build_discriminator("frame"), loss, lr=1e-4, autocast_dtype=dtype)
    x = torch.rand(batch, 3, *clip, device=device) * 2 - 1
    return lambda: trainer.step(x, 0)


def unet_step(kwargs: dict, latent: tuple, batch: int, dtype, device):
    torch.manual_seed(0)
    trainer = DiffusionTrainer(UNet3D(**kwargs).to(device), NoiseSchedule.linear(), autocast_dtype=dtype)
    x = torch.randn(batch, kwargs["in_channels"], *latent, device=device)
    return lambda: trainer.step(x)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paper-channels", type=int, default=64, help="UNet width for the paper-size row")
    parser.add_argument("--skip-paper", action="store_true", help="only the demo sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    print(f"device {device}, {args.threads} threads, native bf16: {native}, torch {torch.__version__}")

    demo = yaml.safe_load(open("pipelines/demo.yaml"))
    demo_ae = AutoencoderConfig(**demo["autoencoder"]["model"])
    rows = [
        ("demo autoencoder, 4 x 8x32x32", lambda dt: autoencoder_step(demo_ae, (8, 32, 32), 4, dt, device)),
        (
            "demo UNet, 8 x 4x4x16x16 latents",
            lambda dt: unet_step(demo["diffusion"]["unet"], (4, 16, 16), 8, dt, device),
        ),
    ]
    if not args.skip_paper:
        paper_unet = {
            "in_channels": 4,
            "out_channels": 4,
            "model_channels": args.paper_channels,
            "norm_groups": 32 if args.paper_channels % 32 == 0 else 8,
        }
        rows += [
            (
                "paper autoencoder, 1 x 16x64x64",
                lambda dt: autoencoder_step(AutoencoderConfig.paper(), (16, 64, 64), 1, dt, device),
            ),
            (
                f"paper-layout UNet width {args.paper_channels}, 1 x 4x4x32x32",
                lambda dt: unet_step(paper_unet, (4, 32, 32), 1, dt, device),
            ),
        ]
    print(f"{'step':<52} {'fp32 s':>8} {'bf16 s':>8} {'fp32/bf16':>10}")
    for name, build in rows:
        fp32 = seconds_per_step(build(None), 2, args.repeats)
        bf16 = seconds_per_step(build(torch.bfloat16), 2, args.repeats)
        print(f"{name:<52} {fp32:8.3f} {bf16:8.3f} {fp32 / bf16:9.2f}x")


if __name__ == "__main__":
    main()

"""3D UNet figures: latent vs pixel training, ours vs diffusers, sampling step time, checkpointing memory.

    python benchmarks/bench_unet.py                               # CPU: a few minutes, 1 thread
    python benchmarks/bench_unet.py --paper-channels 256 --repeats 1   # official width on CPU (slow)
    python benchmarks/bench_unet.py --device cuda                 # GPU: official width by default

(a) LVDM Table 2's claim: a training step (forward + backward) of the same UNet on a
    latent clip vs on the pixel clip it encodes (RGB `frames x size x size` vs 4 channels at
    /4 in time and /8 in space, the paper autoencoder's factors). The paper reports ~6x.
(b) Our UNet vs diffusers' `UNet3DConditionModel` (a ModelScope-style 3D UNet with temporal
    convolutions and cross attention; given a single zero text token) at about the same
    parameter count and the same latent input: forward + backward.
(c) Seconds per UNet forward = one DDIM step without guidance; a step with classifier-free
    guidance runs the conditional and unconditional halves as one double batch. At the demo
    size (b=4, 4x4x8x8 latents, the demo UNet) and the paper size (4x4x32x32 latents).
(d) Peak memory of a paper-size training step, with and without `use_checkpoint`, each in a
    fresh subprocess: `torch.cuda.max_memory_allocated` on GPU (exact); on CPU (Linux) the
    growth of the process's peak RSS during the step, i.e. activations + gradients + whatever
    the allocator and first-call kernel caches keep: coarse, and at small widths dominated by
    those caches, so read the GPU figure for the effect of checkpointing.

Figures only: nothing here asserts a timing. diffusers comes with the `bench` extra
(`pip install -e .[bench]`); without it (b) is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lvdm.unet import UNet3D

# The demo pipeline's UNet (a CPU-sized model with every code path of the paper one).
DEMO_UNET = dict(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(2,),
    num_heads=4,
    norm_groups=8,
)
PAPER_LATENT = (4, 4, 32, 32)  # c t h w: a 16x256x256 clip through the paper autoencoder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1; more oversubscribe a shared machine)",
    )
    parser.add_argument("--sections", default="abcd", help="which of a, b, c, d to run (default: abcd)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions of small runs (default: 2)")
    parser.add_argument(
        "--paper-repeats",
        type=int,
        default=1,
        help="timed repetitions at the paper size; on CUDA after a warm-up",
    )
    parser.add_argument(
        "--width", type=int, default=32, help="model_channels of the (a)/(b) UNets (default: 32)"
    )
    parser.add_argument(
        "--res-blocks", type=int, default=1, help="num_res_blocks of the (a)/(b) UNets (default: 1)"
    )
    parser.add_argument("--clip-frames", type=int, default=16, help="(a) pixel clip frames (default: 16)")
    parser.add_argument(
        "--clip-size", type=int, default=64, help="(a) pixel clip height = width (default: 64)"
    )
    parser.add_argument("--batch", type=int, default=2, help="(b) batch of 4x4x32x32 latents (default: 2)")
    parser.add_argument(
        "--paper-channels",
        type=int,
        default=None,
        help="model_channels at the paper size in (c), (d): default 256 (official) on cuda, 128 on cpu",
    )
    parser.add_argument("--memory-child", choices=["plain", "checkpoint"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.paper_channels is None:
        args.paper_channels = 256 if args.device.startswith("cuda") else 128
    return args


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], None], repeats: int, warmup: int, device: torch.device) -> float:
    """Mean wall time of `fn` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def training_step(
    model: nn.Module, forward: Callable[[], torch.Tensor], target: torch.Tensor
) -> Callable[[], None]:
    """One L1 noise-prediction step (the official `loss_type l1`) without the optimiser update."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.l1_loss(forward(), target).backward()

    return step


def unet_step(model: UNet3D, x: torch.Tensor) -> Callable[[], None]:
    t = torch.randint(0, 1000, (x.shape[0],), device=x.device)
    return training_step(model, lambda: model(x, t), torch.randn_like(x[:, : model.config.out_channels]))


def unet(device: torch.device, dtype: torch.dtype, **kwargs) -> UNet3D:
    torch.manual_seed(0)
    return UNet3D(**kwargs).to(device=device, dtype=dtype)


def small_unet_kwargs(args: argparse.Namespace) -> dict:
    """The (a)/(b) UNet: the official layout (4 levels, attention at 2, 4, 8) at a CPU width."""
    return dict(
        model_channels=args.width,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=args.res_blocks,
        attention_resolutions=(2, 4, 8),
        num_heads=4,
        norm_groups=min(32, args.width),
    )


def latent_vs_pixel(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    f, s = args.clip_frames, args.clip_size
    pixel_shape, latent_shape = (1, 3, f, s, s), (1, 4, f // 4, s // 8, s // 8)
    rows = []
    for name, shape in (("pixel", pixel_shape), ("latent", latent_shape)):
        model = unet(
            device, dtype, in_channels=shape[1], out_channels=shape[1], **small_unet_kwargs(args)
        ).train()
        x = torch.randn(shape, device=device, dtype=dtype)
        rows.append((name, shape, count(model), seconds(unet_step(model, x), args.repeats, 1, device)))
    print(f"(a) training step, same UNet (width {args.width}, {args.res_blocks} res block(s)/level), batch 1")
    for name, shape, params, secs in rows:
        print(f"    {name:6s} input {str(shape[1:]):18s} params {params:>11,}   {secs:8.3f} s/step")
    print(
        f"    pixel / latent = {rows[0][3] / rows[1][3]:.1f}x faster in latent space   (paper, Table 2: ~6x)"
    )


def diffusers_unet(width: int, res_blocks: int, context_dim: int):
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(width * m for m in (1, 2, 3, 4)),
        layers_per_block=res_blocks,
        down_block_types=("DownBlock3D",) + ("CrossAttnDownBlock3D",) * 3,
        up_block_types=("CrossAttnUpBlock3D",) * 3 + ("UpBlock3D",),
        norm_num_groups=8,
        cross_attention_dim=context_dim,
        attention_head_dim=8,
    )


def ours_vs_diffusers(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    try:
        import diffusers
    except ImportError:
        print("(b) skipped: diffusers is not installed (pip install -e .[bench])")
        return
    ours = unet(device, dtype, **small_unet_kwargs(args)).train()
    target, context_dim = count(ours), 64
    # Same layout (4 levels, attention at the three lower ones); the width is the multiple of
    # 8 (its norm groups here) whose parameter count is nearest ours, counted on the meta device.
    with torch.device("meta"):
        widths = {
            w: count(diffusers_unet(w, args.res_blocks, context_dim)) for w in range(8, 2 * args.width + 1, 8)
        }
    width = min(widths, key=lambda w: abs(widths[w] - target))
    torch.manual_seed(0)
    theirs = diffusers_unet(width, args.res_blocks, context_dim).to(device).train()
    if dtype != torch.float32:  # diffusers warns on any .to(dtype), even float32
        theirs = theirs.to(dtype)
    x = torch.randn(args.batch, *PAPER_LATENT, device=device, dtype=dtype)
    t = torch.randint(0, 1000, (args.batch,), device=device)
    text = torch.zeros(args.batch, 1, context_dim, device=device, dtype=dtype)
    ours_s = seconds(unet_step(ours, x), args.repeats, 1, device)
    their_step = training_step(
        theirs, lambda: theirs(x, t, encoder_hidden_states=text).sample, torch.randn_like(x)
    )
    theirs_s = seconds(their_step, args.repeats, 1, device)
    print(f"(b) training step on {args.batch}x{PAPER_LATENT} latents, ~equal parameter count")
    print(
        f"    ours  UNet3D               width {args.width:4d}  params {target:>11,}   {ours_s:8.3f} s/step"
    )
    name = f"diffusers {diffusers.__version__} UNet3DConditionModel"
    print(f"    {name:32s} width {width:4d}  params {count(theirs):>11,}   {theirs_s:8.3f} s/step")
    print(f"    diffusers / ours = {theirs_s / ours_s:.2f}x")


def step_seconds(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    print("(c) seconds per UNet forward (no grad); x50 = a 50-step DDIM sample, x1000 = DDPM")
    paper = dict(model_channels=args.paper_channels)
    for name, kwargs, batch, latent, repeats, warmup in (
        ("demo", DEMO_UNET, 4, (4, 4, 8, 8), args.repeats, 1),
        ("paper", paper, 1, PAPER_LATENT, args.paper_repeats, int(device.type == "cuda")),
    ):
        model = unet(device, dtype, **kwargs).eval()
        size = f"model_channels {model.config.model_channels} ({count(model):,} params)"
        print(f"    {name}: {size}, latents {batch}x{latent}")
        for label, b in (("no guidance", batch), ("guidance (2x batch)", 2 * batch)):
            x = torch.randn(b, *latent, device=device, dtype=dtype)
            t = torch.full((b,), 500, device=device)
            with torch.no_grad():
                secs = seconds(lambda model=model, x=x, t=t: model(x, t), repeats, warmup, device)
            print(
                f"      {label:20s} {secs:8.3f} s/step   x50 {50 * secs:8.1f} s   x1000 {1000 * secs:9.1f} s"
            )


def process_memory(key: str) -> int:
    """`VmRSS` (now) or `VmHWM` (peak) of this process in bytes, from /proc/self/status (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def reset_peak_rss() -> None:
    """Set VmHWM to the current RSS. Needed even in a fresh process: Linux carries `ru_maxrss`
    across exec, so a child started by a parent holding big models would inherit its peak."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def memory_child(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    """Runs in a fresh process: one paper-size training step; prints the memory it took as JSON."""
    model = unet(
        device, dtype, model_channels=args.paper_channels, use_checkpoint=args.memory_child == "checkpoint"
    ).train()
    x = torch.randn(1, *PAPER_LATENT, device=device, dtype=dtype)
    step = unet_step(model, x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peak, kind = torch.cuda.max_memory_allocated(device) - before, "cuda max_memory_allocated"
    else:
        reset_peak_rss()
        before = process_memory("VmRSS")
        step()
        peak, kind = process_memory("VmHWM") - before, "peak RSS growth (VmHWM reset before the step)"
    print(json.dumps({"bytes": peak, "kind": kind, "params": count(model)}))


def checkpoint_memory(args: argparse.Namespace) -> None:
    print(f"(d) memory of one paper-size training step (batch 1, {PAPER_LATENT} latents, fresh process each)")
    results = {}
    for mode in ("plain", "checkpoint"):
        command = [sys.executable, __file__, "--memory-child", mode, "--device", args.device,
                   "--dtype", args.dtype, "--threads", str(args.threads),
                   "--paper-channels", str(args.paper_channels)]  # fmt: skip
        start = time.perf_counter()
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
        results[mode]["seconds"] = time.perf_counter() - start
    plain, checkpointed = results["plain"], results["checkpoint"]
    print(
        f"    model_channels {args.paper_channels} ({plain['params']:,} params); measured as {plain['kind']}"
    )
    for mode, result in results.items():
        label = "use_checkpoint=" + str(mode == "checkpoint")
        print(f"    {label:21s} {result['bytes'] / 2**30:7.2f} GiB  (process wall {result['seconds']:.0f} s)")
    print(f"    without / with checkpointing = {plain['bytes'] / checkpointed['bytes']:.2f}x")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.memory_child:
        memory_child(args, device, dtype)
        return
    print(f"device {device}, dtype {args.dtype}, torch {torch.__version__}, {args.threads} CPU thread(s)")
    sections = {"a": latent_vs_pixel, "b": ours_vs_diffusers, "c": step_seconds}
    for key, run in sections.items():
        if key in args.sections:
            run(args, device, dtype)
    if "d" in args.sections:
        checkpoint_memory(args)


if __name__ == "__main__":
    main()

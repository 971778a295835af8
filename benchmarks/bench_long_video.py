"""Long-video generation: seconds per output frame and peak memory, autoregressive vs hierarchical.

    python benchmarks/bench_long_video.py                        # small random models, CPU
    python benchmarks/bench_long_video.py --frames 64 256 1024 2048 --steps 10
    python benchmarks/bench_long_video.py --workdir WORKDIR --steps 50 --device cuda   # trained models
    python benchmarks/bench_long_video.py --prediction P/unet.pt --interpolation I/unet.pt \\
        --autoencoder A/autoencoder.pt --size 64

Every (strategy, frames) setting runs in a fresh subprocess that builds the models, measures
the decoder's reach once (`decoder_context`, outside the timing), then times the whole path
of `lvdm.long_video.long_video_frames`: latents generated chunk by chunk, decoded in
overlapped windows, turned into uint8 frames and (unless `--no-mp4`) streamed into one H.264
mp4 per video (`data_prep.encode.write_mp4_streams`, in a temporary folder).

Memory: the subprocess's RSS high-water mark (`getrusage(RUSAGE_SELF).ru_maxrss`, Linux KiB)
after generation, beside its resident set just before and just after it
(`/proc/self/statm`): peak minus before is what generation added at most, and flat memory
means neither that nor the resident set at the end grows with the frame count (at these
small sizes a run's peak varies by ~100 MiB with allocator and oneDNN kernel caches). On
CUDA also `torch.cuda.max_memory_allocated` (exact tensor accounting).
tracemalloc is not used: it does not see torch's allocations.

The models are random unless `--workdir` / the file options give trained ones (loaded with
`stages.unet_file.load_unet` and `stages.autoencoder_file.load_autoencoder`); random models
take the same time per step as trained ones of the same size. Figures only: nothing here
asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.diffusion import NoiseSchedule
from lvdm.latent_sequence import decoder_context
from lvdm.long_video import LongVideoModels, LongVideoPlan, SamplingSettings, latent_count, long_video_frames
from lvdm.unet import UNet3D

STRATEGIES = ("autoregressive", "hierarchical")


def small_random_models(args: argparse.Namespace) -> LongVideoModels:
    """Random networks of the demo's order of size: UNets of width 16, an fs 8 / ft 4 codec."""
    torch.manual_seed(0)
    unet = dict(
        out_channels=4,
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(2,),
        num_heads=2,
        norm_groups=8,
        max_noise_level=250,
        in_channels=5,
    )
    prediction = UNet3D(temporal_length=args.clip, **unet).eval()
    interpolation = UNet3D(temporal_length=args.latent_stride + 1, **unet).eval()
    autoencoder = VideoAutoencoder(AutoencoderConfig(hidden=16, fs=8, ft=4, norm_groups=8)).eval()
    return LongVideoModels(
        prediction, autoencoder, NoiseSchedule.linear(), 1.0, 0.0, interpolation=interpolation
    )


def trained_models(args: argparse.Namespace) -> LongVideoModels:
    """The prediction / interpolation UNets and the autoencoder of a finished run."""
    from stages.autoencoder_file import load_autoencoder
    from stages.unet_file import load_unet

    prediction, _ = load_unet(Path(args.prediction))
    interpolation, _ = load_unet(Path(args.interpolation))
    autoencoder, meta = load_autoencoder(Path(args.autoencoder))
    return LongVideoModels(
        prediction,
        autoencoder,
        NoiseSchedule.linear(),
        meta["scale"],
        meta["shift"],
        interpolation=interpolation,
    )


def newest(workdir: Path, stage: str, filename: str) -> str:
    """`<workdir>/stages/<stage>-<key>/<filename>` of the newest complete stage folder."""
    found = sorted(
        (
            p
            for p in (workdir / "stages").glob(f"{stage}-*/{filename}")
            if (p.parent / "manifest.json").is_file()
        ),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise SystemExit(
            f"no complete {stage} stage with {filename} under {workdir / 'stages'}; run the pipeline"
        )
    return str(found[-1])


def worker(args: argparse.Namespace) -> dict:
    """One setting, in this (fresh) process: build, measure, return the figures."""
    torch.set_num_threads(args.threads)
    trained = args.prediction is not None
    models = trained_models(args) if trained else small_random_models(args)
    device = torch.device(args.device)
    for model in (models.prediction, models.interpolation, models.autoencoder):
        model.to(device)
    if trained:  # the clip layout the models were trained with (stages.diffusion_stage.unet_kwargs)
        args.clip = models.prediction.config.temporal_length
        args.latent_stride = models.interpolation.config.temporal_length - 1
    plan = LongVideoPlan(
        strategy=args.strategy,
        frames=args.frames_one,
        clip=args.clip,
        cond_frames=args.cond_frames,
        latent_stride=args.latent_stride,
        sampling=SamplingSettings(
            steps=args.steps, eta=args.eta, noise_level=args.noise_level, guidance_weight=args.guidance_weight
        ),
        max_batch=args.max_batch,
        decode_window=args.decode_window,
    )
    context = decoder_context(models.autoencoder)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _current_rss_mib()
    generator = torch.Generator().manual_seed(0)
    frames = long_video_frames(
        models, plan, videos=args.videos, size=(args.size, args.size), generator=generator, context=context
    )
    start = time.perf_counter()
    written = 0
    with tempfile.TemporaryDirectory() as folder:
        if args.mp4:
            from data_prep.encode import write_mp4_streams

            paths = [Path(folder) / f"video{i}.mp4" for i in range(args.videos)]

            def counted():
                nonlocal written
                for chunk in frames:
                    written += chunk.shape[1]
                    yield chunk

            write_mp4_streams(paths, counted(), fps=8.0)
        else:
            for chunk in frames:
                written += chunk.shape[1]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    result = {
        "strategy": args.strategy,
        "frames": written,
        "latents": latent_count(args.frames_one, models.autoencoder.config.ft),
        "seconds": seconds,
        "s_per_frame": seconds / written,
        "rss_before_mib": rss_before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_end_mib": _current_rss_mib(),
        "context": context,
    }
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--videos", type=int, default=2, help="videos generated together (batch)")
    parser.add_argument("--size", type=int, default=32, help="frame height = width in pixels")
    parser.add_argument("--steps", type=int, default=5, help="DDIM steps per clip (official 50)")
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--noise-level", type=int, default=100, help="s (official 100)")
    parser.add_argument("--guidance-weight", type=float, default=0.1, help="w (official 0.1)")
    parser.add_argument("--clip", type=int, default=4, help="latents per prediction clip (random models)")
    parser.add_argument("--cond-frames", type=int, default=1)
    parser.add_argument("--latent-stride", type=int, default=4, help="latents between keys (random models)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--decode-window", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per subprocess")
    parser.add_argument("--no-mp4", dest="mp4", action="store_false", help="skip writing the mp4 files")
    parser.add_argument("--workdir", type=Path, help="a pipeline workdir: its newest train_pred/interp/AE")
    parser.add_argument("--prediction", help="unet.pt of train_pred")
    parser.add_argument("--interpolation", help="unet.pt of train_interp")
    parser.add_argument("--autoencoder", help="autoencoder.pt of train_autoencoder")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--frames-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.workdir is not None:
        args.prediction = args.prediction or newest(args.workdir, "train_pred", "unet.pt")
        args.interpolation = args.interpolation or newest(args.workdir, "train_interp", "unet.pt")
        args.autoencoder = args.autoencoder or newest(args.workdir, "train_autoencoder", "autoencoder.pt")
    files = (args.prediction, args.interpolation, args.autoencoder)
    if any(files) and not all(files):
        raise SystemExit("give all of --prediction, --interpolation and --autoencoder (or --workdir)")

    passthrough = _drop_values(sys.argv[1:], ("--frames", "--strategies", "--workdir"))
    for name, value in (("--prediction", args.prediction), ("--interpolation", args.interpolation)):
        if value is not None and name not in passthrough:
            passthrough += [name, value]
    if args.autoencoder is not None and "--autoencoder" not in passthrough:
        passthrough += ["--autoencoder", args.autoencoder]

    models = "trained" if args.prediction else "small random (UNet width 16, AE hidden 16, fs 8, ft 4)"
    print(
        f"models: {models}; {args.videos} videos of {args.size}x{args.size}, DDIM {args.steps} steps, "
        f"s={args.noise_level}, w={args.guidance_weight}, clip {args.clip}, k={args.cond_frames}, "
        f"stride {args.latent_stride}, device {args.device}, {args.threads} thread(s), "
        f"mp4 {'on' if args.mp4 else 'off'}"
    )
    header = (
        f"{'strategy':<15}{'frames':>7}{'latents':>8}{'seconds':>9}{'s/frame':>9}"
        f"{'RSS before':>12}{'peak RSS':>10}{'added':>8}{'RSS end':>9}"
    )
    header += f"{'CUDA peak':>11}" if args.device.startswith("cuda") else ""
    print(header + "   (MiB)")
    contexts = set()
    for strategy in args.strategies:
        for frames in args.frames:
            command = [
                sys.executable,
                __file__,
                "--worker",
                "--strategy",
                strategy,
                "--frames-one",
                str(frames),
            ]
            done = subprocess.run(command + passthrough, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{strategy:<15}{frames:>7}  failed:\n{done.stderr[-2000:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            line = (
                f"{r['strategy']:<15}{r['frames']:>7}{r['latents']:>8}{r['seconds']:>9.2f}"
                f"{r['s_per_frame']:>9.4f}{r['rss_before_mib']:>12.0f}{r['peak_rss_mib']:>10.0f}"
                f"{r['peak_rss_mib'] - r['rss_before_mib']:>8.0f}{r['rss_end_mib']:>9.0f}"
            )
            line += f"{r['cuda_peak_mib']:>11.1f}" if "cuda_peak_mib" in r else ""
            print(line, flush=True)
            contexts.add(r["context"])
    print(f"decoder context (measured): {sorted(contexts)} latents each side of each decode window")


def _drop_values(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """argv without `options` and the values that follow each (nargs='+' included)."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--"):
            skipping = arg in options
        if not skipping:
            kept.append(arg)
    return kept


if __name__ == "__main__":
    main()

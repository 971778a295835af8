"""One command, one GPU, at most 8 minutes: what a training step of this pipeline gets out of the card.

    pip install -e '.[bench]'                                  # diffusers, for section D
    python benchmarks/gpu_check.py [--out gpu_check.json]      # on a machine with one GPU
    python benchmarks/gpu_check.py --cpu-smoke                 # the same code paths, CPU, small

Sections, run in the order A C D B F E (`--sections`); each is skipped, with a note in the table
and the JSON, when less of the time budget `--budget-s` (default 450 s) is left than it needs, so
the whole run stays under 8 minutes. The order puts the cheap, certain figures first:
  A. the paper UNet (pipelines/ucf101.yaml `diffusion.unet`, 548.9M) through the real
     `DiffusionTrainer` step (AdamW, EMA, clipping) on 4x4x32x32 latents: batch 1, 2, 4 x
     fp32 / bf16 autocast x gradient checkpointing off / on, eagerly (12 rows);
  B. the text-to-video UNet of pipelines/webvid_t2v.yaml at release width (958.9M) on
     4x16x32x32 latents with a 77x768 text context: bf16, checkpointing on, batch 1 and 2;
  C. the paper autoencoder's encode (what `cache_latents` runs): 256x256x16 clips/s, fp32 / bf16;
  D. our UNet against diffusers' UNet3DConditionModel at about equal parameters (the width of
     its nearest count), same latents and batch 2, bf16: forward + backward;
  E. a 200-step `train_uncond` of the demo pipeline through Ray Train with use_gpu=true
     (`lvdm run pipelines/demo.yaml --until train_uncond`, autoencoder cut to 20 steps): its
     step time and MFU as the stage logged them to MLflow (needs 120 s of budget);
  F. torch.compile (`train.compile`'s `compile_network`, Inductor) of the paper UNet, bf16,
     checkpointing off, batch 4 only (needs 180 s of budget: the compile takes a minute or two).

Every row: seconds per step, clips/s, peak memory (torch.cuda.max_memory_allocated) and MFU:
FLOPs counted by FlopCounterMode on one step (checkpointing off, so recomputation is not
counted) over the card's dense peak looked up by its CUDA name (`lvdm.mfu.PEAK_TFLOPS`;
`--peak-tflops` overrides). fp32 rows are measured against the plain fp32 peak while cuDNN runs
convolutions in TF32 by default (as training does), so their MFU can read high.

`--cpu-smoke` runs every section at demo sizes on the CPU, in about a minute on 2 idle cores
(Inductor's CPU codegen takes minutes, so F compiles with the eager backend there; no section
is skipped for time): CI runs it so that this script keeps working without a GPU; its figures
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder  # noqa: E402
from lvdm.diffusion.schedule import NoiseSchedule  # noqa: E402
from lvdm.diffusion_training import DiffusionTrainer  # noqa: E402
from lvdm.mfu import count_flops, peak_flops  # noqa: E402
from lvdm.precision import autocast  # noqa: E402
from lvdm.unet import UNet3D  # noqa: E402
from stages.ray_training import compile_network  # noqa: E402

PIPELINES = REPO / "pipelines"


@dataclass(frozen=True)
class Sizes:
    """What differs between a GPU run and the CPU smoke run: only sizes and repeats."""

    unet: dict  # UNet3D kwargs of section A
    latent: tuple[int, int, int, int]  # c t h w
    batches: tuple[int, ...]
    autoencoder: AutoencoderConfig
    clip: tuple[int, int, int]  # t h w of section C
    encode_batches: tuple[int, ...]
    t2v_override: dict  # applied to webvid_t2v.yaml's UNet (empty: release width)
    t2v_latent: tuple[int, int, int, int]
    t2v_batches: tuple[int, ...]
    text_tokens: int
    warmup: int
    repeats: int
    ray_steps: int
    ray_overrides: tuple[str, ...]
    compile_backend: str
    compile_batches: tuple[int, ...]


def gpu_sizes() -> Sizes:
    return Sizes(
        unet=_unet_of(PIPELINES / "ucf101.yaml"),
        latent=(4, 4, 32, 32),
        batches=(1, 2, 4),
        autoencoder=AutoencoderConfig.paper(),
        clip=(16, 256, 256),
        encode_batches=(1, 4),
        t2v_override={},
        t2v_latent=(4, 16, 32, 32),
        t2v_batches=(1, 2),
        text_tokens=77,
        warmup=2,
        repeats=3,
        ray_steps=200,
        ray_overrides=(
            "autoencoder.train.use_gpu=true",
            "autoencoder.train.steps=20",
            "autoencoder.train.checkpoint_every=20",
            "cache_latents.use_gpu=true",
            "train_uncond.train.use_gpu=true",
            "train_uncond.train.checkpoint_every=100",
            "train_uncond.train.preview_every=200",
        ),
        compile_backend="inductor",
        compile_batches=(4,),
    )


def cpu_sizes() -> Sizes:
    tiny = dict(model_channels=16, channel_mult=(1, 2), num_heads=2, norm_groups=8, temporal_length=4)
    return Sizes(
        unet={**_unet_of(PIPELINES / "demo.yaml"), "model_channels": 16},
        latent=(4, 2, 8, 8),
        batches=(1, 2),
        autoencoder=AutoencoderConfig(hidden=8, fs=2, ft=2, norm_groups=8),
        clip=(8, 32, 32),
        encode_batches=(2,),
        t2v_override={**tiny, "attention_resolutions": (1, 2), "num_res_blocks": 1, "context_dim": 16},
        t2v_latent=(4, 2, 8, 8),
        t2v_batches=(1,),
        text_tokens=4,
        warmup=0,
        repeats=1,
        ray_steps=4,
        ray_overrides=(
            "data.synthetic.videos={train: 4, test: 2}",
            "data.synthetic.frames=8",
            "shard.videos_per_shard=2",
            "autoencoder.model={hidden: 8, fs: 4, ft: 2, norm_groups: 8}",
            "autoencoder.train={steps: 2, batch_size: 2, checkpoint_every: 2, log_every: 1,"
            " preview_every: 100, loader_workers: 0, normalisation_clips: 2, heldout_clips: 1,"
            " cpus_per_worker: 1}",
            "diffusion.unet={model_channels: 8, channel_mult: [1], num_res_blocks: 1,"
            " attention_resolutions: [1], num_heads: 2, norm_groups: 4}",
            "train_uncond={frames: 2, train: {steps: 4, batch_size: 2, checkpoint_every: 4, log_every: 2,"
            " preview_every: 100, loader_workers: 0, heldout_clips: 1, cpus_per_worker: 1}}",
            "ray.num_cpus=2",
        ),
        compile_backend="eager",
        compile_batches=(1,),
    )


def _unet_of(pipeline: Path) -> dict:
    """`UNet3D` kwargs from a pipeline file's `diffusion.unet` (lists as tuples)."""
    unet = yaml.safe_load(pipeline.read_text())["diffusion"]["unet"]
    return {k: tuple(v) if isinstance(v, list) else v for k, v in unet.items()}


@dataclass
class Row:
    section: str
    config: str
    params_m: float | None = None
    batch: int | None = None
    s_per_step: float | None = None
    clips_per_s: float | None = None
    peak_mem_gib: float | None = None
    tflops: float | None = None  # counted model TFLOP/s achieved
    mfu: float | None = None
    note: str = ""


@dataclass
class Check:
    device: torch.device
    sizes: Sizes
    budget_s: float
    peak_override: float | None
    started: float = field(default_factory=time.perf_counter)
    rows: list[Row] = field(default_factory=list)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def peak(self, dtype: torch.dtype | None) -> tuple[str, float] | None:
        if self.peak_override:
            return "--peak-tflops", self.peak_override * 1e12
        if self.device.type != "cuda":
            return None
        return peak_flops(torch.cuda.get_device_name(self.device), dtype)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(_format(row), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Mean seconds of `fn` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def measure(
    check: Check, row: Row, step, flops: int | None, dtype: torch.dtype | None, warmup: int | None = None
) -> None:
    """Time `step` into `row` (s/step, clips/s, memory, TFLOP/s, MFU); OOM becomes a note."""
    sizes, device = check.sizes, check.device
    reset_memory(device)
    try:
        seconds = timed(step, device, sizes.warmup if warmup is None else warmup, sizes.repeats)
    except torch.OutOfMemoryError:
        reset_memory(device)
        row.note = "out of memory"
        check.add(row)
        return
    row.s_per_step, row.clips_per_s = seconds, row.batch / seconds
    row.peak_mem_gib = peak_memory(device)
    if flops:
        row.tflops = flops / seconds / 1e12
        peak = check.peak(dtype)
        if peak is not None:
            row.mfu = flops / seconds / peak[1]
    check.add(row)


def params_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def build_trainer(kwargs: dict, device: torch.device, dtype: torch.dtype | None) -> DiffusionTrainer:
    torch.manual_seed(0)
    with device:  # built on the device: a 549M model is slow to initialise on the CPU
        network = UNet3D(**kwargs)
    return DiffusionTrainer(network, NoiseSchedule.linear(), loss_type="l1", autocast_dtype=dtype)


def section_a(check: Check) -> dict[int, int]:
    """The paper UNet's training step grid; returns the counted FLOPs per batch size."""
    sizes, device = check.sizes, check.device
    flops: dict[int, int] = {}
    for use_checkpoint in (False, True):
        kwargs = {**sizes.unet, "use_checkpoint": use_checkpoint}
        trainer = build_trainer(kwargs, device, None)
        millions = params_m(trainer.network)
        for batch in sizes.batches:
            latents = torch.randn(batch, *sizes.latent, device=device)
            if batch not in flops:  # model FLOPs: counted with checkpointing off, in fp32
                _, flops[batch] = count_flops(lambda latents=latents, trainer=trainer: trainer.step(latents))
            for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                if check.left() < 30:
                    check.add(Row("A unet", name, batch=batch, note="skipped: time"))
                    continue
                trainer.autocast_dtype = dtype
                row = Row("A unet", f"{name} ckpt={'on' if use_checkpoint else 'off'}", millions, batch)
                step = lambda latents=latents, trainer=trainer: trainer.step(latents)  # noqa: E731
                measure(check, row, step, flops[batch], dtype)
    return flops


def section_b(check: Check) -> None:
    """The text-to-video UNet at release width, if its pipeline file exists."""
    sizes, device, path = check.sizes, check.device, PIPELINES / "webvid_t2v.yaml"
    if not path.is_file():
        check.add(Row("B t2v", "-", note=f"skipped: {path.name} does not exist yet"))
        return
    if check.left() < 60:
        check.add(Row("B t2v", "-", note="skipped: time"))
        return
    try:
        kwargs = {**_unet_of(path), **sizes.t2v_override, "use_checkpoint": True}
        trainer = build_trainer(kwargs, device, torch.bfloat16)
    except (KeyError, TypeError, ValueError) as err:  # a file without (or with a newer) diffusion.unet
        check.add(Row("B t2v", "-", note=f"skipped: UNet3D(**{path.name} diffusion.unet) failed: {err}"))
        return
    network, millions = trainer.network, params_m(trainer.network)
    optimiser = trainer.optimiser
    for batch in sizes.t2v_batches:
        latents = torch.randn(batch, *sizes.t2v_latent, device=device)
        context = torch.randn(batch, sizes.text_tokens, kwargs["context_dim"], device=device)
        t = torch.randint(0, 1000, (batch,), device=device)

        def step(latents=latents, context=context, t=t, network=network, optimiser=optimiser) -> None:
            # DiffusionTrainer has no text input yet (issue 18): the same loss and AdamW step by hand.
            with autocast(device, torch.bfloat16):
                loss = (network(latents, t, context=context).float() - latents).pow(2).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        _, flops = count_flops(step)  # with checkpointing on: this count includes its recompute
        row = Row("B t2v", "bf16 ckpt=on", millions, batch)
        measure(check, row, step, flops, torch.bfloat16)
        row.note = "FLOPs include checkpoint recompute"


def section_c(check: Check) -> None:
    """The paper autoencoder's encode: what `cache_latents` spends per clip."""
    sizes, device = check.sizes, check.device
    torch.manual_seed(0)
    with device:
        model = VideoAutoencoder(sizes.autoencoder).eval()
    millions = sum(p.numel() for p in model.encoder.parameters()) / 1e6
    for batch in sizes.encode_batches:
        clips = torch.rand(batch, 3, *sizes.clip, device=device) * 2 - 1
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            if check.left() < 20:
                check.add(Row("C encode", name, batch=batch, note="skipped: time"))
                continue

            @torch.no_grad()
            def encode(clips=clips, dtype=dtype, model=model) -> None:
                with autocast(device, dtype):
                    model.encode(clips).mode()

            _, flops = count_flops(encode)
            measure(check, Row("C encode", f"{name} encoder", millions, batch), encode, flops, dtype)


def diffusers_unet(width: int, res_blocks: int, context_dim: int):
    """diffusers' ModelScope-style 3D UNet in our UNet's layout (4 levels, attention at 3)."""
    from diffusers import UNet3DConditionModel

    levels = 4
    return UNet3DConditionModel(
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(width * m for m in (1, 2, 3, 4)[:levels]),
        layers_per_block=res_blocks,
        down_block_types=("DownBlock3D",) + ("CrossAttnDownBlock3D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock3D",) * (levels - 1) + ("UpBlock3D",),
        norm_num_groups=8,
        cross_attention_dim=context_dim,
        attention_head_dim=8,
    )


def section_d(check: Check) -> None:
    """Ours against diffusers' UNet3DConditionModel at about equal parameters and input."""
    sizes, device = check.sizes, check.device
    try:
        import diffusers
    except ImportError:
        note = "skipped: diffusers not installed (pip install -e .[bench])"
        check.add(Row("D vs diffusers", "-", note=note))
        return
    if check.left() < 60:
        check.add(Row("D vs diffusers", "-", note="skipped: time"))
        return
    ours_kwargs = {**sizes.unet, "channel_mult": (1, 2, 3, 4), "use_checkpoint": False}
    res_blocks, context_dim = ours_kwargs["num_res_blocks"], 64
    with torch.device("meta"):  # counted without memory; bisected: the count grows with the width
        target = params_m(UNet3D(**ours_kwargs))
        low, high = 1, ours_kwargs["model_channels"] // 2  # widths 8 * low .. 8 * high
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (
                (mid, high)
                if params_m(diffusers_unet(8 * mid, res_blocks, context_dim)) < target
                else (low, mid)
            )
        counts = {w: params_m(diffusers_unet(w, res_blocks, context_dim)) for w in (8 * low, 8 * high)}
    width = min(counts, key=lambda w: abs(counts[w] - target))
    batch, dtype = min(2, max(sizes.batches)), torch.bfloat16 if device.type == "cuda" else None
    x = torch.randn(batch, *sizes.latent, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    text = torch.zeros(batch, 1, context_dim, device=device)
    torch.manual_seed(0)
    with device:
        ours = UNet3D(**ours_kwargs).train()
        theirs = diffusers_unet(width, res_blocks, context_dim).train()
    for name, model, forward in (
        (f"ours UNet3D width {ours_kwargs['model_channels']}", ours, lambda ours=ours: ours(x, t)),
        (
            f"diffusers {diffusers.__version__} UNet3DConditionModel width {width}",
            theirs,
            lambda theirs=theirs: theirs(x, t, encoder_hidden_states=text).sample,
        ),
    ):

        def step(model=model, forward=forward) -> None:
            model.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                out = forward()
            torch.nn.functional.l1_loss(out.float(), x).backward()

        _, flops = count_flops(step)
        label = "bf16" if dtype else "fp32"
        measure(check, Row("D vs diffusers", f"{label} {name}", params_m(model), batch), step, flops, dtype)


def section_e(check: Check, workdir: Path) -> None:
    """`lvdm run` of the demo through train_uncond on Ray Train; the step time it logged."""
    sizes, device = check.sizes, check.device
    if check.left() < 120:
        check.add(Row("E ray train", "-", note="skipped: time"))
        return
    use_gpu = device.type == "cuda"
    command = [sys.executable, "-m", "pipelines.cli", "run", str(PIPELINES / "demo.yaml")]
    command += ["--workdir", str(workdir), "--until", "train_uncond"]
    overrides = [*sizes.ray_overrides, f"train_uncond.train.steps={sizes.ray_steps}"]
    for item in overrides:
        command += ["--set", item]
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(60, check.left())
        )
    except subprocess.TimeoutExpired:
        check.add(Row("E ray train", "-", note="stopped: time budget"))
        return
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-1500:]
        raise RuntimeError(f"lvdm run failed ({done.returncode}):\n{tail}")
    metrics = _logged(workdir, "train_uncond")
    rates = metrics.get("clips_per_s", [])[1:] or metrics.get("clips_per_s", [])  # first window counts FLOPs
    batch = _demo_batch(overrides)
    if not rates:
        raise RuntimeError("train_uncond logged no clips_per_s metric")
    rate = sorted(rates)[len(rates) // 2]
    row = Row("E ray train", f"demo train_uncond use_gpu={use_gpu}", batch=batch)
    row.s_per_step, row.clips_per_s = batch / rate, rate
    mfu = metrics.get("mfu", [])[1:] or metrics.get("mfu", [])
    row.mfu = sorted(mfu)[len(mfu) // 2] if mfu else None
    tflops = metrics.get("tflops_per_worker", [])
    row.tflops = sorted(tflops)[len(tflops) // 2] if tflops else None
    row.note = f"{sizes.ray_steps} steps; lvdm run through train_uncond took {seconds:.0f} s"
    check.add(row)


def _demo_batch(overrides: list[str]) -> int:
    from pipelines.config import load_pipeline

    return load_pipeline(PIPELINES / "demo.yaml", overrides).train_uncond.train.batch_size


def _logged(workdir: Path, stage: str) -> dict[str, list[float]]:
    """Metric histories (name -> values in step order) of the stage's MLflow run in the workdir."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.mlflow.runName LIKE '{stage}%'")
    if not runs:
        raise RuntimeError(f"no MLflow run of {stage} in {workdir}")
    run_id = runs[0].info.run_id
    return {
        name: [m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]
        for name in ("clips_per_s", "mfu", "tflops_per_worker")
    }


def section_f(check: Check, flops: dict[int, int]) -> None:
    """The paper UNet compiled in place (`train.compile`), bf16, checkpointing off."""
    sizes, device = check.sizes, check.device
    for batch in sizes.compile_batches:
        need = 180 if device.type == "cuda" else 0
        if check.left() < need:
            check.add(Row("F compile", sizes.compile_backend, batch=batch, note="skipped: time"))
            continue
        trainer = build_trainer({**sizes.unet, "use_checkpoint": False}, device, torch.bfloat16)
        compile_network(trainer.model, {"compile": True}, backend=sizes.compile_backend)
        latents = torch.randn(batch, *sizes.latent, device=device)
        started = time.perf_counter()
        trainer.step(latents)  # the compile
        sync(device)
        first = time.perf_counter() - started
        row = Row("F compile", f"bf16 ckpt=off {sizes.compile_backend}", params_m(trainer.network), batch)
        step = lambda latents=latents, trainer=trainer: trainer.step(latents)  # noqa: E731
        measure(check, row, step, flops.get(batch), torch.bfloat16, warmup=1)
        row.note = f"first step (compile) {first:.0f} s"


COLUMNS = ("section", "config", "params_m", "batch", "s_per_step", "clips_per_s", "peak_mem_gib", "tflops")
COLUMNS += ("mfu",)
WIDTHS = (15, 58, 8, 5, 10, 11, 12, 8, 7)


def _format(row: Row) -> str:
    def cell(name: str) -> str:
        value = getattr(row, name)
        if value is None:
            return "-"
        if name == "mfu":
            return f"{100 * value:.1f}%"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    text = " ".join(cell(name).ljust(width) for name, width in zip(COLUMNS, WIDTHS, strict=True))
    return f"{text} {row.note}".rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU, demo sizes, ~1 minute (CI)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON result file")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget (default 450; smoke: none)")
    parser.add_argument(
        "--sections", default="ACDBFE", help="which of A-F to run, in order (default: ACDBFE)"
    )
    parser.add_argument("--peak-tflops", type=float, help="the card's peak TFLOP/s, if not in the table")
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        device, sizes = torch.device("cpu"), cpu_sizes()
        torch.set_num_threads(min(2, torch.get_num_threads()))
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or use --cpu-smoke")
        device, sizes = torch.device("cuda", 0), gpu_sizes()
    budget = args.budget_s or (3600 if args.cpu_smoke else 450)  # smoke: every path, never skipped
    check = Check(device, sizes, budget, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peaks = {"bf16": check.peak(torch.bfloat16), "fp32": check.peak(None)}
    print(f"device: {name}; torch {torch.__version__}")
    for label, peak in peaks.items():
        found = f"{peak[1] / 1e12:.1f} TFLOP/s ({peak[0]})" if peak else "unknown (no MFU)"
        print(f"  {label} dense peak: {found}")
    print(" ".join(c.ljust(w) for c, w in zip(COLUMNS, WIDTHS, strict=True)) + " note")

    flops: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for letter in args.sections.upper():
            if letter == "A":
                flops = section_a(check)
            elif letter == "B":
                section_b(check)
            elif letter == "C":
                section_c(check)
            elif letter == "D":
                section_d(check)
            elif letter == "E":
                section_e(check, Path(tmp) / "demo")
            elif letter == "F":
                section_f(check, flops)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    result = {
        "device": name,
        "torch": torch.__version__,
        "cpu_smoke": args.cpu_smoke,
        "peaks_tflops": {k: (v[0], v[1] / 1e12) if v else None for k, v in peaks.items()},
        "seconds": time.perf_counter() - check.started,
        "rows": [asdict(row) for row in check.rows],
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{len(check.rows)} rows in {result['seconds']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

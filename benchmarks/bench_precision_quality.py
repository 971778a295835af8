"""Does bf16 autocast keep the diffusion model's quality? fp32 vs bf16 on the demo's latents.

    python benchmarks/bench_precision_quality.py --workdir lvdm-work        # after `lvdm run`
    python benchmarks/bench_precision_quality.py --workdir W --steps 300 --threads 2

Trains the demo's unconditional UNet (the `diffusion.unet` and `train_uncond` settings of the
run's recorded config) twice from the same initialisation, seed and batches — once in fp32,
once under bf16 autocast — on the run's cached latents, and prints for each: the mean training
loss over the last 50 steps, the held-out loss of the EMA weights on the test split's latent
windows (fixed timesteps and noise, fp32 forward), and seconds per step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from data_prep.loader import latent_window_loader
from lvdm.diffusion.loss import diffusion_loss
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion_training import DiffusionTrainer
from lvdm.unet import UNet3D
from pipelines.config import load_pipeline
from pipelines.run_record import RunRecord, latest_run
from stages.contract import read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("lvdm-work"))
    parser.add_argument("--run", help="run id (default: the latest)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = args.workdir.resolve()
    record = RunRecord.load(workdir, args.run or latest_run(workdir))
    config = load_pipeline(record.folder / "config.yaml")
    cache = read_manifest(Path(record.stages["cache_latents"].output))
    folder, shards = Path(cache["out_dir"]), cache["outputs"]["shards"]
    scale, shift = cache["outputs"]["scale"], cache["outputs"]["shift"]
    train = config.train_uncond.train
    frames = config.train_uncond.frames

    def batches(split: str, count: int, batch_size: int, seed: int) -> list[torch.Tensor]:
        loader = latent_window_loader(
            [str(folder / s) for s in shards[split]],
            frames=frames,
            batch_size=batch_size,
            batches_per_epoch=count,
            seed=seed,
        )
        return [(b + shift) * scale for b in loader]

    training = batches("train", args.steps, train.batch_size, 0)
    heldout = torch.cat(batches("test" if shards.get("test") else "train", 4, 8, 99))
    schedule = NoiseSchedule.linear(**config.diffusion.schedule.model_dump())
    print(
        f"run {record.run_id}: {args.steps} steps of batch {train.batch_size}, "
        f"{len(heldout)} held-out windows"
    )
    print(f"{'precision':<10} {'train loss (last 50)':>21} {'held-out loss (EMA)':>20} {'s/step':>8}")
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        trainer = DiffusionTrainer(
            UNet3D(**config.diffusion.unet.model_dump()),
            schedule,
            lr=train.lr,
            weight_decay=train.weight_decay,
            grad_clip=train.grad_clip,
            ema_decay=train.ema_decay,
            loss_type=config.diffusion.loss_type,
            autocast_dtype=dtype,
        )
        started = time.perf_counter()
        losses = [trainer.step(batch)["loss"] for batch in training]
        seconds = (time.perf_counter() - started) / len(training)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(1234)
            held = diffusion_loss(
                trainer.ema.model,
                heldout,
                schedule,
                loss_type=config.diffusion.loss_type,
                generator=generator,
            ).loss.item()
        tail = sum(losses[-50:]) / len(losses[-50:])
        print(f"{name:<10} {tail:>21.4f} {held:>20.4f} {seconds:>8.3f}")


if __name__ == "__main__":
    main()

"""One network for all three roles against three networks, at equal total steps (issue 21, item 1).

The reference run trains three networks, as the release does: unconditional, prediction (with
an unconditional half for guidance) and interpolation. The paper's §3.3 mask conditioning
lets one network hold all three roles. Is one network at 3× the steps as good as three?

This script trains in-process (no Ray), on the synthetic latents of a trained autoencoder,
either one role's network as the pipeline does (`--roles uncond`, `pred` or `interp`) or one
network whose every step draws a role (`--roles uncond,pred,interp`). It then scores every
role the network has, with the reference run's figures and sampling:
- **unconditional**: 32 clips of 4 latents drawn as a video's first clip is (DDIM 50, η 1),
  exact appearance as ratios to real test clips (`data_prep.appearance`: shape count,
  coverage, size, frame change; the goals are ±25%);
- **prediction**: train_pred's position check (`stages.position_check`: 1 latent given,
  s = 100, w = 0.1, DDIM 8 η 1, stride 1), error in pixels at +4/+8/+16 frames and the
  fraction of shapes found by colour, beside a still frame;
- **interpolation**: keys 2 latents apart (as the hierarchical strategy fills them), the latent
  between filled (`fill_between_keys`, the same sampling); position error at the two filled
  frames, beside the nearer key's frame repeated and the autoencoder's own reconstruction.

    AE=W/stages/train_autoencoder-*/autoencoder.pt
    python benchmarks/bench_one_network.py --autoencoder $AE --roles uncond --steps 1500
    python benchmarks/bench_one_network.py --autoencoder $AE --roles pred --steps 1500
    python benchmarks/bench_one_network.py --autoencoder $AE --roles interp --steps 1500
    python benchmarks/bench_one_network.py --autoencoder $AE --roles uncond,pred,interp --steps 4500

Roles of the joint network are drawn uniformly per step; its prediction and interpolation steps
are always conditioned (its unconditional steps are the unconditional role), where the
separate pred / interp networks condition p = 0.5 / 0.9 of their examples (the pipeline's).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from bench_generation_quality import decode, encode, synthetic_metas, synthetic_videos

from data_prep.appearance import appearance as exact_appearance
from data_prep.appearance import appearance_ratios, mean_appearance
from data_prep.position_check import pool_position_errors, position_errors
from data_prep.sources.synthetic import render
from lvdm.autoencoder import denormalise, latent_normalisation, normalise
from lvdm.diffusion.masks import frames_mask, interpolation_mask, prediction_mask
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion_training import DiffusionTrainer, WindowRole
from lvdm.long_video import SamplingSettings
from lvdm.long_video_steps import fill_between_keys, sample_clips
from lvdm.unet import UNet3D
from stages.autoencoder_file import load_autoencoder
from stages.position_check import position_check

ROLES = ("uncond", "pred", "interp")
SAMPLING = SamplingSettings(
    sampler="ddim",
    steps=8,
    eta=1.0,
    noise_level=100,
    guidance_weight=0.1,
    first_clip_sampler="ddim",
    first_clip_steps=50,
)  # the reference run's (pipelines/bouncing_shapes.yaml), without its restoring force


def roles_for(names: list[str]) -> dict[str, WindowRole]:
    """The pipeline's settings for a network of one role; always-conditioned roles for a joint one."""
    joint = len(names) > 1
    nothing = lambda b, f, g: torch.zeros(b, f, dtype=torch.bool)  # noqa: E731
    pred_p, interp_p = (1.0, 1.0) if joint else (0.5, 0.9)
    table = {
        "uncond": WindowRole(4, nothing if joint else None),
        "pred": WindowRole(4, lambda b, f, g: prediction_mask(b, f, k=1, p=pred_p, generator=g), (1, 2)),
        "interp": WindowRole(3, lambda b, f, g: interpolation_mask(b, f, p=interp_p, generator=g)),
    }
    return {name: table[name] for name in names}


def build_network(names: list[str], width: int) -> UNet3D:
    conditional = names != ["uncond"]
    return UNet3D(
        in_channels=5 if conditional else 4,
        out_channels=4,
        model_channels=width,
        channel_mult=[1, 2],
        num_res_blocks=1,
        attention_resolutions=[2],
        num_heads=4,
        temporal_length=4,
        norm_groups=8,
        prediction="v",
        max_noise_level=250 if conditional else 0,
        max_stride=2 if "pred" in names else 0,
    )


def train(args, network: UNet3D, roles: dict[str, WindowRole], latents: torch.Tensor) -> DiffusionTrainer:
    """`args.steps` steps; each draws its role (uniformly), then the role's windows and masks.

    The roles are drawn here, from a generator of their own, not by the trainer's `roles`: the
    README's table was measured with these draws."""
    first = next(iter(roles.values()))
    trainer = DiffusionTrainer(
        network,
        NoiseSchedule.linear(),
        lr=args.lr,
        ema_decay=0.995,
        loss_type="l2",
        mask_sampler=first.mask_sampler,
        max_noise_level=network.config.max_noise_level,
        autocast_dtype=torch.bfloat16,
    )
    generator = torch.Generator().manual_seed(1)
    names = list(roles)
    counts = dict.fromkeys(names, 0)
    started = time.perf_counter()
    for step in range(args.steps):
        name = names[int(torch.randint(0, len(names), (), generator=generator))]
        role = roles[name]
        counts[name] += 1
        trainer.mask_sampler, trainer.strides, trainer.frames = role.mask_sampler, role.strides, role.frames
        video = torch.randint(0, len(latents), (args.batch,), generator=generator)
        start = torch.randint(0, latents.shape[2] - role.span + 1, (args.batch,), generator=generator)
        batch = torch.stack(
            [latents[v, :, s : s + role.span] for v, s in zip(video.tolist(), start.tolist(), strict=True)]
        )
        loss = trainer.step(batch)["loss"]
        if (step + 1) % 500 == 0:
            seconds = (time.perf_counter() - started) / (step + 1)
            print(f"step {step + 1}: loss {loss:.4f}, {seconds:.3f} s/step, roles {counts}", flush=True)
    return trainer


@torch.no_grad()
def unconditional_figures(model: UNet3D, schedule, autoencoder, scale, shift, samples: int) -> dict:
    """Exact appearance of `samples` first clips (8 frames each) as ratios to real test clips."""
    conditional = model.config.in_channels == 5
    shape = (samples, 4, 4, 16, 16)
    mask = frames_mask(samples, 4, []) if conditional else None
    z_cond = torch.zeros(shape) if conditional else None
    latents = sample_clips(
        model, shape, schedule, SAMPLING, torch.Generator().manual_seed(7), torch.device("cpu"), samples,
        mask, z_cond, stride=1 if model.config.max_stride else None,
    )  # fmt: skip
    frames = decode(autoencoder, denormalise(latents, scale, shift))
    real = synthetic_videos(64, split=1)[:samples, :8]
    ratios = appearance_ratios(
        mean_appearance([exact_appearance(clip) for clip in frames]),
        mean_appearance([exact_appearance(clip) for clip in real]),
    )
    return {k: None if v is None else round(v, 3) for k, v in ratios.items()}


def prediction_figures(model: UNet3D, schedule, autoencoder, scale, shift) -> dict:
    clips = [(meta, render(meta)) for meta in synthetic_metas(32, split=1)]
    results = position_check(
        model, None, autoencoder, clips, schedule, scale=scale, shift=shift, cond_frames=1,
        clip_latents=4, latent_stride=1, unconditional_latents=4, encode_window=8, sampling=SAMPLING,
        stride=1,
    )  # fmt: skip
    return {row: rounded(results[row]) for row in ("prediction", "still_frame", "autoencoder")}


@torch.no_grad()
def interpolation_figures(model: UNet3D, schedule, autoencoder, scale, shift) -> dict:
    """Keys at latents 0 and 2 of 32 held-out videos, latent 1 filled; frames 2 and 3 scored."""
    metas = synthetic_metas(32, split=1)
    videos = np.stack([render(meta) for meta in metas])
    true = normalise(encode(autoencoder, videos), scale, shift)[:, :, :3]
    fills = fill_between_keys(
        model, true[:, :, [0, 2]], schedule, 2, SAMPLING, torch.Generator().manual_seed(0), 32
    )
    filled = torch.cat([fills, true[:, :, 2:3]], dim=2)
    rows = {
        "interpolation": decode(autoencoder, denormalise(filled, scale, shift)),
        "autoencoder": decode(autoencoder, denormalise(true, scale, shift)),
        "nearer_key": videos[:, [0, 1, 1, 4, 4, 5]],  # frame 2 nearest to 1, frame 3 to 4
    }
    return {
        row: rounded(
            pool_position_errors(
                [
                    position_errors(clip[2:4], meta, 2, (1, 2), frame_times=[2, 3])
                    for clip, meta in zip(frames, metas, strict=True)
                ]
            )
        )
        for row, frames in rows.items()
    }


def rounded(pooled: dict) -> dict:
    """`{offset: [error over found shapes, error with lost, found fraction]}`."""
    return {
        k: [None if v[m] is None else round(v[m], 2) for m in ("error", "error_with_lost", "found")]
        for k, v in pooled.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--autoencoder", required=True, help="a reference run's autoencoder.pt")
    parser.add_argument("--roles", default="uncond,pred,interp", help=f"comma-separated, of {ROLES}")
    parser.add_argument("--videos", type=int, default=512, help="distinct training videos")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=32, help="model_channels")
    parser.add_argument("--samples", type=int, default=32, help="unconditional clips to score")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    names = [r for r in args.roles.split(",") if r]
    if not names or any(r not in ROLES for r in names) or len(set(names)) != len(names):
        parser.error(f"--roles: distinct names of {ROLES}, got {args.roles!r}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    autoencoder, _ = load_autoencoder(args.autoencoder)
    train_latents = encode(autoencoder, synthetic_videos(args.videos, split=0))
    scale, shift = latent_normalisation(train_latents, per_channel=True)
    network = build_network(names, args.width)
    trainer = train(args, network, roles_for(names), normalise(train_latents, scale, shift))
    model, schedule = trainer.ema.model.eval(), trainer.schedule
    result: dict = {"args": vars(args), "parameters": sum(p.numel() for p in network.parameters())}
    if "uncond" in names:
        result["unconditional"] = unconditional_figures(
            model, schedule, autoencoder, scale, shift, args.samples
        )
    if "pred" in names:
        result["prediction"] = prediction_figures(model, schedule, autoencoder, scale, shift)
    if "interp" in names:
        result["interpolation"] = interpolation_figures(model, schedule, autoencoder, scale, shift)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

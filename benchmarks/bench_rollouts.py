"""Autoregressive rollouts of a run's trained prediction network, measured exactly (issue 21).

Long videos go wrong one prediction step at a time, so this script measures the steps: from
the first latents of held-out videos of the run's latent cache (as many as train_pred gives its
network, `--cond` to override), the prediction network is
continued for `--latents` latents under each sampling setting given, and per 16-frame window
it prints the latents' mean over channels of |mean| and of std (normalised data: 0 and 1), and
the decoded frames' coverage, shape count and on-palette fraction (`data_prep.appearance`)
beside the same videos' real first window. It also runs train_pred's position check
(`stages.position_check`: shape positions in pixels at +4/+8/+16 frames, the fraction found by
colour) under each setting. Sampling settings are cheap to try here: no retraining, seconds
per setting on a CPU.

    python benchmarks/bench_rollouts.py --workdir W --settings '100:0.1:10:1;100:0.1:10:0'

`--unet` takes another prediction network (e.g. one `bench_generation_quality.py --save`
wrote, with its `.normalisation.json` beside it) to roll out with the run's autoencoder.
Setting: 's:w:steps:eta[:r]' = perturbation level, guidance weight, sampler steps (`--sampler`:
DDIM, or DPM-Solver++, which has no η), DDIM η, and
`r` to renormalise every sampled chunk (and the unconditional start) to the data's statistics
(`sampling.renormalise`, lvdm/diffusion/renormalise.py).
Run it with `chrt -r 1` beside other work for stable figures.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch

from data_prep.appearance import window_appearance
from data_prep.shard_writer import read_shard
from data_prep.sources.shapes import render
from lvdm.autoencoder import denormalise, normalise
from lvdm.continuation import continue_latents
from lvdm.diffusion.conditioning import masked_input
from lvdm.diffusion.parameterisation import as_eps_model
from lvdm.diffusion.renormalise import renormalise_sampled
from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.latent_stats import WindowedLatentStats
from lvdm.long_video import SamplingSettings, to_uint8_frames
from stages.autoencoder_file import load_autoencoder
from stages.position_check import position_check
from stages.sample import contact_steps, write_contact_sheet
from stages.unet_file import load_unet

WINDOW = 16  # frames per reported window
SHOWN = ("coverage", "shape_count", "on_palette")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path, help="a finished run's workdir")
    parser.add_argument("--unet", type=Path, help="another prediction unet.pt (default: the run's)")
    parser.add_argument("--settings", default="100:0.1:10:1", help="'s:w:steps:eta;...'")
    parser.add_argument("--latents", type=int, default=48, help="latents per rollout (2 frames each)")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument(
        "--cond",
        type=int,
        help="latents given to each prediction step (default: the run's train_pred cond_frames; "
        "give it with --unet for a network trained with another count)",
    )
    parser.add_argument("--clips", type=int, default=32, help="held-out clips of the position check")
    parser.add_argument(
        "--start-eta",
        type=float,
        help="start each video with a clip of the run's unconditional network at this DDIM η "
        "(as the pipeline's long videos start) instead of a real latent",
    )
    parser.add_argument("--sampler", default="ddim", choices=("ddim", "dpmpp"), help="for every setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sheets", type=Path, help="one contact sheet PNG per setting here (a row per video, 16 columns)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    stages = args.workdir / "stages"
    prediction, _ = load_unet(args.unet or _one(stages, "train_pred-*/unet.pt"))
    cond = args.cond or _cond_frames(_one(stages, "train_pred-*/unet.pt").parent)
    autoencoder, _ = load_autoencoder(_one(stages, "train_autoencoder-*/autoencoder.pt"))
    cache = _one(stages, "cache_latents-*/manifest.json").parent
    scale, shift = _normalisation(cache, args.unet)
    latents, metas = _heldout(cache, max(args.videos, args.clips))
    clips = [(meta, render(meta)) for meta in metas[: args.clips]]
    given = normalise(latents[: args.videos, :, :cond], scale, shift)
    if args.start_eta is not None:
        given = _unconditional_start(stages, args.videos, given.shape, args.start_eta)
    real = [window_appearance(render(meta)[:WINDOW], window=WINDOW)[0] for meta in metas[: args.videos]]
    print("real first window:", _means(real), flush=True)

    schedule = NoiseSchedule.linear()
    clip_latents = prediction.config.temporal_length
    windows = normalise(latents[: args.clips, :, :clip_latents], scale, shift)
    print(f"x0 error of the predicted latents, without / with the {cond} given:", flush=True)
    for t, errors in given_frame_gain(prediction, windows, schedule, cond).items():
        print(f"  t={t}: {errors[0]:.3f} / {errors[1]:.3f}", flush=True)
    for setting in filter(None, args.settings.split(";")):
        s, w, steps, eta, *restore = setting.split(":")
        sampling = SamplingSettings(
            sampler=args.sampler,
            steps=int(steps),
            eta=float(eta),
            noise_level=int(s),
            guidance_weight=float(w),
            ddim_last_step="x0",
            renormalise=restore == ["r"],
        )
        start = renormalise_sampled(given) if sampling.renormalise and args.start_eta is not None else given
        stride = 1 if prediction.config.max_stride else None
        with torch.no_grad():
            # Conditioned on the last `cond` latents of the start, as the long-video loop is.
            head, last = start[:, :, :-cond], start[:, :, -cond:]
            continued = continue_latents(
                prediction,
                last,
                schedule,
                clip=clip_latents,
                latents=args.latents - head.shape[2],
                sampling=sampling,
                generator=torch.Generator().manual_seed(0),
                stride=stride,
            )
            video = torch.cat([head, continued], dim=2)
            frames = _decode(autoencoder, denormalise(video, scale, shift), clip_latents)
            positions = position_check(
                prediction,
                None,
                autoencoder,
                clips,
                schedule,
                scale=scale,
                shift=shift,
                cond_frames=cond,
                clip_latents=clip_latents,
                latent_stride=1,
                unconditional_latents=clip_latents,
                encode_window=clip_latents * autoencoder.config.ft,
                sampling=sampling,
                stride=stride,
            )
        print(f"s={s} w={w} steps={steps} eta={eta} renormalise={sampling.renormalise}", flush=True)
        print("  position error px (found):", _positions(positions["prediction"]))
        print("  still frame:              ", _positions(positions["still_frame"]))
        if args.sheets:
            sheet = args.sheets / f"{setting.replace(':', '_')}.png"
            write_contact_sheet(sheet, [frames[:, step] for step in contact_steps(frames.shape[1], 16)])
            print(f"  contact sheet: {sheet}")
        per_window = latents_per_window(video, WINDOW // autoencoder.config.ft)
        print("  latents |mean| / std:", per_window)
        windows = [window_appearance(v, window=WINDOW) for v in frames]
        for statistic in SHOWN:
            curve = [np.mean([v[i][statistic] or 0.0 for v in windows]) for i in range(len(windows[0]))]
            print(f"  {statistic}:", [round(float(x), 3) for x in curve], flush=True)


@torch.no_grad()
def given_frame_gain(
    prediction: torch.nn.Module, windows: torch.Tensor, schedule: NoiseSchedule, cond: int = 1
) -> dict[int, tuple[float, float]]:
    """Does the network read its given latents? Per diffusion step t, the mean squared error of
    x̂_0 on latents `cond`.. of real windows `(b c l h w)`, without the first `cond` given
    (all-False mask) and with them (clean, s = 0). At large t, x_t holds almost nothing of x_0:
    only the given latents can tell the network what the next ones look like."""
    b, _, frames, _, _ = windows.shape
    generator = torch.Generator().manual_seed(0)
    stride = {"stride": torch.ones(b, dtype=torch.long)} if prediction.config.max_stride else {}
    errors = {}
    for step in (200, 500, 800, 950):
        t = torch.full((b,), step)
        x_t = schedule.q_sample(windows, t, torch.randn(windows.shape, generator=generator))
        row = []
        for given in (False, True):
            mask = torch.zeros(b, frames, dtype=torch.bool)
            mask[:, :cond] = given
            eps = as_eps_model(prediction, schedule)(
                masked_input(x_t, windows, mask), t, noise_level=torch.zeros(b, dtype=torch.long), **stride
            )
            x0 = schedule.predict_x0(x_t, t, eps)
            row.append(float((x0 - windows)[:, :, cond:].square().mean()))
        errors[step] = (row[0], row[1])
    return errors


def latents_per_window(video: torch.Tensor, window: int) -> list[tuple[float, float]]:
    """Per window of `window` latents (`lvdm.latent_stats`, as the sample stage records them):
    mean over channels of |channel mean| and of channel std."""
    stats = WindowedLatentStats(window)
    stats.add(video)
    return [
        (round(float(np.mean(np.abs(w["mean"]))), 2), round(float(np.mean(w["std"])), 2))
        for w in stats.windows()
    ]


def _unconditional_start(stages: Path, videos: int, shape: torch.Size, eta: float) -> torch.Tensor:
    """A clip of `temporal_length` latents per video from the run's unconditional network
    (DDIM 10 at `eta`): the pipeline's autoregressive videos start this way."""
    unconditional, _ = load_unet(_one(stages, "train_uncond-*/unet.pt"))
    _, c, _, h, w = shape
    clip = (videos, c, unconditional.config.temporal_length, h, w)
    return sample_latents(
        unconditional,
        clip,
        NoiseSchedule.linear(),
        steps=10,
        eta=eta,
        generator=torch.Generator().manual_seed(1),
    )


def _decode(autoencoder, latents: torch.Tensor, clip_latents: int) -> np.ndarray:
    """Clip by clip, as the autoencoder was trained: `(b t h w c)` uint8."""
    parts = [
        autoencoder.decode(latents[:, :, s : s + clip_latents])
        for s in range(0, latents.shape[2], clip_latents)
    ]
    return to_uint8_frames(torch.cat(parts, dim=2)).numpy()


def _one(stages: Path, pattern: str) -> Path:
    found = sorted(stages.glob(pattern))
    if not found:
        raise SystemExit(f"no {pattern} under {stages}: run the pipeline through that stage first")
    return found[-1]


def _cond_frames(pred_stage: Path) -> int:
    """How many latents the run's train_pred gave its network (its manifest's task)."""
    manifest = json.loads((pred_stage / "manifest.json").read_text())
    return int(manifest["outputs"]["task"]["cond_frames"])


def _normalisation(cache: Path, unet: Path | None) -> tuple:
    """The run's latent scale/shift, or the one saved beside another network."""
    beside = Path(f"{unet}.normalisation.json") if unet else None
    source = beside if beside and beside.exists() else cache / "manifest.json"
    values = json.loads(source.read_text())
    values = values.get("outputs", values)
    return values["scale"], values["shift"]


def _heldout(cache: Path, count: int) -> tuple[torch.Tensor, list[dict]]:
    """Latents `(n c l h w)` and metadata of the first `count` videos of the cache's test split."""
    latents, metas = [], []
    for shard in sorted(cache.glob("test-*.tar")):
        for _, fields in read_shard(shard):
            latents.append(np.load(io.BytesIO(fields["npy"]), allow_pickle=False).astype(np.float32))
            metas.append(json.loads(fields["json"]))
            if len(latents) == count:
                return torch.from_numpy(np.stack(latents)), metas
    if not latents:
        raise SystemExit(f"no test shards in {cache}: the run needs a test split")
    return torch.from_numpy(np.stack(latents)), metas


def _means(windows: list[dict]) -> dict[str, float]:
    return {k: round(float(np.mean([w[k] or 0.0 for w in windows])), 3) for k in SHOWN}


def _positions(row: dict) -> str:
    return ", ".join(
        f"{offset} {v['error']:.2f} ({v['found']:.0%})" if v["error"] is not None else f"{offset} -"
        for offset, v in row.items()
    )


if __name__ == "__main__":
    main()

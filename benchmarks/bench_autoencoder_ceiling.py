"""What a run's autoencoder keeps of real clips: its reconstructions of held-out clips, through
H.264 as the sample stage stores videos, scored by `data_prep.appearance` as ratios to the real
clips (issue 21: the shape count no diffusion network can pass, since every sample is decoded
by this network). Needs only the train_autoencoder stage, so an autoencoder setting can be
judged in minutes before a whole run is spent on it:

    lvdm run pipelines/bouncing_shapes.yaml --workdir W --set 'stages=[shard, train_autoencoder]' \
        --set autoencoder.model.latent_channels=8 --set diffusion.unet.in_channels=8 \
        --set diffusion.unet.out_channels=8
    python benchmarks/bench_autoencoder_ceiling.py --workdir W [--run RUN] [--clips 32]

`--latent-noise 0.1,0.3,0.5` also decodes the latents with Gaussian noise of each std added (in
normalised units, where the data's std is 1): how fragile the decoder is to an unstructured
error of a diffusion network's size, i.e. whether the samples' wrong colours could be the
decoder's.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from einops import rearrange

from data_prep import storage
from data_prep.appearance import appearance, appearance_ratios, mean_appearance
from data_prep.decode import decode_video
from data_prep.encode import encode_mp4
from lvdm.autoencoder import denormalise, normalise
from lvdm.long_video import to_uint8_frames
from pipelines.config import load_pipeline
from pipelines.run_record import run_with_stage
from stages.autoencoder_file import load_autoencoder
from stages.contract import read_manifest
from stages.position_check import heldout_clips


def through_h264(frames: np.ndarray, fps: float, crf: int) -> np.ndarray:
    """`t h w c` uint8 as the sample stage's mp4 gives it back."""
    return decode_video(encode_mp4(frames, fps=fps, crf=crf)).frames


@torch.no_grad()
def decoded(autoencoder, latents: torch.Tensor, scale, shift) -> np.ndarray:
    """`b t h w c` uint8 of normalised latents `b c l h w`."""
    return to_uint8_frames(autoencoder.decode(denormalise(latents.float(), scale, shift))).numpy()


def first_clip_ratios(clips: np.ndarray, real: dict, fps: float, crf: int) -> dict:
    """appearance of the clips through H.264, as ratios to the real clips' (1 = like the data)."""
    means = mean_appearance([appearance(through_h264(clip, fps, crf)) for clip in clips])
    return {k: None if v is None else round(v, 3) for k, v in appearance_ratios(means, real).items()}


def autoencoder_ceiling(config, autoencoder, scale, shift, clips: int) -> tuple[dict, dict]:
    """The real held-out clips' appearance (as the shard stage stores them) and the autoencoder's
    reconstructions of them (the posterior mode, as the latent cache encodes) as ratios, both
    over their first `data.frames` frames."""
    real_means, latents = heldout_latents(config, autoencoder, scale, shift, clips)
    return real_means, reconstruction_ratios(config, autoencoder, latents, scale, shift, real_means)


@torch.no_grad()
def heldout_latents(config, autoencoder, scale, shift, clips: int) -> tuple[dict, torch.Tensor]:
    """The real held-out clips' mean appearance and their normalised latents `b c l h w`."""
    frames = config.data.frames
    real = np.stack([video[:frames] for _, video in heldout_clips(config.data, clips, config.shard.crf)])
    real_means = mean_appearance([appearance(clip) for clip in real])
    x = rearrange(torch.from_numpy(real).float().div(127.5).sub(1), "b t h w c -> b c t h w")
    return real_means, normalise(autoencoder.encode(x).mode(), scale, shift)


def reconstruction_ratios(
    config, autoencoder, latents: torch.Tensor, scale, shift, real_means: dict, noise: float = 0.0
) -> dict:
    """The decoded `latents` (plus Gaussian noise of std `noise`, seeded) through H.264, as
    ratios to the real clips' appearance."""
    noisy = latents + noise * torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    rebuilt = decoded(autoencoder, noisy, scale, shift)
    return first_clip_ratios(rebuilt, real_means, config.sample.fps, config.shard.crf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--run", help="run id (default: the newest with a trained autoencoder)")
    parser.add_argument("--clips", type=int, default=32, help="real held-out clips reconstructed")
    parser.add_argument(
        "--latent-noise", default="", help="also decode with noise of these stds added, e.g. 0.1,0.3,0.5"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    record = run_with_stage(args.workdir, "train_autoencoder", args.run)
    if record is None:
        where = f"run {args.run} in {args.workdir} has no" if args.run else f"no run in {args.workdir} has a"
        raise SystemExit(f"{where} complete train_autoencoder stage: `lvdm run` first")
    config = load_pipeline(storage.join(record.folder, "config.yaml"))
    manifest = read_manifest(record.stages["train_autoencoder"].output)
    outputs = manifest["outputs"]
    autoencoder, _ = load_autoencoder(storage.join(manifest["out_dir"], outputs["autoencoder"]))
    scale, shift = outputs["scale"], outputs["shift"]
    real_means, latents = heldout_latents(config, autoencoder.eval(), scale, shift, args.clips)
    ratios = reconstruction_ratios(config, autoencoder, latents, scale, shift, real_means)
    noisy = {
        f"latent noise {sigma}": reconstruction_ratios(
            config, autoencoder, latents, scale, shift, real_means, noise=float(sigma)
        )
        for sigma in filter(None, args.latent_noise.split(","))
    }
    print(
        json.dumps(
            {
                "run": record.run_id,
                "latent_shape_per_clip": outputs.get("latent_shape_per_clip"),
                "steps": outputs.get("steps"),
                "heldout_psnr": round(outputs["heldout_psnr"], 2),
                "reconstructions / real": ratios,
                **noisy,
            }
        )
    )


if __name__ == "__main__":
    main()

"""`lvdm sample --models DIR`: a video from a folder of model files, no run needed.

The folder holds what `lvdm weights import` (or a finished run's stages) writes:
`autoencoder.pt` (with the latent scale/shift), `unet.pt` (unconditional), and for long
videos `pred/unet.pt` and `interp/unet.pt`. With the unconditional network alone it samples
one short clip (the networks' training length, 16 frames for the release); with the
prediction network (and the interpolation network for `--strategy hierarchical`) any length.
The schedule is the pipeline default, which is the release's (linear 0.0015-0.0155, T=1000).
With `--prompt` it samples the folder's text-to-video model instead (`t2v/`, `pipelines.t2v_models`).
"""

from __future__ import annotations

import argparse
import math

from data_prep import storage
from pipelines.import_cli import KIND_FILES


def sample_from_models(args: argparse.Namespace) -> int:
    if args.prompt is not None:
        from pipelines.t2v_models import sample_t2v_from_models

        return sample_t2v_from_models(args)
    import torch

    from data_prep.encode import write_mp4_streams
    from lvdm.diffusion.sampling import sample_latents
    from lvdm.diffusion.schedule import NoiseSchedule
    from lvdm.long_video import (
        LongVideoModels,
        LongVideoPlan,
        SamplingSettings,
        long_video_frames,
        to_uint8_frames,
    )
    from pipelines.config import SampleSection, ScheduleSection
    from stages.autoencoder_file import load_autoencoder
    from stages.unet_file import load_unet

    folder = storage.absolute(args.models)
    paths = {kind: storage.join(folder, name) for kind, name in KIND_FILES.items()}
    present = {kind for kind, path in paths.items() if storage.is_file(path)}
    if "autoencoder" not in present and "t2v" in present:
        raise SystemExit(f'{folder} holds a text-to-video model ({KIND_FILES["t2v"]}): give --prompt "..."')
    if "autoencoder" not in present:
        raise FileNotFoundError(
            f"{paths['autoencoder']} does not exist: "
            f"`lvdm weights import CKPT --kind autoencoder --out {folder}`"
        )
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    autoencoder, meta = load_autoencoder(paths["autoencoder"])
    autoencoder = autoencoder.to(device)
    nets = {
        kind: load_unet(paths[kind])[0].to(device) for kind in ("unet", "pred", "interp") if kind in present
    }
    schedule = NoiseSchedule.linear(**ScheduleSection().model_dump())
    sampling = SamplingSettings(steps=50 if args.steps is None else args.steps)
    generator = torch.Generator(device).manual_seed(args.seed)
    size = (args.resolution, args.resolution)
    ft, fs = autoencoder.config.ft, autoencoder.config.fs
    if args.resolution % fs:
        raise SystemExit(f"--resolution {args.resolution} must divide by the autoencoder's fs={fs}")
    long_video = "pred" in present and (args.strategy == "autoregressive" or "interp" in present)
    if args.frames is None:
        args.frames = (
            1024 if long_video or "unet" not in present else nets["unet"].config.temporal_length * ft
        )
    out = args.out or storage.join(
        folder, "samples", f"{args.strategy if long_video else 'clip'}-{args.frames}f-seed{args.seed}.mp4"
    )

    if long_video:
        models = LongVideoModels(
            prediction=nets["pred"],
            interpolation=nets.get("interp"),
            unconditional=nets.get("unet"),
            autoencoder=autoencoder,
            schedule=schedule,
            scale=meta["scale"],
            shift=meta["shift"],
        )
        plan = LongVideoPlan(strategy=args.strategy, frames=args.frames, sampling=sampling)
        chunks = long_video_frames(
            models, plan, videos=1, size=size, generator=generator, device=device, progress=True
        )
        what = f"{args.strategy}, {args.frames} frames"
    elif "unet" in present:
        unet = nets["unet"]
        clip_frames = unet.config.temporal_length * ft
        if args.frames > clip_frames:
            raise SystemExit(
                f"{folder} has no prediction and interpolation networks (pred/unet.pt, interp/unet.pt; "
                f"or pred alone with --strategy autoregressive), so only one clip of up to {clip_frames} "
                f"frames can be sampled (asked: --frames {args.frames}). For long videos import them: "
                f"`lvdm weights import CKPT --kind pred|interp --out {folder}`"
            )
        latents = math.ceil(args.frames / ft)
        shape = (1, autoencoder.config.latent_channels, latents, size[0] // fs, size[1] // fs)
        z = sample_latents(
            unet, shape, schedule, steps=sampling.steps, eta=sampling.eta, generator=generator, progress=True
        )
        with torch.no_grad():
            video = autoencoder.decode(z / meta["scale"] - meta["shift"])[:, :, : args.frames]
        chunks = iter([to_uint8_frames(video)])
        what = f"unconditional clip, {args.frames} frames"
    else:
        raise SystemExit(
            f"{folder} has no network to sample: import unet.pt (--kind unet), or pred/unet.pt with "
            "interp/unet.pt (--kind pred, --kind interp; or --strategy autoregressive with pred alone)"
        )
    with storage.staged_folder(storage.parent(storage.absolute(out))) as staged:
        write_mp4_streams([staged / storage.name(out)], (c.numpy() for c in chunks), fps=SampleSection().fps)
    print(f"wrote {out} ({what}, models {folder})")
    return 0

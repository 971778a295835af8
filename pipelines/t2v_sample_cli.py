"""`lvdm sample --prompt "..."`: a text-to-video clip from a run's `train_t2v` model, in this process.

Reads what the stage's manifest names (the EMA UNet, the text encoder folder, SD's VAE and the
latent normalisation), samples with classifier-free guidance in one batched forward per step
(`--guidance-scale`, default the stage's, the release's 15) and writes an mp4 beside a JSON
with the prompt, so a clip always says what it was asked for.
"""

from __future__ import annotations

import argparse
import json

from data_prep import storage
from pipelines.config import load_pipeline
from pipelines.run_record import RunRecord, list_runs

STAGE = "train_t2v"


def sample_from_prompt(args: argparse.Namespace) -> int:
    import torch

    from data_prep.encode import write_mp4
    from lvdm.diffusion.sampling import sample_latents
    from lvdm.diffusion.text_guidance import text_guided
    from lvdm.frame_autoencoder import FrameAutoencoder
    from lvdm.text_encoder import TextEncoder
    from stages.contract import read_manifest
    from stages.diffusion_stage import schedule_of
    from stages.unet_file import load_unet

    record = run_with_t2v(args.workdir, args.run)
    config = load_pipeline(storage.join(record.folder, "config.yaml"))
    outputs = read_manifest(record.stages[STAGE].output)["outputs"]
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    model, _ = load_unet(storage.join(record.stages[STAGE].output, outputs["unet"]))
    model = model.to(device)
    text = TextEncoder.from_folder(outputs["text_encoder"]).to(device)
    autoencoder = FrameAutoencoder.from_folder(outputs["autoencoder"]).to(device).eval()
    scale = outputs["guidance_scale"] if args.guidance_scale is None else args.guidance_scale
    frames = args.frames or config.t2v.frames
    size = config.data.resolution // autoencoder.fs
    shape = (1, model.config.in_channels, frames, size, size)
    generator = torch.Generator(device).manual_seed(args.seed)
    denoiser = text_guided(model, text.encode([args.prompt]), text.encode([""])[0], scale)
    with torch.no_grad():
        latents = sample_latents(
            denoiser,
            shape,
            schedule_of(config.diffusion.schedule.model_dump()),
            sampler=config.sampling.sampler,
            steps=args.steps or config.sampling.steps,
            eta=config.sampling.eta,
            generator=generator,
            device=device,
            progress=True,
        )
        video = autoencoder.decode(latents / outputs["scale"] - outputs["shift"]).clamp(-1, 1)
    pixels = ((video[0].permute(1, 2, 3, 0).float().cpu().numpy() + 1) * 127.5).clip(0, 255).astype("uint8")
    out = args.out or storage.join(args.workdir, "samples", f"{record.run_id}-t2v-seed{args.seed}.mp4")
    with storage.staged_folder(storage.parent(storage.absolute(out))) as folder:
        write_mp4(folder / storage.name(out), pixels, fps=config.sample.fps)
        about = {"prompt": args.prompt, "guidance_scale": scale, "frames": frames, "seed": args.seed}
        (folder / (storage.name(out).rsplit(".", 1)[0] + ".json")).write_text(json.dumps(about, indent=1))
    print(f"wrote {out} ({frames} frames, guidance {scale}, run {record.run_id}): {args.prompt!r}")
    return 0


def run_with_t2v(workdir: str, run_id: str | None) -> RunRecord:
    """`run_id`'s record, or the newest run whose `train_t2v` stage is complete."""
    candidates = [run_id] if run_id else sorted(list_runs(workdir), reverse=True)
    for candidate in candidates:
        record = RunRecord.load(workdir, candidate)
        state = record.stages.get(STAGE)
        if state is not None and state.status in ("done", "cached") and state.output:
            return record
    where = f"run {run_id}" if run_id else f"no run in {workdir}"
    raise SystemExit(f"{where} has a complete {STAGE} stage: run a text-to-video pipeline first")

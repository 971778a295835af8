"""`lvdm sample --prompt "..."`: a text-to-video clip from a run's `train_t2v` model, in this process.

Reads what the stage's manifest names (the EMA UNet, the text encoder folder, SD's VAE and the
latent normalisation), samples with classifier-free guidance in one batched forward per step
(`--guidance-scale`, default the stage's, the release's 15) and writes an mp4 beside a JSON
with the prompt, so a clip always says what it was asked for. `--frames` counts video frames,
as it does for long videos (default: the training window's). Past one window the video is
continued, window by window, each conditioned on the last latents and the prompt, by a model
trained with `t2v.cond_frames` > 0; any other model says it cannot continue. `--strategy`
picks how (default the model's own: hierarchical when it was trained with `t2v.key_stride` > 1).
"""

from __future__ import annotations

import argparse
import json

from data_prep import storage
from pipelines.config import load_pipeline
from pipelines.run_record import RunRecord, run_with_stage

STAGE = "train_t2v"


def sample_from_prompt(args: argparse.Namespace) -> int:
    import torch

    from lvdm.long_video import latent_count, to_uint8_frames
    from stages.contract import read_manifest
    from stages.diffusion_stage import schedule_of
    from stages.t2v_model import TextVideoModel

    if args.frames is not None and args.frames < 1:
        raise SystemExit(f"--frames {args.frames}: give the number of video frames, at least 1")
    record = run_with_t2v(args.workdir, args.run)
    config = load_pipeline(storage.join(record.folder, "config.yaml"))
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    # The stage's own decoder: SD's VAE per frame, or the pipeline's video autoencoder.
    model = TextVideoModel.load(read_manifest(record.stages[STAGE].output), device)
    scale = model.guidance_scale if args.guidance_scale is None else args.guidance_scale
    # Video frames, as for long videos; ⌈frames / ft⌉ latents are sampled, the surplus cropped.
    frames = model.window_frames if args.frames is None else args.frames
    try:
        model.check_continues(frames)
    except ValueError as error:
        raise SystemExit(f"--frames {frames}: {error}") from None
    try:
        strategy = model.check_strategy(args.strategy)
    except ValueError as error:
        raise SystemExit(f"--strategy: {error}") from None
    sampling = config.sampling.model_dump() | {"steps": args.steps or config.sampling.steps}
    video = model.sample(
        [args.prompt],
        schedule_of(config.diffusion.schedule.model_dump()),
        sampling,
        generator=torch.Generator(device).manual_seed(args.seed),
        guidance_scale=scale,
        frames=frames,
        strategy=strategy,
    )
    pixels = to_uint8_frames(video)[0].numpy()  # rounded, as sample_t2v's videos
    out = args.out or storage.join(args.workdir, "samples", f"{record.run_id}-t2v-seed{args.seed}.mp4")
    about = {
        "prompt": args.prompt,
        "guidance_scale": scale,
        "frames": len(pixels),
        "latent_frames": latent_count(frames, model.ft),
        "seed": args.seed,
        "steps": sampling["steps"],
        "continued": model.continues and frames > model.window_frames,
        "strategy": strategy if model.continues and frames > model.window_frames else None,
    }
    write_prompted_video(out, pixels, config.sample.fps, about)
    print(f"wrote {out} ({len(pixels)} frames, guidance {scale}, run {record.run_id}): {args.prompt!r}")
    return 0


def write_prompted_video(out: storage.Location, pixels, fps: float, about: dict) -> None:
    """`out` (an mp4 of `pixels`, `t h w c` uint8) and the JSON record beside it (`about`: the
    prompt and how it was sampled), published together: a clip never lacks what it was asked for."""
    from data_prep.encode import write_mp4

    with storage.staged_folder(storage.parent(storage.absolute(out))) as folder:
        write_mp4(folder / storage.name(out), pixels, fps=fps)
        (folder / (storage.name(out).rsplit(".", 1)[0] + ".json")).write_text(json.dumps(about, indent=1))


def run_with_t2v(workdir: str, run_id: str | None) -> RunRecord:
    """`run_id`'s record, or the newest run whose `train_t2v` stage is complete."""
    record = run_with_stage(workdir, STAGE, run_id)
    if record is not None:
        return record
    where = f"run {run_id} in {workdir} has no" if run_id else f"no run in {workdir} has a"
    raise SystemExit(f"{where} complete {STAGE} stage: run a text-to-video pipeline first")

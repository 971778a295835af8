"""`lvdm sample` and `lvdm evaluate`: use a finished run's trained models.

`lvdm sample` writes one long video straight from the run's three networks and autoencoder,
in this process (no Ray), with a progress bar: the quick way to look at a model.
`lvdm evaluate` runs the run's own pipeline through the `sample` and `evaluate` stages
(adding them if the pipeline stopped earlier): every trained stage is cached, so only
sampling and evaluation run, tracked in MLflow like any stage.
`--run` defaults to the newest run whose models are complete.
"""

from __future__ import annotations

import argparse

from data_prep import storage
from pipelines.config import load_pipeline
from pipelines.run_record import RunRecord, list_runs

MODEL_STAGES = ("train_uncond", "train_pred", "train_interp")


def add_parsers(sub: argparse._SubParsersAction, default_workdir: str) -> None:
    sample = sub.add_parser("sample", help="a long video from a finished run's models (mp4)")
    sample.add_argument("--workdir", type=storage.absolute, default=default_workdir)
    sample.add_argument("--run", help="run id (default: the newest run with trained models)")
    sample.add_argument(
        "--frames",
        type=int,
        help="frames of the video (default 1024; 16 for --models with unet.pt alone; with --prompt the "
        "training window's)",
    )
    sample.add_argument(
        "--strategy",
        choices=("autoregressive", "hierarchical"),
        help="how a long video is drawn (default hierarchical; with --prompt the model's own: hierarchical "
        "if it was trained with t2v.key_stride > 1)",
    )
    sample.add_argument("--out", help="mp4 path (default <workdir>/samples/<run>-<strategy>.mp4)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="auto", help="auto: cuda if available, else cpu")
    sample.add_argument(
        "--models",
        help="a models folder instead of a run: autoencoder.pt, unet.pt and/or pred/unet.pt, interp/unet.pt, "
        "or t2v/ with --prompt (as `lvdm weights import` writes them)",
    )
    sample.add_argument("--resolution", type=int, default=256, help="with --models: frame size (default 256)")
    sample.add_argument(
        "--steps",
        type=int,
        help="sampler steps (default 50 with --models; with --prompt the run's sampling.steps)",
    )
    sample.add_argument(
        "--prompt",
        help="text-to-video: a clip of this caption from the train_t2v model (or --models DIR's t2v/)",
    )
    sample.add_argument(
        "--guidance-scale", type=float, help="with --prompt: classifier-free guidance (default: the stage's)"
    )
    sample.set_defaults(handler=cmd_sample)

    evaluate = sub.add_parser("evaluate", help="sample + evaluate stages on a finished run's models")
    evaluate.add_argument("--workdir", type=storage.absolute, default=default_workdir)
    evaluate.add_argument("--run", help="run id (default: the newest run with trained models)")
    evaluate.set_defaults(handler=cmd_evaluate)


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    if args.prompt is None:
        args.strategy = args.strategy or "hierarchical"
    if args.models:
        from pipelines.models_sample import sample_from_models

        return sample_from_models(args)
    if args.prompt is not None:
        from pipelines.t2v_sample_cli import sample_from_prompt

        return sample_from_prompt(args)
    args.frames = 1024 if args.frames is None else args.frames

    from data_prep.encode import write_mp4_streams
    from lvdm.long_video import LongVideoPlan, SamplingSettings, long_video_frames
    from stages.contract import read_manifest
    from stages.sample import load_models, model_files, plan_options

    workdir = args.workdir
    record = run_with_models(workdir, args.run)
    config = load_pipeline(storage.join(record.folder, "config.yaml"))
    manifests = {name: read_manifest(record.stages[name].output) for name in _model_stages(record)}
    try:
        files = model_files(manifests) | {"schedule": config.diffusion.schedule.model_dump()}
    except ValueError as err:
        raise SystemExit(f"run {record.run_id} in {workdir}: {err}") from None
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    models = load_models(files, device)
    plan = LongVideoPlan(
        strategy=args.strategy,
        sampling=SamplingSettings(**config.sampling.model_dump()),
        **plan_options(config) | {"frames": args.frames},
    )
    out = args.out or storage.join(workdir, "samples", f"{record.run_id}-{args.strategy}-{args.frames}f.mp4")
    resolution = config.data.resolution
    generator = torch.Generator(device).manual_seed(args.seed)
    chunks = long_video_frames(
        models,
        plan,
        videos=1,
        size=(resolution, resolution),
        generator=generator,
        device=device,
        progress=True,
    )
    with storage.staged_folder(storage.parent(storage.absolute(out))) as folder:
        frames = (chunk.numpy() for chunk in chunks)
        write_mp4_streams([folder / storage.name(out)], frames, fps=config.sample.fps)
    print(f"wrote {out} ({args.frames} frames, {args.strategy}, run {record.run_id})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipelines.runner import run_pipeline

    workdir = args.workdir
    record = run_with_models(workdir, args.run)
    recorded = storage.join(record.folder, "config.yaml")
    stages = [s for s in load_pipeline(recorded).stages if s not in ("sample", "evaluate")]
    overrides = [f"stages=[{', '.join([*stages, 'sample', 'evaluate'])}]"]
    config = load_pipeline(recorded, overrides)
    result = run_pipeline(config, workdir, record.pipeline, until="evaluate")
    print_outputs(result)
    return 0 if result.status == "done" else 1


def print_outputs(record: RunRecord) -> None:
    """Where a run's videos, plots and MLflow runs are: what a user looks at next."""
    sample, evaluate = record.stages.get("sample"), record.stages.get("evaluate")
    if sample and sample.output:
        videos, sheets = (storage.join(sample.output, part) for part in ("videos", "contact_sheets"))
        print(f"videos and contact sheets: {videos}, {sheets}")
    if evaluate and evaluate.output:
        print(f"metrics and plots: {storage.join(evaluate.output, 'metrics.json')}, *.png")
    from stages import tracking  # MLflow: imported when a run has ended, not for `lvdm --help`

    uri, experiment = record.mlflow_tracking_uri, record.mlflow_experiment_id
    if uri and experiment:
        where = tracking.where_to_look(uri, experiment)
        print(f"MLflow: {where}  (parent run {record.mlflow_parent_run_id})")
    elif uri:  # a record written before the experiment id was: no link to give
        ui = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else uri
        print(f"MLflow: {ui}  (runs under 'Model training'; parent run {record.mlflow_parent_run_id})")


def run_with_models(workdir: str, run_id: str | None) -> RunRecord:
    """`run_id`'s record, or the newest run whose diffusion stages are complete (train_pred, and
    train_uncond / train_interp where the run lists them: a shared network stands in for them)."""
    if run_id:
        record = RunRecord.load(workdir, run_id)
        missing = [s for s in _model_stages(record) if not record.complete(s)]
        if missing:
            raise SystemExit(
                f"run {run_id} in {workdir} has no complete {missing}: `lvdm resume {run_id}` first"
            )
        return record
    for candidate in sorted(list_runs(workdir), reverse=True):
        record = RunRecord.load(workdir, candidate)
        if all(record.complete(s) for s in _model_stages(record)):
            return record
    raise SystemExit(f"no run in {workdir} has trained {', '.join(MODEL_STAGES)}: `lvdm run` first")


def _model_stages(record: RunRecord) -> list[str]:
    """The diffusion stages the run lists (train_pred always)."""
    return [s for s in MODEL_STAGES if s == "train_pred" or s in record.stages]

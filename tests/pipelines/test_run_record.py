"""The run record: `lvdm status` on a run driven elsewhere (a submitted run runs on the cluster's
head), and which run a command that reads one stage defaults to."""

import json
import socket
import subprocess
import sys

from pipelines.cli import main
from pipelines.run_record import RunRecord, StageState, run_with_stage


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid  # gone; on another machine, the same number may be a live process


def _status(workdir, capsys, **fields) -> str:
    record = RunRecord(run_id="r1", pipeline="demo.yaml", name="demo", workdir=str(workdir), **fields)
    record.save()
    capsys.readouterr()
    assert main(["status", "r1", "--workdir", str(workdir)]) == 0
    return capsys.readouterr().out.splitlines()[0]


def test_a_run_driven_on_another_host_reads_running_there_not_interrupted(tmp_path, capsys):
    line = _status(tmp_path, capsys, pid=_dead_pid(), host="ray-head-7")
    assert "status running on ray-head-7 " in line, line


def test_a_run_whose_process_here_is_gone_reads_interrupted(tmp_path, capsys):
    assert "status interrupted " in _status(tmp_path, capsys, pid=_dead_pid(), host=socket.gethostname())


def test_a_record_from_before_the_host_was_kept_still_loads(tmp_path, capsys):
    _status(tmp_path, capsys, pid=_dead_pid())
    path = tmp_path / "runs" / "r1" / "run.json"
    raw = json.loads(path.read_text())
    del raw["host"]
    path.write_text(json.dumps(raw))
    assert RunRecord.load(str(tmp_path), "r1").host is None


def _record(workdir, run_id: str, **stages: StageState) -> None:
    RunRecord(run_id=run_id, pipeline="demo.yaml", name="demo", workdir=str(workdir), stages=stages).save()


def test_run_with_stage_takes_the_newest_run_whose_stage_finished_with_an_output(tmp_path):
    _record(tmp_path, "20260101-000000-aaaa", train_autoencoder=StageState(status="done", output="/ae1"))
    _record(tmp_path, "20260102-000000-bbbb", train_autoencoder=StageState(status="cached", output="/ae2"))
    _record(tmp_path, "20260103-000000-cccc", train_autoencoder=StageState(status="failed", output="/ae3"))
    _record(tmp_path, "20260104-000000-dddd", train_autoencoder=StageState(status="done", output=""))
    _record(tmp_path, "20260105-000000-eeee", shard=StageState(status="done", output="/shard"))

    assert run_with_stage(tmp_path, "train_autoencoder").run_id == "20260102-000000-bbbb"
    assert (
        run_with_stage(tmp_path, "train_autoencoder", "20260101-000000-aaaa").run_id == "20260101-000000-aaaa"
    )
    # a named run whose stage is not complete is not swapped for another run
    assert run_with_stage(tmp_path, "train_autoencoder", "20260103-000000-cccc") is None
    assert run_with_stage(tmp_path, "train_pred") is None

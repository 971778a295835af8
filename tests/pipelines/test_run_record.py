"""`lvdm status` on a run driven elsewhere: a submitted run runs on the cluster's head."""

import json
import socket
import subprocess
import sys

from pipelines.cli import main
from pipelines.run_record import RunRecord


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

"""benchmarks/gpu_check.py keeps working without a GPU: `--cpu-smoke` runs every section's code
path (the real trainer step, FLOP counting, the T2V UNet, the encoder, diffusers, a Ray Train
run of the demo through train_uncond logging clips/s, compile) at demo sizes on the CPU.

Slow (a minute or two on 2 cores, most of it the `lvdm run` of section E), so the default run
leaves it out; `.ci/run` runs the same command after the tests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_cpu_smoke_runs_every_section_and_writes_the_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["cpu_smoke"] and result["device"] == "cpu"
    rows = result["rows"]
    by_section = {row["section"].split()[0]: [] for row in rows}
    for row in rows:
        by_section[row["section"].split()[0]].append(row)
    assert set(by_section) == set("ABCDEF"), by_section.keys()
    skipped = [row for row in rows if row["note"].startswith("skipped")]
    if importlib.util.find_spec("diffusers") is None:  # the `bench` extra
        assert [row["section"] for row in skipped] == ["D vs diffusers"], skipped
        rows = [row for row in rows if row not in skipped]
    assert not [row for row in rows if row["note"].startswith("skipped")], skipped
    for row in rows:
        assert row["s_per_step"] > 0 and row["clips_per_s"] > 0, row
        assert row["tflops"] > 0, f"no FLOPs counted: {row}"
        assert row["mfu"] is None, "no peak is known for a CPU, so no MFU"
    assert len(by_section["A"]) == 8  # batch 1, 2 x fp32, bf16 x checkpointing off, on
    assert "train_uncond" in by_section["E"][0]["config"]
    assert "A unet" in done.stdout and "mfu" in done.stdout  # the printed table

"""`lvdm submit` against a real Ray head with its Jobs API on 127.0.0.1 (`ray_head` in conftest)."""

from pathlib import Path

from pipelines.cli import main
from tests.conftest import PIPELINES, TINY_DEMO


def _submit(url: str, workdir: Path) -> list[str]:
    sets = [a for o in TINY_DEMO for a in ("--set", o)]
    return [
        "submit",
        str(PIPELINES / "demo.yaml"),
        "--address",
        url,
        "--workdir",
        str(workdir),
        "--wait",
        *sets,
    ]


def test_submitted_pipeline_succeeds_and_a_resubmission_resumes_it(ray_head, tmp_path, capsys):
    assert main(_submit(ray_head.dashboard, tmp_path / "w")) == 0
    out = capsys.readouterr().out
    first_id = out.splitlines()[0]
    assert first_id.startswith("lvdm-demo-") and f"job {first_id}: SUCCEEDED" in out
    assert "[shard] done" in out
    manifests = list((tmp_path / "w" / "stages").glob("shard-*/manifest.json"))
    assert len(manifests) == 1
    run_id = first_id.removeprefix("lvdm-demo-")
    assert (tmp_path / "w" / "runs" / run_id / "config.yaml").is_file()  # the resolved config, recorded

    # Ray never retries a job: submitting again is the retry, and complete stages are skipped.
    assert main(_submit(ray_head.dashboard, tmp_path / "w")) == 0
    out = capsys.readouterr().out
    second_id = out.splitlines()[0]
    assert second_id != first_id and "[shard] cached" in out and "[shard] done" not in out
    assert list((tmp_path / "w" / "stages").glob("shard-*/manifest.json")) == manifests

    assert main(["logs", first_id, "--address", ray_head.dashboard]) == 0
    assert "[shard] done" in capsys.readouterr().out


def test_a_failed_job_gives_a_nonzero_exit(ray_head, tmp_path, capsys):
    args = _submit(ray_head.dashboard, tmp_path / "w") + ["--set", "data.synthetic.videos={train: 0}"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "error: stage 'shard' failed" in out and ": FAILED" in out  # the job's own error, streamed

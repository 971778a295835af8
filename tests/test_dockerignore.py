""".dockerignore is an allow-list: the image's build context holds the packages and pyproject.toml.

The context is computed with docker-py's `exclude_paths` (installed with MLflow), which applies
.dockerignore the way `docker build` does: patterns in order, `!` re-includes, the last match wins.
"""

from pathlib import Path

from docker.utils.build import exclude_paths

REPO = Path(__file__).resolve().parents[1]


def _context(root: Path) -> set[str]:
    # As docker-py's build reads the file: blank lines and `#` comments dropped.
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    return exclude_paths(str(root), patterns) - {".dockerignore", "Dockerfile"}


def test_a_build_context_holds_the_packages_and_no_file_planted_beside_or_inside_them(tmp_path):
    kept = ["pyproject.toml", "README.md", "lvdm/unet.py", "data_prep/storage.py", "stages/shard.py"]
    kept += ["pipelines/demo.yaml"]
    planted = [".env", ".env.production", ".aws/credentials", ".ssh/id_ed25519", "deploy.pem", "mlflow.db"]
    planted += ["data/UCF101/v_ApplyEyeMakeup_g01_c01.avi", "lvdm-work/runs/r/run.json", "my-workdir/x.tar"]
    planted += [".venv/bin/python", ".git/config", "tests/test_x.py", "notes.txt"]
    planted += ["lvdm/.env", "pipelines/.aws/credentials", "stages/__pycache__/shard.cpython-311.pyc"]
    for name in kept + planted:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    context = {p for p in _context(tmp_path) if (tmp_path / p).is_file()}
    assert context == set(kept), (context - set(kept), set(kept) - context)


def test_the_repository_context_is_what_pip_install_needs():
    files = {p for p in _context(REPO) if (REPO / p).is_file()}
    assert {"pyproject.toml", "README.md", "lvdm/__init__.py", "pipelines/cli.py"} <= files
    allowed = {"pyproject.toml", "README.md", "lvdm", "data_prep", "stages", "pipelines"}
    assert {Path(p).parts[0] for p in files} <= allowed

"""What `lvdm submit` uploads: the four packages, listed by Ray's own file walker, and no secret."""

import shutil
from pathlib import Path

from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

from pipelines.config import load_pipeline
from pipelines.submit import EXCLUDES, PACKAGES, job_config, job_runtime_env
from tests.conftest import PIPELINES, REPO, TINY_DEMO


def _uploaded(folder: Path, excludes: list[str]) -> list[Path]:
    """The files Ray zips for a `py_modules` / `working_dir` folder (the walk `ray job submit` does)."""
    files: list[Path] = []
    _dir_travel(
        folder, [_get_excludes(folder, excludes)], lambda p: files.append(p) if p.is_file() else None, True
    )
    return files


def test_a_job_ships_the_four_packages_and_nothing_else_of_the_project_folder():
    env = job_runtime_env(job_config(load_pipeline(PIPELINES / "demo.yaml", TINY_DEMO)), "demo.yaml")
    assert "working_dir" not in env, "a working_dir uploads whatever lies in the project folder"
    assert [Path(m) for m in env["py_modules"]] == [REPO / name for name in PACKAGES]
    files = [f for module in env["py_modules"] for f in _uploaded(Path(module), env["excludes"])]
    assert REPO / "pipelines" / "submit.py" in files and REPO / "lvdm" / "unet.py" in files
    tops = {f.relative_to(REPO).parts[0] for f in files}
    assert tops == set(PACKAGES), tops
    assert not [f for f in files if "__pycache__" in f.parts]


def test_secrets_inside_a_package_folder_stay_behind(tmp_path):
    package = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", package, ignore=shutil.ignore_patterns("__pycache__"))
    planted = [".env", ".env.local", "deploy.pem", "tls.key", ".aws/credentials", ".ssh/id_rsa", "mlflow.db"]
    for name in planted:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("secret")
    names = {f.relative_to(package).as_posix() for f in _uploaded(package, list(EXCLUDES))}
    assert "submit.py" in names and not names & set(planted), names & set(planted)

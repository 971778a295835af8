"""ray_cluster.yaml must be a valid Ray cluster launcher config (`ray up` checks the same schema)."""

import json
import re
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_ray_cluster_yaml_matches_the_launcher_schema():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("lvdm weights fetch" in command for command in config["setup_commands"])


def _commands(config: dict) -> list[str]:
    keys = ("setup_commands", "head_setup_commands", "worker_setup_commands")
    keys += ("head_start_ray_commands", "worker_start_ray_commands", "initialization_commands")
    return [command for key in keys for command in config.get(key, [])]


def test_nothing_listens_on_every_interface_and_ray_requires_its_token():
    # The dashboard's Jobs API runs whatever it is sent and MLflow has no authentication:
    # both are reached over SSH (`ray dashboard`, `ssh -L`), never through an open port.
    text = (REPO / "ray_cluster.yaml").read_text()
    assert not re.search(r"0\.0\.0\.0|--(dashboard-)?host[= ]*(::|\[::\])", text)
    config = yaml.safe_load(text)
    commands = _commands(config)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    # MLflow on the head's private IP: workers on other nodes log to it; never every interface.
    assert "mlflow server --host $(hostname -I | awk '{print $1}')" in head
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert "~/.ray/auth_token" in config["file_mounts"].values()


def test_the_project_copy_names_its_source_and_leaves_secrets_behind():
    # `.` would be the folder `ray up` runs in (the home folder: ~/.ssh, ~/.aws to every node).
    config = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    source = config["file_mounts"]["/home/ubuntu/lvdm"]
    assert source.startswith("/") and "YOUR" in source, source
    assert ".gitignore" in config["rsync_filter"]
    excluded = config["rsync_exclude"]
    for secret in ("**/.env*", "**/.aws", "**/.ssh", "**/*.pem"):
        assert secret in excluded, secret

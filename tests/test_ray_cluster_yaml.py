"""ray_cluster.yaml must be a valid Ray cluster launcher config (`ray up` checks the same schema)."""

import json
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

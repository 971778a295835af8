"""Bad input, 1. the pipeline file and --set: refused when the file is read, nothing started."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bad_input.common import DEMO, assert_names, run_lvdm, set_args
from tests.conftest import PIPELINES, TINY_AUTOENCODER

AE_STAGES = "stages=[shard, train_autoencoder, cache_latents]"


GOOD_YAML = """\
name: bad-input
stages: [shard]
data:
  dataset: synthetic
  resolution: 32
  frames: 8
  synthetic: {videos: {train: 6, test: 2}, frames: 12}
shard:
  videos_per_shard: 2
"""


@dataclass(frozen=True)
class ConfigCase:
    yaml: str | None  # the pipeline file's text; None: the shipped demo.yaml
    sets: list[str]
    names: list[str]  # what the message must say: the file, the key, what is wrong, the fix
    pipeline: str | None = None  # another shipped pipeline, or a path that does not exist


def _edit(old: str, new: str) -> str:
    assert old in GOOD_YAML
    return GOOD_YAML.replace(old, new)


CONFIG_CASES = [
    pytest.param(
        ConfigCase(
            _edit("stages: [shard]", "stages: [shard"),
            [],
            ["p.yaml, line 3, column 5", "not valid YAML", "expected ',' or ']'", "Fix the syntax there"],
        ),
        id="bad-yaml-syntax",
    ),
    pytest.param(
        ConfigCase(
            _edit("  resolution: 32", "  resolutoin: 32"),
            [],
            ["p.yaml: invalid pipeline config", "data.resolutoin: unknown key", "did you mean 'resolution'"],
        ),
        id="unknown-key-in-file",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            ["shard.videos_per_shrd=4"],
            [
                "(with --set overrides)",
                "shard.videos_per_shrd: unknown key",
                "did you mean 'videos_per_shard'",
            ],
        ),
        id="unknown-key-in-set",
    ),
    pytest.param(
        ConfigCase(
            _edit("  frames: 8", "  frames: many"), [], ["data.frames: given 'many'", "valid integer"]
        ),
        id="wrong-type",
    ),
    pytest.param(
        ConfigCase(
            _edit("dataset: synthetic", "dataset: kinetics"),
            [],
            ["data.dataset: given 'kinetics'", "'ucf101'", "'synthetic'"],
        ),
        id="not-one-of-the-choices",
    ),
    pytest.param(
        ConfigCase(GOOD_YAML, ["shard.crf=99"], ["shard.crf: given 99", "less than or equal to 51"]),
        id="out-of-range",
    ),
    pytest.param(
        ConfigCase(GOOD_YAML, ["data.resolution=33"], ["data.resolution: given 33", "must be even"]),
        id="odd-resolution",
    ),
    pytest.param(
        ConfigCase(GOOD_YAML, ["data.resolution"], ["--set 'data.resolution'", "expected KEY=VALUE"]),
        id="set-without-value",
    ),
    pytest.param(
        ConfigCase(_edit("name: bad-input\n", ""), [], ["name: required key is missing", "add it"]),
        id="required-key-missing",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            ["data.root=s3://AKIAKEY:se/cret@bucket/ucf"],
            ["data.root: given a URI with credentials in it (not shown)", "AWS_SECRET_ACCESS_KEY"],
        ),
        id="credentials-in-a-storage-uri",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            ["data.root=file://lvdm-data/ucf"],
            ["data.root", "names a host ('lvdm-data')", "file:///absolute/path", "./lvdm-data/ucf"],
        ),
        id="file-uri-with-a-host",
    ),
    pytest.param(
        ConfigCase(None, [], ["nowhere.yaml does not exist", "default: pipelines/demo.yaml"], "nowhere.yaml"),
        id="no-such-pipeline-file",
    ),
    pytest.param(
        ConfigCase(
            None,
            [],
            ["ucf101.yaml", "data.root is required", "--set data.root=/path/to/ucf101"],
            str(PIPELINES / "ucf101.yaml"),
        ),
        id="dataset-root-not-set",
    ),
    # Cross-field: each would fail only inside a Ray worker (the discriminator's at disc_start).
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "autoencoder.model.fs=3"],
            ["fs=3", "must be a power of 2"],
        ),
        id="autoencoder-fs-3",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "autoencoder.model.norm_groups=7"],
            ["autoencoder.model", "norm_groups=7 does not divide", "pick norm_groups dividing"],
        ),
        id="autoencoder-norm-groups-7",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "data.resolution=18"],
            ["data.resolution=18 is not divisible by autoencoder.model.fs=4", "e.g. 16"],
        ),
        id="resolution-18-for-fs-4",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "data.frames=7"],
            ["data.frames=7 is not divisible by autoencoder.model.ft=2", "multiple of 2, e.g. 8"],
        ),
        id="frames-7-for-ft-2",
    ),
    pytest.param(
        ConfigCase(
            GOOD_YAML,
            [AE_STAGES, *TINY_AUTOENCODER, "autoencoder.loss.disc_layers=4"],
            ["autoencoder.loss.disc_layers=4 is too deep for data.resolution=32", "at least 48x48"],
        ),
        id="discriminator-too-deep",
    ),
]


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_bad_pipeline_file_exits_2_naming_file_key_and_fix_and_writes_nothing(case, tmp_path, capsys):
    if case.yaml is not None:
        pipeline = tmp_path / "p.yaml"
        pipeline.write_text(case.yaml)
    else:
        pipeline = Path(case.pipeline or DEMO)
    seen = run_lvdm(capsys, "run", str(pipeline), "--workdir", str(tmp_path / "w"), *set_args(case.sets))
    assert seen.code == 2, seen.text
    assert seen.err.startswith("error: ") and "Traceback" not in seen.text
    assert_names(seen.err, case.names)
    assert not (tmp_path / "w").exists(), "a refused file starts nothing"

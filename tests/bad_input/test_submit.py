"""Bad input, 2b. `lvdm submit`: the plan is checked here, before anything reaches the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input.common import DEMO, assert_names, closed_port, run_lvdm

SUBMIT_CASES = [
    pytest.param(
        ["--until", "shard; touch /tmp/lvdm-pwned"],
        ["--until 'shard; touch /tmp/lvdm-pwned': not a stage of this pipeline"],
        id="submit-until-not-a-stage",
    ),
    pytest.param(
        ["--set", "stages=[train_autoencoder]"],
        ["'train_autoencoder' needs 'shard', which the pipeline does not list", "add it to `stages`"],
        id="submit-stage-without-its-input",
    ),
]


@pytest.mark.parametrize(("args", "names"), SUBMIT_CASES)
def test_a_submission_whose_plan_fails_is_refused_before_reaching_the_cluster(args, names, tmp_path, capsys):
    # No dashboard answers at --address: a refusal that names the plan was made before any contact.
    address = f"http://127.0.0.1:{closed_port()}"
    seen = run_lvdm(capsys, "submit", DEMO, "--address", address, "--workdir", str(tmp_path / "w"), *args)
    assert seen.code == 1, seen.text
    assert "Traceback" not in seen.text and "dashboard" not in seen.text
    assert_names(seen.err, names)
    assert not (tmp_path / "w").exists() and not Path("/tmp/lvdm-pwned").exists()

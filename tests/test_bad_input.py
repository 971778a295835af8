"""One table of bad input: every mistake a user can make, what they see, and what is kept.

Each row drives `lvdm` the way a user does (`pipelines.cli.main` in-process, or the library
function the CLI calls where a file is read) and asserts two things: the message names the
problem (the file or the key) and the fix, and no good data is lost (complete stages, the
other videos, the checkpoint file and the weights cache stay as they were).

The rows live in `tests/bad_input/`, one module per group (README.md's table follows them):
1. the pipeline file and --set ................................. tests/bad_input/test_config.py
2. the dataset: missing, empty, every kind of broken video ...... tests/bad_input/test_data.py
2b. `lvdm submit`: the plan checked before the cluster .......... tests/bad_input/test_submit.py
3. storage, cluster, MLflow, locks, around a finished stage ..... tests/bad_input/test_workdir.py
4. checkpoints, 5. pretrained weights ........................... tests/bad_input/test_weights.py
What they share: tests/bad_input/common.py (driving `lvdm`) and conftest.py (the MLflow store).

Cheap by construction: config rows start nothing; dataset rows share one shard run; the rows
that need a finished stage copy one tiny workdir made once per module; all share the session's
Ray cluster and one MLflow store.

Run the whole table with `python -m pytest tests/bad_input` (or `python -m tests.test_bad_input`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    import pytest

    sys.exit(pytest.main([str(Path(__file__).with_name("bad_input")), *sys.argv[1:]]))

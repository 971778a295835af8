"""The bad-input table's one MLflow store, shared by every run of the package (its tables are
created once)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def mlflow_store(tmp_path_factory) -> str:
    """One embedded MLflow store for every run of the package: its tables are created once."""
    return f"mlflow.tracking_uri=sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"

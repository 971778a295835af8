"""Loading a file of weights from the workdir: never code, and an error that says what to do.

The workdir is shared storage, so anyone who can write to it can plant a file; `torch.load`
runs with `weights_only=True` and a refused pickle is reported as such, without torch's advice
to retry with `weights_only=False`. A truncated file, or weights that do not fit the config the
file records (a file copied in from another run), name the file and the fix.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch
from torch import nn

from data_prep import storage


def load_weights_file(path: storage.Location, fix: str) -> dict[str, Any]:
    """`torch.load(weights_only=True)` of `path`; `fix` ends the error ("rerun the X stage")."""
    try:
        return torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = next((line for line in str(err).splitlines() if "GLOBAL" in line), "").strip()
        raise ValueError(
            f"{path} holds pickled objects, which are never loaded (they could run code)"
            f"{f': {refused}' if refused else ''}; delete it and {fix}"
        ) from None
    except (RuntimeError, EOFError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} is unreadable (truncated?): {first}; delete it and {fix}") from None


def fill_weights(model: nn.Module, state_dict: dict, path: storage.Location, fix: str) -> None:
    """`model.load_state_dict(state_dict)`, naming the file when the weights do not fit."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise ValueError(
            f"{path}: its weights do not fit the config it records ({detail}); the file was changed or "
            f"copied from another run. Delete it and {fix}"
        ) from None

"""A trained diffusion UNet as one file: its EMA weights and the keyword arguments that built it.

Storing `UNet3D`'s kwargs beside the weights lets the next stage (prediction and
interpolation start from the unconditional model, sampling uses all three) rebuild exactly
the trained network. Loaded with `weights_only=True`: the workdir is shared storage.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from data_prep.atomic import write_bytes_atomic
from lvdm.unet import UNet3D

FILENAME = "unet.pt"


def save_unet(path: Path, kwargs: dict, state_dict: dict, step: int) -> None:
    payload = {
        "config": dict(kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "step": int(step),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def read_unet(path: Path) -> dict:
    """The file's payload (config, state_dict, step), without building the network."""
    if not path.is_file():
        raise FileNotFoundError(f"UNet file {path} does not exist; run the stage that trains it")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_unet(path: Path) -> tuple[UNet3D, dict]:
    """The network in eval mode with its EMA weights, and the file's metadata (config, step)."""
    payload = read_unet(path)
    model = UNet3D(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), {"config": payload["config"], "step": payload["step"]}

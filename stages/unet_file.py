"""A trained diffusion UNet as one file: its EMA weights and the keyword arguments that built it.

Storing `UNet3D`'s kwargs beside the weights lets the next stage (prediction and
interpolation start from the unconditional model, sampling uses all three) rebuild exactly
the trained network. Loaded with `weights_only=True`: the workdir is shared storage.
"""

from __future__ import annotations

import io

import torch

from data_prep import storage
from lvdm.unet import UNet3D
from stages.checkpoint_load import fill_weights, load_weights_file

FILENAME = "unet.pt"
RERUN = "rerun the stage that trained it (train_uncond, train_pred or train_interp)"


def save_unet(path: storage.Location, kwargs: dict, state_dict: dict, step: int) -> None:
    payload = {
        "config": dict(kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "step": int(step),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    storage.write_bytes(path, buffer.getvalue())


def read_unet(path: storage.Location) -> dict:
    """The file's payload (config, state_dict, step), without building the network."""
    if not storage.is_file(path):
        raise FileNotFoundError(f"UNet file {path} does not exist; run the stage that trains it")
    return load_weights_file(path, RERUN)


def load_unet(path: storage.Location) -> tuple[UNet3D, dict]:
    """The network in eval mode with its EMA weights, and the file's metadata (config, step)."""
    payload = read_unet(path)
    model = UNet3D(**payload["config"])
    fill_weights(model, payload["state_dict"], path, RERUN)
    return model.eval(), {"config": payload["config"], "step": payload["step"]}

"""The trained autoencoder as one file: weights, architecture and latent normalisation.

Storing the architecture and the data-derived scale/shift beside the weights means every
later stage (latent cache, diffusion, sampling) rebuilds exactly the codec that was trained,
instead of the hard-coded per-dataset numbers of the official release.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import torch

from data_prep.atomic import write_bytes_atomic
from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder

FILENAME = "autoencoder.pt"


def save_autoencoder(path: Path, model: VideoAutoencoder, scale: float, shift: float, step: int) -> None:
    payload = {
        "config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "scale": float(scale),
        "shift": float(shift),
        "step": int(step),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_autoencoder(path: Path) -> tuple[VideoAutoencoder, dict]:
    """The model in eval mode, and the file's metadata (scale, shift, step, config)."""
    if not path.is_file():
        raise FileNotFoundError(f"autoencoder file {path} does not exist; run the train_autoencoder stage")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    config = payload["config"]
    if config.get("channel_multipliers") is not None:
        config["channel_multipliers"] = tuple(config["channel_multipliers"])
    model = VideoAutoencoder(AutoencoderConfig(**config))
    model.load_state_dict(payload["state_dict"])
    meta = {k: payload[k] for k in ("scale", "shift", "step", "config")}
    return model.eval(), meta


"""The trained autoencoder as one file: weights, architecture and latent normalisation.

Storing the architecture and the data-derived scale/shift beside the weights means every
later stage (latent cache, diffusion, sampling) rebuilds exactly the codec that was trained,
instead of the hard-coded per-dataset numbers of the official release.
"""

from __future__ import annotations

import dataclasses
import io

import torch

from data_prep import storage
from lvdm.autoencoder import (
    QUANT_CONVS,
    AutoencoderConfig,
    Normalisation,
    VideoAutoencoder,
    identity_quant_convs,
)
from stages.checkpoint_load import fill_weights, load_weights_file

FILENAME = "autoencoder.pt"
RERUN = "rerun the train_autoencoder stage"


def save_autoencoder(
    path: storage.Location,
    model: VideoAutoencoder,
    scale: Normalisation,
    shift: Normalisation,
    step: int,
) -> None:
    payload = {
        "config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "scale": _plain(scale),
        "shift": _plain(shift),
        "step": int(step),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    storage.write_bytes(path, buffer.getvalue())


def _plain(value: Normalisation) -> Normalisation:
    """A float, or one float per latent channel (`latent_normalisation(per_channel=True)`)."""
    return float(value) if isinstance(value, int | float) else [float(v) for v in value]


def load_autoencoder(path: storage.Location) -> tuple[VideoAutoencoder, dict]:
    """The model in eval mode, and the file's metadata (scale, shift, step, config)."""
    if not storage.is_file(path):
        raise FileNotFoundError(f"autoencoder file {path} does not exist; run the train_autoencoder stage")
    payload = load_weights_file(path, RERUN)
    config = payload["config"]
    if config.get("channel_multipliers") is not None:
        config["channel_multipliers"] = tuple(config["channel_multipliers"])
    model = VideoAutoencoder(AutoencoderConfig(**config))
    state_dict = payload["state_dict"]
    if not any(key.startswith(QUANT_CONVS) for key in state_dict):
        # Written before the release's 1x1x1 quant convs were part of the layout: identity ones
        # compute exactly what the file was trained to.
        state_dict = {**state_dict, **identity_quant_convs(model)}
    fill_weights(model, state_dict, path, RERUN)
    meta = {k: payload[k] for k in ("scale", "shift", "step", "config")}
    return model.eval(), meta

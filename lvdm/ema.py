"""Exponential moving average of a network's weights: the copy diffusion samples with.

Paper §4.1 / the official configs: decay 0.9999, with latent diffusion's warm-up
`decay_n = min(decay, (1 + n) / (10 + n))` so a short run's average is not dominated by the
random initialisation (at 0.9999 that would take ~10k steps to wash out). Sampling always
uses this copy — the official unconditional sampler forgets to, and samples with the raw
weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s parameters; buffers are copied as they are."""
        self.num_updates += 1
        decay = self.current_decay()
        source = dict(model.named_parameters())
        for name, average in self.model.named_parameters():
            average.lerp_(source[name].detach().to(average.dtype), 1.0 - decay)
        buffers = dict(model.named_buffers())
        for name, buffer in self.model.named_buffers():
            buffer.copy_(buffers[name])

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])

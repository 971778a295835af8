"""A random generator whose state travels in a training checkpoint.

Both trainers draw every random number of a step (posterior samples; timesteps, noise, masks,
perturbation levels) from one generator owned by the trainer, so a run resumed from its
state dict continues bit for bit. The generator is made on the batch's device at first use
(CUDA draws need a CUDA generator) and seeded, or set to the checkpointed state.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ResumableGenerator:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._state: Tensor | None = None

    def on(self, device: torch.device) -> torch.Generator:
        """The generator on `device`, continuing from the restored state if there is one."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            if self._state is not None:
                self._generator.set_state(self._state.cpu())
            else:
                self._generator.manual_seed(self.seed)
        return self._generator

    def state(self) -> Tensor | None:
        return self._generator.get_state() if self._generator is not None else self._state

    def load(self, state: Tensor | None) -> None:
        self._generator, self._state = None, state

"""The bare network inside a data-parallel wrapper: what trainers save, average and sample with."""

from __future__ import annotations

from torch import nn


def unwrap(module: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel (or DataParallel); else itself."""
    return (
        module.module if isinstance(module, nn.parallel.DistributedDataParallel | nn.DataParallel) else module
    )

"""Model-FLOP utilisation (MFU): how much of the accelerator's peak a training step uses.

FLOPs are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` sees every
matmul, convolution and SDPA call of a real step (forward and backward), at the shapes it
ran with. Recomputation under gradient checkpointing is counted too when it happens in the
counted step, so count with checkpointing off for the model FLOPs (the PaLM definition).

Peaks are the vendors' dense (no 2:4 sparsity) figures, looked up by the name CUDA reports:
bf16/fp16 on the tensor cores for autocast steps, plain fp32 (not TF32) for fp32 steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")

# (pattern on torch.cuda.get_device_name, card, bf16/fp16 dense TFLOP/s, fp32 TFLOP/s); first match wins.
PEAK_TFLOPS: tuple[tuple[str, str, float, float], ...] = (
    (r"GH200", "GH200 (H100 SXM compute)", 989.4, 66.9),
    (r"H200 NVL", "H200 NVL", 835.5, 60.0),
    (r"H200", "H200 SXM", 989.4, 66.9),
    (r"H100.*PCIe", "H100 PCIe", 756.5, 51.2),
    (r"H100 NVL", "H100 NVL", 835.5, 60.0),
    (r"H100", "H100 SXM", 989.4, 66.9),
    (r"H800.*PCIe", "H800 PCIe", 756.5, 51.2),
    (r"H800", "H800 SXM", 989.4, 66.9),
    (r"A100|A800", "A100", 312.0, 19.5),
    (r"L40S", "L40S", 362.1, 91.6),
    (r"L40", "L40", 181.0, 90.5),
    (r"\bL4\b", "L4", 121.0, 30.3),
    (r"A10G", "A10G", 70.0, 31.2),
    (r"\bA10\b", "A10", 125.0, 31.2),
    (r"V100", "V100 (fp16; no native bf16)", 125.0, 15.7),
    (r"\bT4\b", "T4 (fp16; no native bf16)", 65.0, 8.1),
)


def peak_flops(device_name: str, dtype: torch.dtype | None) -> tuple[str, float] | None:
    """(card, peak FLOP/s) for autocast `dtype` (None = fp32) on the CUDA device named
    `device_name`, or None for a device not in `PEAK_TFLOPS` (any CPU)."""
    for pattern, card, half, single in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            tflops = single if dtype in (None, torch.float32) else half
            return card, tflops * 1e12
    return None


def device_peak(device: torch.device, dtype: torch.dtype | None) -> tuple[str, float] | None:
    """`peak_flops` of a torch device; None on CPU, where no table entry applies."""
    if device.type != "cuda":
        return None
    return peak_flops(torch.cuda.get_device_name(device), dtype)


def count_flops(fn: Callable[[], T]) -> tuple[T, int]:
    """Run `fn` once under FlopCounterMode: its result and the FLOPs it executed."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, counter.get_total_flops()


def mfu(flops_per_step: float, seconds_per_step: float, peak: float) -> float:
    """Model FLOPs per second over the peak (per device: give one device's flops and peak)."""
    return flops_per_step / seconds_per_step / peak

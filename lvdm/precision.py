"""Which autocast dtype a device should train and encode in.

`auto` means bf16 wherever the hardware computes it natively and fp32 elsewhere. On GPUs that
is any CUDA device with bf16 support; on CPUs it is the ones with AMX tiles or AVX512-BF16,
where oneDNN runs bf16 convolutions and matmuls natively (the paper autoencoder's training
step is about 2.8x faster there). On other CPUs bf16 autocast is emulated and slower than
fp32, so `auto` keeps fp32. fp16 needs a gradient scaler and only pays off on GPUs.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def cpu_has_native_bf16() -> bool:
    """AMX tiles or AVX512-BF16 (x86), the instructions oneDNN's bf16 kernels use."""
    if torch.cpu._is_amx_tile_supported():
        return True
    capability = torch.backends.cpu.get_cpu_capability()  # e.g. "AVX512", "AVX2", "DEFAULT"
    return capability == "AVX512" and torch.cpu._is_avx512_bf16_supported()


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means plain fp32.

    An explicit `bf16` is honoured on any device (slow but correct where emulated); `fp16`
    on a CPU is refused, because CPU autocast has no fp16 gradient scaling story.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError(f"precision=fp16 needs a CUDA device, got {device}; use auto, bf16 or fp32")
        return torch.float16
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        return None
    raise ValueError(f"precision={precision!r}: use one of auto, fp32, bf16, fp16")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """`torch.autocast` for `dtype`, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)

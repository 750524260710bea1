"""The number type of the convolutions in the no-grad passes (RateBP's spike stage, inference).

Spikes are exactly 0 or 1, so a convolution on spikes loses nothing on its input in bfloat16; only
its products are summed in bfloat16 (8 significant bits), which moves a membrane near the
threshold now and then. Where the hardware runs bfloat16 natively (CUDA with bf16, CPUs with
AVX512-BF16 or AMX) such a convolution is about twice as fast with bf16 weights; elsewhere it is
emulated and many times slower (measured 20× on an AVX2 CPU). So the spike stage may run its
convolutions on spikes in bfloat16 — weights cast once per optimiser step, not per call — while
membranes, eligibilities, rates and BatchNorm statistics stay float32, and the rate stage and
BPTT run as configured.

``use_spike_dtype(torch.bfloat16)`` (or ``"bf16"``, ``"float32"``) sets it for the passes
started inside. The default is float32 on every device (exact: RateBP at T = 1 equals BPTT, the
same seed gives the same spikes everywhere); bfloat16 is an explicit choice for speed, and
``"auto"`` is bfloat16 exactly where :func:`native_bf16` says the device runs it natively.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Literal, Optional, Union

import torch

SpikeDtype = Union[torch.dtype, Literal["float32", "bf16", "auto"], None]
_NAMES = {"float32": None, "fp32": None, "none": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
_current: ContextVar[SpikeDtype] = ContextVar("esdsnn_spike_dtype", default=None)  # None: float32


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively (not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        return "AVX512" in capability and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def _check(dtype: SpikeDtype) -> SpikeDtype:
    if isinstance(dtype, str):
        if dtype != "auto" and dtype not in _NAMES:
            raise ValueError(f"spike dtype must be float32, bf16 or auto, got {dtype!r}")
        return dtype if dtype == "auto" else _NAMES[dtype]
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise ValueError(f"spike dtype must be float32 or bfloat16, got {dtype}")
    return None if dtype == torch.float32 else dtype


@contextmanager
def use_spike_dtype(dtype: SpikeDtype) -> Iterator[None]:
    """Run the spike-stage and inference convolutions on spikes in ``dtype`` inside the block."""
    token = _current.set(_check(dtype))
    try:
        yield
    finally:
        _current.reset(token)


def spike_dtype_for(device: torch.device | str) -> Optional[torch.dtype]:
    """The setting in force for a pass on ``device``: ``None`` (float32) or ``torch.bfloat16``."""
    dtype = _current.get()
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    return dtype  # type: ignore[return-value]


__all__ = ["native_bf16", "spike_dtype_for", "use_spike_dtype"]

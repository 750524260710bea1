"""Number types: one precision setting for training and evaluation, and the spike stage's type.

``precision`` names what the ecosystem calls it (Lightning's ``precision=``):

- ``"32"`` (default): float32 everywhere, on every device. Exact: RateBP at T = 1 equals BPTT,
  the same seed gives the same spikes on any CPU or GPU, converted SpikingJelly models equal
  SpikingJelly.
- ``"bf16-mixed"``: a bfloat16 autocast around the training passes (BPTT, the rate stage, the
  branches) and bfloat16 convolutions on spikes in the no-grad passes (RateBP's spike stage,
  evaluation), with weights cast once per optimiser step. Spikes are exactly 0 or 1, so such a
  convolution loses nothing on its input; only its products are summed in bfloat16 (8
  significant bits), which moves a membrane near the threshold now and then. Membranes,
  eligibilities, rates and BatchNorm statistics stay float32. Fast only where the device runs
  bfloat16 natively (:func:`native_bf16`: CUDA with bf16, CPUs with AVX512-BF16 or AMX);
  emulated elsewhere and many times slower (measured 20× on an AVX2 CPU).
- ``"16-mixed"``: a float16 autocast with a gradient scaler (CUDA only).

An SNN step at initialisation is chaotic (a 1e-6 relative change of an input flips about 15 % of
the rates), so any lower precision changes the run: only accuracy measured over seeds can justify
it (docs/performance.md). :func:`use_spike_dtype` is the lower-level switch of the spike stage's
convolutions alone, for experiments from Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, Optional, Union

import torch

Precision = Literal["32", "bf16-mixed", "16-mixed"]


@dataclass(frozen=True)
class PrecisionSpec:
    """What one precision setting switches on together."""

    autocast: Optional[torch.dtype]  # the autocast type of the training passes (None: off)
    spike_dtype: Optional[torch.dtype]  # the no-grad passes' convolutions on spikes (None: float32)
    grad_scaler: bool  # float16 gradients need scaling; bfloat16 ones have float32's range


PRECISIONS: dict[str, PrecisionSpec] = {
    "32": PrecisionSpec(None, None, False),
    "bf16-mixed": PrecisionSpec(torch.bfloat16, torch.bfloat16, False),
    "16-mixed": PrecisionSpec(torch.float16, None, True),  # fp16 convolutions come from the autocast
}

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


def precision_spec(precision: str) -> PrecisionSpec:
    """The parts of a precision setting; a ValueError names the choices."""
    try:
        return PRECISIONS[str(precision)]
    except KeyError:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}") from None


def precision_native(precision: str, device: torch.device | str) -> bool:
    """Whether ``device`` runs ``precision`` natively (float32 always; bfloat16 where
    :func:`native_bf16`; float16 on CUDA)."""
    spec = precision_spec(precision)
    if spec.autocast is None:
        return True
    if spec.autocast == torch.bfloat16:
        return native_bf16(device)
    return torch.device(device).type == "cuda"


def cpu_capability() -> str:
    """The CPU's vector capability as torch sees it (``AVX2``, ``AVX512``, ...), with ``+BF16``
    where oneDNN runs bfloat16 natively and ``+AMX`` where the CPU has AMX tiles: what every
    figure names beside it."""
    capability = torch.backends.cpu.get_cpu_capability()
    extras = []
    if native_bf16("cpu"):
        extras.append("BF16")
    try:
        flags = open("/proc/cpuinfo").read()
        if " amx_bf16" in flags:
            extras.append("AMX")
    except OSError:
        pass
    return "+".join([capability, *extras])


@contextmanager
def autocast_for(precision: str, device: torch.device | str) -> Iterator[None]:
    """The autocast of ``precision`` on ``device`` (a no-op for ``"32"``)."""
    spec = precision_spec(precision)
    with torch.autocast(torch.device(device).type, dtype=spec.autocast, enabled=spec.autocast is not None):
        yield


@contextmanager
def use_precision(precision: str) -> Iterator[None]:
    """The number types of ``precision`` for the passes started inside: the spike stage's type,
    and under ``"32"`` no TensorFloat-32 on CUDA (cuDNN allows it by default, which rounds
    float32 convolution inputs to 10 mantissa bits on Ampere and later GPUs). The autocast of the
    training passes is :func:`autocast_for`, around the step."""
    spec = precision_spec(precision)
    backends = torch.backends
    saved = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
    if spec.autocast is None:
        backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = False
    try:
        with use_spike_dtype(spec.spike_dtype):
            yield
    finally:
        backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved


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
    """Run the spike-stage and inference convolutions on spikes in ``dtype`` inside the block
    (``"auto"``: bfloat16 where :func:`native_bf16`, else float32)."""
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
    return dtype  # type: ignore[return-value]  # not "auto" (returned above): == does not narrow the Literal


__all__ = [
    "PRECISIONS",
    "Precision",
    "PrecisionSpec",
    "autocast_for",
    "cpu_capability",
    "native_bf16",
    "precision_native",
    "precision_spec",
    "spike_dtype_for",
    "use_precision",
    "use_spike_dtype",
]

"""Turn a batch into what each pass feeds the model."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..runtime.static import StaticSteps


def spike_input(x: Tensor, T: int) -> Tensor:
    """Folded ``[T·B, ...]`` input of a T-step pass.

    Static images ``[B, C, H, W]`` are direct-encoded (the same image at every step); event data
    ``[T, B, C, H, W]`` must bring exactly T frames; a one-step pass (T = 1, e.g. the ANN twin)
    takes their mean frame.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if x.dim() == 5:
        if T == 1:
            return x.mean(0)
        if x.shape[0] != T:
            raise ValueError(f"event input has {x.shape[0]} frames but T={T}: convert the data with T={T}")
        return x.flatten(0, 1)
    if x.dim() != 4:
        raise ValueError(f"expected input [B, C, H, W] or [T, B, C, H, W], got shape {tuple(x.shape)}")
    return x.unsqueeze(0).expand(T, *x.shape).reshape(T * x.shape[0], *x.shape[1:])


def rate_input(x: Tensor) -> Tensor:
    """Time-averaged input of the rate stage: the image itself, or the mean event frame."""
    return x.mean(0) if x.dim() == 5 else x


def static_spike_input(x: Tensor, T: int, enabled: bool = True) -> tuple[Tensor, Optional[StaticSteps]]:
    """:func:`spike_input` and, for a static image at T > 1 (``enabled``), the record that its T
    steps repeat ``x`` (so the first layers compute on one copy)."""
    folded = spike_input(x, T)
    if not enabled or T == 1 or x.dim() != 4:
        return folded, None
    static = StaticSteps(T)
    static.mark(folded, x)
    return folded, static

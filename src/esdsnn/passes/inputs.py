"""Turn a batch into what each pass feeds the model."""
from __future__ import annotations

from torch import Tensor


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

"""Spikes held in one byte a value, read as floats by every consumer.

Spikes are exactly 0 or 1, so in the no-grad passes (inference, RateBP's spike stage) a neuron
can store them as uint8, a quarter of float32's bytes: a residual block holding its input over
all T steps for the shortcut then costs 1 byte a value. :class:`PackedSpikes` makes that the
neuron's business alone. It behaves as a float tensor of its ``float_dtype``: views (reshape,
chunk, indexing, ...) stay packed, and any other operation — pooling, a linear layer, a sum, a
user's own layer — sees the floats it would have seen without packing. The layers that can do
better read the bytes themselves through :meth:`PackedSpikes.packed`: :class:`~esdsnn.layers.Conv2d`
casts one time step at a time, :func:`~esdsnn.layers.add_residual` adds the bytes directly.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

_T = torch.Tensor
# Metadata that needs no conversion.
_METADATA: set[Callable] = {
    _T.dim, _T.size, _T.numel, _T.__len__, _T.stride, _T.is_contiguous, _T.data_ptr,
    _T.shape.__get__, _T.ndim.__get__, _T.device.__get__, _T.is_cuda.__get__,
    _T.requires_grad.__get__, _T.layout.__get__,
}
# Views and copies that keep spikes packed.
_VIEWS: set[Callable] = {
    _T.view, _T.reshape, _T.flatten, _T.unflatten, _T.chunk, _T.split, _T.unbind, _T.__getitem__,
    _T.narrow, _T.select, _T.permute, _T.transpose, _T.movedim, _T.contiguous, _T.squeeze,
    _T.unsqueeze, _T.expand, _T.detach, _T.clone,
    torch.flatten, torch.reshape, torch.chunk, torch.split, torch.unbind, torch.narrow,
    torch.select, torch.permute, torch.transpose, torch.movedim, torch.squeeze, torch.unsqueeze,
    torch.detach, torch.clone,
}


class PackedSpikes(torch.Tensor):
    """0/1 spikes stored as uint8 that every operation reads as ``float_dtype`` values."""

    float_dtype: torch.dtype

    @staticmethod
    def __new__(cls, packed: Tensor, float_dtype: torch.dtype) -> "PackedSpikes":
        if packed.dtype != torch.uint8:
            raise TypeError(f"PackedSpikes holds uint8 spikes, got {packed.dtype}")
        out = packed.as_subclass(cls)
        out.float_dtype = float_dtype
        return out

    @property
    def packed(self) -> Tensor:
        """The uint8 spikes themselves (a plain tensor sharing the storage)."""
        return self.as_subclass(torch.Tensor)

    def unpack(self) -> Tensor:
        """The spikes as a new ``float_dtype`` tensor."""
        return self.packed.to(self.float_dtype)

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is _T.dtype.__get__:
            return args[0].float_dtype
        if func is _T.is_floating_point:
            return True
        if func in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func in _VIEWS:
            float_dtype = next(a.float_dtype for a in args if isinstance(a, PackedSpikes))
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return tree_map(lambda t: PackedSpikes(t, float_dtype) if isinstance(t, Tensor) else t, out)
        args, kwargs = tree_map(lambda a: a.unpack() if isinstance(a, PackedSpikes) else a, (args, kwargs))
        return func(*args, **kwargs)

    def __repr__(self) -> str:  # type: ignore[override]
        return f"PackedSpikes({self.unpack()!r})"


def pack_spikes(spikes: Tensor, float_dtype: torch.dtype) -> PackedSpikes:
    """Wrap uint8 0/1 ``spikes`` as :class:`PackedSpikes` read as ``float_dtype``."""
    return PackedSpikes(spikes, float_dtype)


def unpack_spikes(x: Tensor) -> Tensor:
    """``x`` as a plain tensor: packed spikes become floats, anything else is returned as is."""
    return x.unpack() if isinstance(x, PackedSpikes) else x


__all__ = ["PackedSpikes", "pack_spikes", "unpack_spikes"]

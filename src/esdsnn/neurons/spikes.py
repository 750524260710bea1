"""Spikes held in one byte a value, read as floats by every consumer.

Spikes are exactly 0 or 1, so in the no-grad passes (inference, RateBP's spike stage) a neuron
can store them as uint8, a quarter of float32's bytes: a residual block holding its input over
all T steps for the shortcut then costs 1 byte a value. :class:`PackedSpikes` makes that the
neuron's business alone. It behaves as a float tensor of its ``float_dtype``: views (reshape,
chunk, indexing, ...) stay packed, and any other operation — pooling, a linear layer, a sum, a
user's own layer — sees the floats it would have seen without packing. The layers that can do
better read the bytes themselves through :meth:`PackedSpikes.packed`: :class:`~esdsnn.layers.Conv2d`
casts one time step at a time, :func:`~esdsnn.layers.add_residual` adds the bytes directly.

Writes in place (``x[:, 0] = 0``, ``x.mul_(mask)``, ``x += y``, ``F.relu(x, inplace=True)``, an
``out=`` argument) land in the bytes, as they would in a float tensor and its views, when every
written value is 0 or 1; any other value raises :class:`~esdsnn.errors.SpikeWriteError` naming
the fix (a float copy, ``x = x.float()``), never a silently lost write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from ..errors import SpikeWriteError

_T = torch.Tensor
# The same class for its properties: the stubs type ``Tensor.shape`` and the like as their values
# (``Size``, ``dtype``, ...); on the class each is a descriptor, whose ``__get__`` is the function
# ``__torch_function__`` receives for reading the attribute.
_P: Any = torch.Tensor
# Metadata that needs no conversion.
_METADATA: set[Callable] = {
    _T.dim,
    _T.size,
    _T.numel,
    _T.__len__,
    _T.stride,
    _T.is_contiguous,
    _T.data_ptr,
    _P.shape.__get__,
    _P.ndim.__get__,
    _P.device.__get__,
    _P.is_cuda.__get__,
    _P.requires_grad.__get__,
    _P.layout.__get__,
}
# Views and copies that keep spikes packed.
_VIEWS: set[Callable] = {
    _T.view,
    _T.reshape,
    _T.flatten,
    _T.unflatten,
    _T.chunk,
    _T.split,
    _T.unbind,
    _T.__getitem__,
    _T.narrow,
    _T.select,
    _T.permute,
    _T.transpose,
    _T.movedim,
    _T.contiguous,
    _T.squeeze,
    _T.unsqueeze,
    _T.expand,
    _T.detach,
    _T.clone,
    _T.view_as,
    _T.reshape_as,
    _T.expand_as,
    _T.t,
    _T.swapaxes,
    _T.swapdims,
    _T.as_strided,
    _T.unfold,
    _T.diagonal,
    _P.T.__get__,
    _P.mT.__get__,
    _P.data.__get__,
    torch.flatten,
    torch.reshape,
    torch.chunk,
    torch.split,
    torch.unbind,
    torch.narrow,
    torch.select,
    torch.permute,
    torch.transpose,
    torch.movedim,
    torch.squeeze,
    torch.unsqueeze,
    torch.detach,
    torch.clone,
    torch.t,
    torch.swapaxes,
    torch.swapdims,
    torch.as_strided,
    torch.diagonal,
}
# In-place ops that change only how the bytes are viewed.
_VIEWS_IN_PLACE: set[Callable] = {
    _T.squeeze_,
    _T.unsqueeze_,
    _T.t_,
    _T.transpose_,
    _T.swapdims_,
    _T.swapaxes_,
    _T.as_strided_,
    _T.detach_,
    _T.requires_grad_,
}
# Augmented assignments (``x += y`` reaches ``__torch_function__`` as ``add_``; these in case not).
_IN_PLACE_DUNDERS = {
    "__setitem__",
    "__iadd__",
    "__isub__",
    "__imul__",
    "__itruediv__",
    "__ifloordiv__",
    "__imod__",
    "__ipow__",
    "__iand__",
    "__ior__",
    "__ixor__",
    "__ilshift__",
    "__irshift__",
}


class PackedSpikes(torch.Tensor):
    """0/1 spikes stored as uint8 that every operation reads as ``float_dtype`` values."""

    float_dtype: torch.dtype

    @staticmethod
    def __new__(cls, packed: Tensor, float_dtype: torch.dtype) -> PackedSpikes:
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
        if func == _P.dtype.__get__:  # (a method-wrapper: a new object at each access, so ==, not is)
            return args[0].float_dtype
        if func is _T.is_floating_point:
            return True
        if func in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if (func in _VIEWS or func in _VIEWS_IN_PLACE) and args and isinstance(args[0], PackedSpikes):
            float_dtype = args[0].float_dtype
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            if func in _VIEWS_IN_PLACE:
                return args[0]
            return tree_map(lambda t: PackedSpikes(t, float_dtype) if isinstance(t, Tensor) else t, out)
        targets = _written(func, args, kwargs)
        if targets:
            return _write_in_place(func, targets, args, kwargs)
        args, kwargs = tree_map(lambda a: a.unpack() if isinstance(a, PackedSpikes) else a, (args, kwargs))
        return func(*args, **kwargs)

    def __repr__(self) -> str:  # type: ignore[override]  # Tensor's takes tensor_contents=, never passed here
        return f"PackedSpikes({self.unpack()!r})"


def _written(func: Callable, args: tuple, kwargs: dict) -> list[PackedSpikes]:
    """The packed spikes ``func`` writes into: the target of an in-place op (``add_``,
    ``x[i] = v``, ``F.relu(x, inplace=True)``) and any ``out=`` tensor; reading them is no write."""
    out = kwargs.get("out")
    targets = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, PackedSpikes)]
    name = getattr(func, "__name__", "")
    in_place = (
        name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.endswith("__")) or kwargs.get("inplace") is True
    )
    if in_place and args and isinstance(args[0], PackedSpikes) and all(args[0] is not t for t in targets):
        targets.insert(0, args[0])
    return targets


def _write_in_place(func: Callable, targets: list[PackedSpikes], args: tuple, kwargs: dict) -> Any:
    """Run ``func`` on float copies of its packed arguments, then store the written copies in the
    targets' bytes, after checking that every target receives only 0 and 1 (nothing is written
    otherwise). Returns what ``func`` returns, with each written copy replaced by its target."""
    copies = {id(t): t.unpack() for t in targets}
    float_args, float_kwargs = tree_map(
        lambda a: (copies[id(a)] if id(a) in copies else a.unpack()) if isinstance(a, PackedSpikes) else a,
        (args, kwargs),
    )
    result = func(*float_args, **float_kwargs)
    for target in targets:
        values = copies[id(target)]
        if values.shape != target.shape or not values.eq(0).logical_or_(values.eq(1)).all():
            name = getattr(func, "__name__", repr(func))
            op = (
                "x[...] = value"
                if name == "__setitem__"
                else f"{name}(..., out=x)"
                if not args or target is not args[0]
                else f"{name}(x, inplace=True)"
                if kwargs.get("inplace") is True
                else f"x.{name}(...)"
            )
            raise SpikeWriteError(
                f"in-place {op} on a LIF layer's output writes values other than 0 and 1, which its packed "
                "spikes (1 byte a value, in inference and RateBP's spike stage) cannot hold; write into a float "
                "copy instead: x = x.float() before the in-place op (x.clone() stays packed)"
            )
    for target in targets:
        target.packed.copy_(copies[id(target)])
    written = {id(copies[id(t)]): t for t in targets}
    return tree_map(lambda r: written.get(id(r), r) if isinstance(r, Tensor) else r, result)


def pack_spikes(spikes: Tensor, float_dtype: torch.dtype) -> PackedSpikes:
    """Wrap uint8 0/1 ``spikes`` as :class:`PackedSpikes` read as ``float_dtype``."""
    return PackedSpikes(spikes, float_dtype)


def unpack_spikes(x: Tensor) -> Tensor:
    """``x`` as a plain tensor: packed spikes become floats, anything else is returned as is."""
    return x.unpack() if isinstance(x, PackedSpikes) else x


__all__ = ["PackedSpikes", "pack_spikes", "unpack_spikes"]

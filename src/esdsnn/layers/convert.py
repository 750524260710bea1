"""Making a user's model safe for RateBP: the layers whose plain torch version would silently give
RateBP another network's gradients are replaced by their rate-aware twins, with their state.

- ``nn.BatchNorm1d/2d``: in the rate stage a plain BatchNorm normalises the rates with their own
  statistics instead of the spike stage's; :class:`RateBatchNorm1d`/``2d`` take over its
  parameters and running statistics.
- ``nn.Dropout``: a plain dropout draws another mask in each stage; :class:`~esdsnn.layers.Dropout`
  records one and reuses it.

Layers that cannot be converted (other norms that keep batch statistics, other dropouts) are
refused by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError
from .dropout import Dropout
from .rate_norm import RateBatchNorm1d, RateBatchNorm2d

_UNSUPPORTED = (
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


def _rate_norm(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    cls = RateBatchNorm1d if isinstance(bn, nn.BatchNorm1d) else RateBatchNorm2d
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.load_state_dict(bn.state_dict())
    state = list(bn.state_dict().values())
    return new.to(state[0].device if state else "cpu").train(bn.training)


# each conversion takes a module of its key's type (which a dict's type cannot say: Any)
_CONVERSIONS: dict[type, Callable[[Any], nn.Module]] = {
    nn.BatchNorm1d: _rate_norm,
    nn.BatchNorm2d: _rate_norm,
    nn.Dropout: lambda m: Dropout(m.p),
}


def rate_safe_(model: nn.Module) -> list[str]:
    """Convert, in place, the layers of ``model`` that RateBP cannot train as they are; returns
    one ``"name: Plain -> RateAware"`` line per conversion. Raises :class:`ConfigError` naming a
    layer that cannot be converted."""
    for name, module in model.named_modules():
        if type(module) in _UNSUPPORTED:
            raise ConfigError(
                f"layer {name} ({type(module).__name__}) cannot be trained by RateBP (it would see other "
                f"statistics or masks in the rate stage than in the spike stage); use esdsnn.layers' "
                f"BatchNorm2d/BatchNorm1d/Dropout, or a BPTT-based method"
            )
    done: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            convert = _CONVERSIONS.get(type(child))
            if convert is None:
                continue
            new = convert(child)
            setattr(parent, name, new)
            full = f"{parent_name}.{name}" if parent_name else name
            done.append(f"{full}: {type(child).__name__} -> {type(new).__name__}")
    return done


__all__ = ["rate_safe_"]

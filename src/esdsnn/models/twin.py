"""The ReLU twin of a spiking model: the same layers with ReLU for every LIF, and no time."""

from __future__ import annotations

from torch import nn

from ..neurons.lif import LIF


def to_relu_twin_(model: nn.Module) -> nn.Module:
    """Replace every LIF of ``model`` by ``nn.ReLU`` in place and return the model.

    The twin keeps every other layer (and so the state-dict keys of convs, BNs and linears), runs
    with one step, and is the ANN teacher of ANN-to-SNN distillation (``--method ann``).
    """
    for name, child in list(model.named_children()):
        if isinstance(child, LIF):
            setattr(model, name, nn.ReLU())
        else:
            to_relu_twin_(child)
    return model


def is_relu_twin(model: nn.Module) -> bool:
    return not any(isinstance(m, LIF) for m in model.modules())

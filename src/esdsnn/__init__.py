"""esdsnn: train spiking neural networks with rate-based backpropagation and enhanced self-distillation.

Quick use::

    import esdsnn
    model = esdsnn.create_model("resnet18", num_classes=10, in_channels=3)
    method = esdsnn.create_method("esd", model, T=6)
    out = method(x, y); out.loss.backward()
    logits = esdsnn.predict(model, x, T=6)
"""

from __future__ import annotations

from torch import Tensor, nn

from . import layers
from .errors import CheckpointError, ConfigError, DataError, EsdsnnError, TrainingDiverged
from .interop.spikingjelly import from_spikingjelly
from .methods import MethodOutput, TrainingMethod, create_method, list_methods
from .models import create_model, list_models
from .passes.spike import run_spike

__version__ = "0.2.0"


def export_nir(model: nn.Module, input_shape):
    """The NIR graph of a hard-reset model (see :mod:`esdsnn.interop.nir`; needs the nir package)."""
    from .interop.nir import export_nir as export

    return export(model, input_shape)


def predict(model: nn.Module, x: Tensor, T: int) -> Tensor:
    """Logits ``[B, K]`` of the spike pass (no grad, BN running statistics), main head only.

    ``x`` is ``[B, C, H, W]`` (direct encoding) or ``[T, B, C, H, W]`` (events). The model is put
    in eval mode for the call and restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        return run_spike(model, x, T)
    finally:
        model.train(was_training)


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EsdsnnError",
    "MethodOutput",
    "TrainingDiverged",
    "TrainingMethod",
    "__version__",
    "create_method",
    "create_model",
    "export_nir",
    "from_spikingjelly",
    "layers",
    "list_methods",
    "list_models",
    "predict",
]

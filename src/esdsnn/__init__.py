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

from .errors import CheckpointError, ConfigError, DataError, EsdsnnError, TrainingDiverged
from .methods import MethodOutput, TrainingMethod, create_method, list_methods
from .models import create_model, list_models
from .passes.spike import run_spike

__version__ = "0.1.0"


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
    "CheckpointError", "ConfigError", "DataError", "EsdsnnError", "MethodOutput", "TrainingDiverged",
    "TrainingMethod", "create_method", "create_model", "list_methods", "list_models", "predict", "__version__",
]

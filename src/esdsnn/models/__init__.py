"""Spiking models, registered by name."""

from . import preact_resnet, resnet, vgg  # noqa: F401  (registers the models)
from .base import SpikingNet
from .registry import create_model, list_models, register_model
from .twin import is_relu_twin, to_relu_twin_

__all__ = ["SpikingNet", "create_model", "is_relu_twin", "list_models", "register_model", "to_relu_twin_"]

"""Spiking models, registered by name."""
from . import resnet  # noqa: F401  (registers the ResNets)
from .base import SpikingNet
from .registry import create_model, list_models, register_model

__all__ = ["SpikingNet", "create_model", "list_models", "register_model"]

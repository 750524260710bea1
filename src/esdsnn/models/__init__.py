"""Spiking models, registered by name."""
from . import preact_resnet, resnet, vgg  # noqa: F401  (registers the models)
from .base import SpikingNet
from .registry import create_model, list_models, register_model

__all__ = ["SpikingNet", "create_model", "list_models", "register_model"]

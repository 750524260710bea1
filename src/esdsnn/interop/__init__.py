"""Models in and out: SpikingJelly models converted to esdsnn layers, esdsnn models exported to NIR."""

from .spikingjelly import from_spikingjelly

__all__ = ["from_spikingjelly"]

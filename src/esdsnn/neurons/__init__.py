"""Spiking neurons and their surrogate gradients."""
from .lif import LIF, LIFConfig, LIFParams, lif_multistep, lif_rate_eligibility, lif_spikes, lif_step
from .surrogate import SigmoidSurrogate

__all__ = ["LIF", "LIFConfig", "LIFParams", "SigmoidSurrogate", "lif_multistep", "lif_rate_eligibility", "lif_spikes", "lif_step"]

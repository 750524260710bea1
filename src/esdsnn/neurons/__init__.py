"""Spiking neurons, their surrogate gradients and the packed spikes they emit in no-grad passes."""

from .fused import lif_multistep_fused
from .lif import (
    LIF,
    LIFConfig,
    charge,
    compile_neurons_,
    fire,
    lif_multistep,
    lif_rate_eligibility,
    lif_spikes,
    lif_step,
    reset,
)
from .spikes import PackedSpikes, pack_spikes, unpack_spikes
from .surrogate import SURROGATES, AtanSurrogate, SigmoidSurrogate, Surrogate

__all__ = [
    "LIF",
    "SURROGATES",
    "AtanSurrogate",
    "LIFConfig",
    "PackedSpikes",
    "SigmoidSurrogate",
    "Surrogate",
    "charge",
    "compile_neurons_",
    "fire",
    "lif_multistep",
    "lif_multistep_fused",
    "lif_rate_eligibility",
    "lif_spikes",
    "lif_step",
    "pack_spikes",
    "reset",
    "unpack_spikes",
]

"""Passes are functions the training method calls: spike (inference), BPTT, RateBP's two stages."""

from ..runtime.context import MemorySaving, PassState, current_pass, use_pass
from ..runtime.precision import native_bf16, use_spike_dtype
from ..runtime.trace import NeuronRecord, NormRecord, Trace
from .inputs import rate_input, spike_input
from .ratebp import run_rate_stage, run_spike_stage
from .readout import readout, run_model, submodules
from .spike import run_bptt, run_spike, run_spike_intermediates

__all__ = [
    "MemorySaving",
    "NeuronRecord",
    "NormRecord",
    "PassState",
    "Trace",
    "current_pass",
    "native_bf16",
    "rate_input",
    "readout",
    "run_bptt",
    "run_model",
    "run_rate_stage",
    "run_spike",
    "run_spike_intermediates",
    "run_spike_stage",
    "spike_input",
    "submodules",
    "use_pass",
    "use_spike_dtype",
]

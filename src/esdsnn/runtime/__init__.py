"""The running pass, below everything that reads it: which pass runs (:mod:`.context`) and what
RateBP's spike stage records (:mod:`.trace`). The pass runners live in :mod:`esdsnn.passes`."""

from .context import MemorySaving, PassState, current_pass, use_pass
from .trace import NeuronRecord, NormRecord, Trace

__all__ = ["MemorySaving", "NeuronRecord", "NormRecord", "PassState", "Trace", "current_pass", "use_pass"]

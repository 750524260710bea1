"""What the RateBP spike stage records, keyed by layer: neuron rates/eligibilities, BN statistics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

from torch import Tensor, nn


@dataclass
class NeuronRecord:
    rate: Tensor  # mean_t s_t, shape [B, ...]
    eligibility: Tensor  # mean_t kappa_t * sigma'(h_t), shape [B, ...]


@dataclass
class NormRecord:
    mean: Tensor  # per-channel mean over T*B samples and pixels
    var: Tensor  # per-channel biased variance over the same


@dataclass
class Trace:
    """Records of one spike stage. Each layer records once; the rate stage reads each once."""

    T: int
    neurons: Dict[nn.Module, NeuronRecord] = field(default_factory=dict)
    norms: Dict[nn.Module, NormRecord] = field(default_factory=dict)
    masks: Dict[nn.Module, Tensor] = field(default_factory=dict)  # dropout masks, one per sample

    def record_neuron(self, layer: nn.Module, rate: Tensor, eligibility: Tensor) -> None:
        if layer in self.neurons:
            raise RuntimeError(f"{layer!r} ran twice in one spike stage: give each call its own neuron module")
        self.neurons[layer] = NeuronRecord(rate, eligibility)

    def record_norm(self, layer: nn.Module, mean: Tensor, var: Tensor) -> None:
        if layer in self.norms:
            raise RuntimeError(f"{layer!r} ran twice in one spike stage: give each call its own norm module")
        self.norms[layer] = NormRecord(mean, var)

    def record_mask(self, layer: nn.Module, mask: Tensor) -> None:
        if layer in self.masks:
            raise RuntimeError(f"{layer!r} ran twice in one spike stage: give each call its own dropout module")
        self.masks[layer] = mask

    def mask(self, layer: nn.Module) -> Tensor:
        try:
            return self.masks[layer]
        except KeyError:
            raise RuntimeError(f"{layer!r} has no record: the rate stage must follow the spike stage of the same model") from None

    def neuron(self, layer: nn.Module) -> NeuronRecord:
        try:
            return self.neurons[layer]
        except KeyError:
            raise RuntimeError(f"{layer!r} has no record: the rate stage must follow the spike stage of the same model") from None

    def norm(self, layer: nn.Module) -> NormRecord:
        try:
            return self.norms[layer]
        except KeyError:
            raise RuntimeError(f"{layer!r} has no record: the rate stage must follow the spike stage of the same model") from None

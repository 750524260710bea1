"""What the RateBP spike stage records, keyed by layer: neuron rates/eligibilities, BN statistics,
dropout masks, the output rates of spike-element-wise gates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    neurons: dict[nn.Module, NeuronRecord] = field(default_factory=dict)
    norms: dict[nn.Module, NormRecord] = field(default_factory=dict)
    masks: dict[nn.Module, Tensor] = field(default_factory=dict)  # dropout masks, one per sample
    gates: dict[nn.Module, Tensor] = field(default_factory=dict)  # output rates of SEW AND / IAND gates

    def record_neuron(self, layer: nn.Module, rate: Tensor, eligibility: Tensor) -> None:
        _record(self.neurons, layer, NeuronRecord(rate, eligibility), "neuron")

    def record_norm(self, layer: nn.Module, mean: Tensor, var: Tensor) -> None:
        _record(self.norms, layer, NormRecord(mean, var), "norm")

    def record_mask(self, layer: nn.Module, mask: Tensor) -> None:
        _record(self.masks, layer, mask, "dropout")

    def record_gate(self, layer: nn.Module, rate: Tensor) -> None:
        _record(self.gates, layer, rate, "gate")

    def neuron(self, layer: nn.Module) -> NeuronRecord:
        return _read(self.neurons, layer)

    def norm(self, layer: nn.Module) -> NormRecord:
        return _read(self.norms, layer)

    def mask(self, layer: nn.Module) -> Tensor:
        return _read(self.masks, layer)

    def gate(self, layer: nn.Module) -> Tensor:
        return _read(self.gates, layer)


def _record(table: dict, layer: nn.Module, value: Any, kind: str) -> None:
    if layer in table:
        raise RuntimeError(f"{layer!r} ran twice in one spike stage: give each call its own {kind} module")
    table[layer] = value


def _read(table: dict, layer: nn.Module) -> Any:
    try:
        return table[layer]
    except KeyError:
        raise RuntimeError(
            f"{layer!r} has no record: the rate stage must follow the spike stage of the same model"
        ) from None

"""Firing rates, synaptic operations and an energy estimate of a spiking model (SPEC §9).

:func:`measure_firing` runs the spike pass (``run_spike``, model in eval mode, no autograd) over a
data source and observes it with forward hooks registered only for the call and removed in
``finally``; nothing is stored on the modules. What is counted:

- **Firing rate** of every LIF layer: spikes / (neurons × samples) at each step, and their mean
  over the T steps (= spikes / (neurons × T × samples)). The network average weights the layers by
  their neuron counts (it is total spikes / total neuron-steps).
- **MACs** of every ``Conv``/``Linear`` layer, counted from the shapes seen at run time: output
  elements × ``in_channels / groups`` × kernel area (linear: output elements × ``in_features``),
  per sample and time step (the dense, ANN-equivalent count).
- **SOPs** of a layer whose input is exactly binary (spikes): input firing rate × T × MACs, the
  input rate measured directly as the non-zero fraction of the layer's input over all T steps.
- A layer with real-valued input (always the first layer; also e.g. a linear layer after average
  pooling) is charged MACs instead: its per-step MACs × T, or × 1 when its input is the same at
  every step (direct encoding of a static image: the first convolution need run only once).
- **Dead and saturated layers**: a LIF layer whose mean rate is below :data:`DEAD_RATE` (0.001
  spikes / neuron / step, which includes no spike at all) is flagged ``"dead"``: it passes
  (almost) nothing on. One at or above :data:`SATURATED_RATE` (0.95: firing at nearly every step,
  so its spikes carry almost no information) is flagged ``"saturated"``.
- **Energy estimate** (45 nm CMOS figures): ``E = 4.6 pJ × MACs + 0.9 pJ × SOPs`` per sample,
  reported in mJ. It is an estimate from operation counts, not a measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from ..neurons.lif import LIF
from ..passes.spike import run_spike
from ..runtime.context import current_pass

E_MAC_PJ = 4.6  # energy of one 32-bit multiply-accumulate, 45 nm (pJ)
E_AC_PJ = 0.9  # energy of one 32-bit accumulate (a synaptic operation), 45 nm (pJ)
ENERGY_NOTE = "estimate from operation counts (45 nm: {mac} pJ per MAC, {ac} pJ per SOP), not a measurement"

_SYNAPSE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

DEAD_RATE = 1e-3  # below this mean rate (spikes / neuron / step) a layer is "dead"
SATURATED_RATE = 0.95  # at or above it, "saturated"
FIX_HINTS = {
    "dead": "lower its threshold (--threshold), check the input normalisation (about mean 0, std 1 per "
    "channel), or warm the learning rate up (a smaller --lr for the first epochs)",
    "saturated": "raise its threshold (--threshold)",
}


def firing_flag(rate: float) -> Optional[str]:
    """``"dead"``, ``"saturated"`` or ``None`` for a layer's mean firing rate (see the module doc)."""
    if rate < DEAD_RATE:
        return "dead"
    if rate >= SATURATED_RATE:
        return "saturated"
    return None


@dataclass
class LayerFiring:
    """Firing of one LIF layer: ``rate`` = mean of ``step_rates`` = spikes / (neurons × T);
    ``flag`` = :func:`firing_flag` of the rate."""

    name: str
    neurons: int  # per sample
    rate: float
    step_rates: list[float]
    flag: Optional[str] = field(init=False)

    def __post_init__(self) -> None:
        self.flag = firing_flag(self.rate)


@dataclass
class LayerOps:
    """Operations of one Conv/Linear layer, per sample.

    ``macs_per_step``: dense MACs of one time step. ``input_rate``: non-zero fraction of its input
    over all steps. ``counted_as``: ``"sop"`` (binary input) or ``"mac"`` (real-valued input);
    ``macs``: MACs charged (0 for SOP layers); ``sops``: ``input_rate × T × macs_per_step`` for SOP
    layers (0 for MAC layers).
    """

    name: str
    kind: str
    macs_per_step: float
    input_rate: float
    binary_input: bool
    input_repeated: bool  # the same input at every step (computed once)
    counted_as: str
    macs: float
    sops: float


@dataclass
class FiringReport:
    """Everything :func:`measure_firing` measured; per-sample figures averaged over the data."""

    T: int
    samples: int
    layers: list[LayerFiring]
    ops: list[LayerOps]
    avg_rate: float  # network average, weighted by neuron count
    step_avg_rates: list[float]  # the same at each step
    total_macs: float  # MACs charged per sample (real-valued-input layers)
    total_sops: float  # SOPs per sample (binary-input layers)
    dense_macs_per_step: float  # ANN-equivalent MACs of one step, all layers
    energy_mj_per_sample: float  # estimate: e_mac·total_macs + e_ac·total_sops
    ann_energy_mj_per_sample: float  # estimate for the same network as an ANN: e_mac·dense MACs
    accuracy: Optional[float] = None  # spike-pass top-1 on the data, a fraction (when labels were given)
    e_mac_pj: float = E_MAC_PJ
    e_ac_pj: float = E_AC_PJ
    energy_note: str = field(default="")

    def __post_init__(self) -> None:
        if not self.energy_note:
            self.energy_note = ENERGY_NOTE.format(mac=self.e_mac_pj, ac=self.e_ac_pj)

    @property
    def dead_layers(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.flag == "dead"]

    @property
    def saturated_layers(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.flag == "saturated"]

    def to_dict(self) -> dict:
        """Every field, plus ``dead_layers`` and ``saturated_layers`` (names) and the rates they
        were judged by."""
        return {
            **asdict(self),
            "dead_layers": self.dead_layers,
            "saturated_layers": self.saturated_layers,
            "dead_below_rate": DEAD_RATE,
            "saturated_from_rate": SATURATED_RATE,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FiringReport:
        """Read :meth:`to_dict` (or an older ``firing_rates.json`` without flags)."""
        d = {
            k: v
            for k, v in d.items()
            if k not in ("dead_layers", "saturated_layers", "dead_below_rate", "saturated_from_rate")
        }
        d["layers"] = [LayerFiring(**{k: v for k, v in x.items() if k != "flag"}) for x in d["layers"]]
        d["ops"] = [LayerOps(**x) for x in d["ops"]]
        return cls(**d)

    def flag_lines(self) -> list[str]:
        """One Markdown line per dead or saturated layer, with what to try; none when all are fine."""
        lines = []
        for layer in self.layers:
            if layer.flag == "dead":
                what = "no spike at all" if layer.rate == 0 else f"mean rate {layer.rate:.2g} < {DEAD_RATE:g}"
                lines.append(f"- **dead layer** `{layer.name}`: {what} in the measured samples; {FIX_HINTS['dead']}.")
            elif layer.flag == "saturated":
                lines.append(
                    f"- **saturated layer** `{layer.name}`: mean rate {layer.rate:.4f} ≥ {SATURATED_RATE:g} "
                    f"(fires at almost every step); {FIX_HINTS['saturated']}."
                )
        return lines

    def markdown(self, digits: int = 4) -> str:
        """Firing-rate table in the poster's style: rows = LIF layers, columns = steps + mean."""
        head = ["layer", "neurons", *[f"t={t + 1}" for t in range(self.T)], "mean"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        fmt = f"{{:.{digits}f}}"
        for layer in self.layers:
            cells = [
                f"`{layer.name}`",
                str(layer.neurons),
                *[fmt.format(r) for r in layer.step_rates],
                fmt.format(layer.rate),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        total = sum(layer.neurons for layer in self.layers)
        cells = [
            "**average (by neurons)**",
            str(total),
            *[fmt.format(r) for r in self.step_avg_rates],
            f"**{fmt.format(self.avg_rate)}**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def ops_markdown(self) -> str:
        """Operations table: one row per Conv/Linear layer, per sample."""
        head = ["layer", "type", "MACs/step", "input rate", "counted as", "MACs", "SOPs"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for op in self.ops:
            rate = (
                f"{op.input_rate:.4f}" if op.binary_input else ("real, same each step" if op.input_repeated else "real")
            )
            lines.append(
                f"| `{op.name}` | {op.kind} | {_si(op.macs_per_step)} | {rate} | {op.counted_as.upper()} | "
                f"{_si(op.macs)} | {_si(op.sops)} |"
            )
        lines.append(
            f"| **total** | | {_si(self.dense_macs_per_step)} | | | **{_si(self.total_macs)}** | **{_si(self.total_sops)}** |"
        )
        return "\n".join(lines)

    def summary_lines(self) -> list[str]:
        """A few plain lines: average rate, operations, the energy estimate (labelled)."""
        lines = [
            f"- time steps T = {self.T}, samples = {self.samples}",
            f"- average firing rate (weighted by neuron count): {self.avg_rate:.4f}",
            f"- per sample: {_si(self.total_macs)} MACs (real-valued inputs), {_si(self.total_sops)} SOPs "
            f"(spike inputs); the same network as an ANN: {_si(self.dense_macs_per_step)} MACs",
            f"- **energy estimate**: {self.energy_mj_per_sample:.4g} mJ per sample "
            f"(ANN estimate: {self.ann_energy_mj_per_sample:.4g} mJ) — {self.energy_note}",
        ]
        if self.accuracy is not None:
            lines.insert(1, f"- spike-pass accuracy on these samples: {self.accuracy:.2%}")
        return lines


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3f}{unit}"
    return f"{x:.4g}"


class _NeuronCounter:
    def __init__(self, T: int) -> None:
        self.spikes = torch.zeros(T, dtype=torch.float64)
        self.neurons = 0  # per sample

    def __call__(self, module: nn.Module, inputs, output: Tensor) -> None:
        steps = current_pass().steps
        flat = output.detach().reshape(steps, -1)
        self.spikes += torch.count_nonzero(flat, dim=1).to("cpu", torch.float64)
        per_step = flat.shape[1]
        samples = output.shape[0] // steps
        self.neurons = per_step // samples


class _SynapseCounter:
    def __init__(self) -> None:
        self.macs = 0.0  # per-step MACs summed over the samples seen
        self.nonzero = 0
        self.elements = 0
        self.binary = True
        self.repeated = True

    def __call__(self, module: nn.Linear | nn.modules.conv._ConvNd, inputs, output: Tensor) -> None:
        x = inputs[0].detach()
        steps = current_pass().steps
        if isinstance(module, nn.Linear):
            fan_in = module.in_features
        else:
            fan_in = module.in_channels // module.groups
            for k in module.kernel_size:
                fan_in *= k
        self.macs += output.numel() / steps * fan_in
        self.nonzero += int(torch.count_nonzero(x))
        self.elements += x.numel()
        if self.binary and not bool(((x == 0) | (x == 1)).all()):
            self.binary = False
        if self.repeated:
            seq = x.reshape(steps, -1)
            self.repeated = bool(torch.equal(seq, seq[:1].expand_as(seq)))


def measure_firing(
    model: nn.Module,
    source: Iterable,
    T: int,
    *,
    device: torch.device | str | None = None,
    max_batches: Optional[int] = None,
    e_mac_pj: float = E_MAC_PJ,
    e_ac_pj: float = E_AC_PJ,
) -> FiringReport:
    """Firing rates, MACs/SOPs and the energy estimate of ``model`` at ``T`` steps on ``source``.

    ``source`` yields ``(x, y)`` batches (or bare ``x``), ``x`` ``[B, C, H, W]`` static or
    ``[T, B, C, H, W]`` events; batches are moved to ``device`` when given. The spike pass runs
    in eval mode (BN running statistics, as at test time); the model's mode is restored after.
    ``max_batches`` stops early (a quick estimate on part of the data).
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be an integer >= 1, got {T!r}")
    names = {m: n for n, m in model.named_modules()}
    neurons: dict[nn.Module, _NeuronCounter] = {}
    synapses: dict[nn.Module, _SynapseCounter] = {}
    order: dict[nn.Module, None] = {}  # the observed layers in call order

    def observe(counter):
        def hook(module: nn.Module, inputs, output: Tensor) -> None:
            order.setdefault(module)
            counter(module, inputs, output)

        return hook

    handles = []
    for module in model.modules():
        counter: Callable[..., None]
        if isinstance(module, LIF):
            counter = neurons[module] = _NeuronCounter(T)
        elif isinstance(module, _SYNAPSE_TYPES):
            counter = synapses[module] = _SynapseCounter()
        else:
            continue
        handles.append(module.register_forward_hook(observe(counter)))

    samples, correct, labelled = 0, 0, True
    was_training = model.training
    model.eval()
    try:
        for i, batch in enumerate(source):
            if max_batches is not None and i >= max_batches:
                break
            x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
            if device is not None:
                x = x.to(device)
            logits = run_spike(model, x, T)
            n = x.shape[1] if x.dim() == 5 else x.shape[0]
            samples += n
            if y is None:
                labelled = False
            else:
                correct += int((logits.argmax(-1).cpu() == y.cpu()).sum())
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if samples == 0:
        raise ValueError("the data source gave no samples")

    layers: list[LayerFiring] = []
    for module in order:
        if module not in neurons:
            continue
        c = neurons[module]
        denom = max(c.neurons, 1) * samples
        step_rates = (c.spikes / denom).tolist()
        layers.append(LayerFiring(names[module], c.neurons, float(sum(step_rates) / T), step_rates))
    total_neurons = sum(layer.neurons for layer in layers)
    if total_neurons:
        step_avg = [sum(layer.step_rates[t] * layer.neurons for layer in layers) / total_neurons for t in range(T)]
    else:
        step_avg = [0.0] * T
    avg_rate = sum(step_avg) / T

    ops: list[LayerOps] = []
    first = True
    for module in order:
        if module not in synapses:
            continue
        syn = synapses[module]
        macs_step = syn.macs / samples
        rate = syn.nonzero / max(syn.elements, 1)
        binary = syn.binary and not first
        if binary:
            op = LayerOps(
                names[module],
                type(module).__name__,
                macs_step,
                rate,
                True,
                syn.repeated,
                "sop",
                0.0,
                rate * T * macs_step,
            )
        else:
            macs = macs_step * (1 if syn.repeated else T)
            op = LayerOps(
                names[module], type(module).__name__, macs_step, rate, syn.binary, syn.repeated, "mac", macs, 0.0
            )
        ops.append(op)
        first = False
    total_macs = sum(op.macs for op in ops)
    total_sops = sum(op.sops for op in ops)
    dense = sum(op.macs_per_step for op in ops)
    pj_to_mj = 1e-9
    return FiringReport(
        T=T,
        samples=samples,
        layers=layers,
        ops=ops,
        avg_rate=avg_rate,
        step_avg_rates=step_avg,
        total_macs=total_macs,
        total_sops=total_sops,
        dense_macs_per_step=dense,
        energy_mj_per_sample=(e_mac_pj * total_macs + e_ac_pj * total_sops) * pj_to_mj,
        ann_energy_mj_per_sample=e_mac_pj * dense * pj_to_mj,
        accuracy=correct / samples if labelled else None,
        e_mac_pj=e_mac_pj,
        e_ac_pj=e_ac_pj,
    )


__all__ = [
    "DEAD_RATE",
    "E_AC_PJ",
    "E_MAC_PJ",
    "FIX_HINTS",
    "SATURATED_RATE",
    "FiringReport",
    "LayerFiring",
    "LayerOps",
    "firing_flag",
    "measure_firing",
]

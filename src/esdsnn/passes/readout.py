"""What a pass reads out of a model: the time mean of its output, and of named submodules' outputs.

Any ``nn.Module`` is a model: it maps folded activations ``[steps·B, ...]`` to a folded output
``[steps·B, K]``, and the pass averages that over the steps (the "average firing rate" readout).
Intermediate outputs — the stages that feed ESD branches, the last feature map a teacher's
attention is built from — are named by their dotted module names (``"layer2.1"``,
``"stages.0"``) and taken with forward hooks that live only for the call, each averaged over the
steps as soon as it is produced.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.time import time_mean


def readout(out: Tensor, steps: int, batch: int) -> Tensor:
    """The time mean ``[B, K]`` of a model's folded output ``[steps·B, K]``. Anything else (a
    tuple, a feature map, an output the model averaged over the steps itself) is a
    :class:`ConfigError` saying what a model must return."""
    problem = output_problem(out, steps, batch)
    if problem:
        raise ConfigError(problem)
    return time_mean(out)


def output_problem(out: object, steps: int, batch: int) -> str:
    """Why ``out`` is not the logits ``[steps·B, K]`` a model must return ('' when it is)."""
    want = f"[T·B, K] = [{steps * batch}, K] for {batch} sample(s) at T={steps}"
    if isinstance(out, (tuple, list)):
        return (
            f"the model returns a {type(out).__name__} of {len(out)} values; it must return one tensor, its "
            f"logits {want}: return the logits only (ESD branches read intermediate outputs by their stage names)"
        )
    if not isinstance(out, Tensor):
        return f"the model returns {type(out).__name__}; it must return one tensor, its logits {want}"
    shape = tuple(out.shape)
    if out.dim() > 2:
        return (
            f"the model returns a feature map, {list(shape[1:])} per step and sample, not logits {want}: end "
            f"it with a classifier, e.g. nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear({shape[1]}, num_classes)"
        )
    if out.dim() < 2:
        return f"the model returns shape {shape}, not logits {want}"
    if out.shape[0] != steps * batch:
        if steps > 1 and out.shape[0] == batch:
            return (
                f"the model returns shape {shape}: it averages over the time steps itself; return the output "
                f"of every step, {want} (one row per step and sample, as its layers see them), and esdsnn "
                f"averages it"
            )
        return f"the model returns shape {shape}, not logits {want} (one row per step and sample)"
    return ""


def submodules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The submodules of ``model`` with these dotted names; an unknown name is an error listing
    the names that exist."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules or n == ""]
    if unknown:
        known = [n for n in modules if n]
        shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
        raise ValueError(f"the model has no submodule {', '.join(map(repr, unknown))}; its submodules: {shown}")
    return [modules[n] for n in names]


def run_model(model: nn.Module, x: Tensor, steps: int, taps: Sequence[str] = ()) -> tuple[Tensor, list[Tensor]]:
    """Logits ``[B, K]`` of ``model`` on folded input ``x`` and the time-averaged outputs of the
    submodules named in ``taps`` (in that order). Runs inside the caller's pass."""
    batch = x.shape[0] // steps
    captured: dict[str, Tensor] = {}

    def capture(name: str):
        def hook(module: nn.Module, inputs, output: Tensor) -> None:
            if name in captured:
                raise RuntimeError(f"submodule {name!r} ran twice in one pass: name a module that runs once")
            captured[name] = time_mean(output)

        return hook

    handles = [m.register_forward_hook(capture(n)) for n, m in zip(taps, submodules(model, taps))]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in taps if n not in captured]
    if missing:
        raise RuntimeError(f"submodule(s) {', '.join(missing)} did not run in the model's forward")
    return readout(out, steps, batch), [captured[n] for n in taps]


__all__ = ["output_problem", "readout", "run_model", "submodules"]

"""Training methods by name, each with what the rest of esdsnn needs to know about it.

A method registers itself in its own file with :func:`register_method`: a factory
``build(model, T, *, <its config sections>, <its extra arguments>, **common)`` (``common``: the
options of every method, :data:`COMMON`, passed on to :class:`TrainingMethod`) and a
:class:`MethodSpec` saying which pass it trains with, whether the trained model spikes, which
config sections it reads, which values it fixes, whether it distils from a teacher run and what
it does to the model. The training loop, the CLI, the report and the comparison ask the spec;
none of them compares method names. Adding a method is one file in ``esdsnn/methods/`` (every
module there is imported on start) plus its tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Union

from torch import nn

from ..distill.esd_loss import DistillConfig
from ..distill.kd import KDConfig
from ..errors import ConfigError
from .base import TrainingMethod

#: Options every method takes: the loss scale, and the input shape (C, H, W) a dry run of a plain
#: model's named stages uses (default: its first convolution's channels at 32×32).
COMMON = ("loss_scale", "input_shape")
#: The option sections a method may read, by name (also the names of ``TrainConfig``'s sections).
SECTIONS: dict[str, type] = {"distill": DistillConfig, "kd": KDConfig}


@dataclass(frozen=True)
class MethodSpec:
    """A registered training method and what it declares about itself."""

    name: str
    build: Callable[..., TrainingMethod]
    description: str
    training_pass: str  # how it trains, in words: "BPTT", "RateBP", "BPTT or RateBP", "ANN (one step)"
    spiking: bool = True  # the trained model is an SNN: spike-pass accuracy, firing and energy report
    sections: tuple[str, ...] = ()  # option sections it reads (keys of SECTIONS)
    forced: Mapping[str, Any] = field(default_factory=dict)  # section fields it fixes (recorded in configs)
    needs: tuple[str, ...] = ()  # further keyword arguments of ``build`` (kd: the teacher module)
    teacher_method: Optional[str] = None  # distils from a trained run of this method (passed as teacher_run)
    prepare_model: Optional[Callable[[nn.Module], nn.Module]] = None  # what it does to the model
    ablation_of: Optional[tuple[str, str]] = None  # (method, what the difference to it measures)
    # whether loss_scale "auto" is 1/T (RateBP-based), given the flat settings (kd: its student_pass);
    # the built method's ``loss_scale`` agrees (tested for every method)
    scales_loss_by_T: Union[bool, Callable[[Mapping[str, Any]], bool]] = False

    def inference_steps(self, T: int) -> int:
        """Steps of the pass that evaluates the trained model: T, or 1 for a non-spiking one."""
        return T if self.spiking else 1

    def auto_loss_scale(self, T: int, settings: Mapping[str, Any]) -> float:
        """The loss scale ``auto`` gives this method at ``T`` steps with flat ``settings``."""
        by_T = self.scales_loss_by_T(settings) if callable(self.scales_loss_by_T) else self.scales_loss_by_T
        return 1.0 / T if by_T else 1.0

    def prepared(self, model: nn.Module) -> nn.Module:
        """``model`` as this method trains it (the ReLU twin for ``ann``), e.g. to load a checkpoint."""
        return self.prepare_model(model) if self.prepare_model is not None else model


_METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, *, description: str, training_pass: str, **declared: Any) -> Callable:
    """Decorator: register ``build`` as method ``name`` with the :class:`MethodSpec` fields given."""
    unknown = [k for k in declared.get("sections", ()) if k not in SECTIONS]
    if unknown:
        raise ValueError(f"method {name!r} reads unknown option sections {unknown}; known: {', '.join(SECTIONS)}")

    def add(build: Callable[..., TrainingMethod]) -> Callable[..., TrainingMethod]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        _METHODS[name] = MethodSpec(name, build, description, training_pass, **declared)
        return build

    return add


def list_methods() -> list[str]:
    """Registered method names, in registration order."""
    return list(_METHODS)


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``; an unknown name raises :class:`ConfigError` with the known ones."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}: choose one of {', '.join(_METHODS)}") from None


def section_fields(section: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(SECTIONS[section]))


class MethodSetting(NamedTuple):
    """One option a method reads: its flat name (also the flag and YAML key), the section it
    belongs to, its default, its help, and the value the method fixes it to (if any)."""

    name: str
    section: str
    default: Any
    help: str
    fixed: Any = None
    is_fixed: bool = False


def method_settings(name: str) -> list[MethodSetting]:
    """The options method ``name`` reads (its config sections' fields), with their defaults and
    the values it fixes: what ``esdsnn methods NAME`` prints."""
    spec = method_spec(name)
    out = []
    for section in spec.sections:
        for f in dataclasses.fields(SECTIONS[section]):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            fixed = f.name in spec.forced
            out.append(
                MethodSetting(f.name, section, default, f.metadata.get("help", ""), spec.forced.get(f.name), fixed)
            )
    return out


def section_of(option: str) -> Optional[str]:
    """The option section (a key of :data:`SECTIONS`) holding ``option``, or None."""
    return next((s for s in SECTIONS if option in section_fields(s)), None)


def readers_of(section: str) -> list[str]:
    """The registered methods that read ``section``, in registration order."""
    return [m for m, spec in _METHODS.items() if section in spec.sections]


def unread_options(name: str, options: Iterable[str]) -> list[str]:
    """The options among ``options`` that method ``name`` does not read: fields of a section that
    it does not declare (``bptt``: every ``distill`` field). The command line, YAML configs and
    :func:`create_method` refuse these, by this one rule."""
    spec = method_spec(name)
    return [k for k in options if (s := section_of(k)) is not None and s not in spec.sections]


def unread_message(name: str, options: Sequence[str]) -> str:
    """The line that refuses ``options`` for method ``name``: which methods would read them."""
    readers = sorted({m for k in options for m in readers_of(section_of(k) or "")}, key=list(_METHODS).index)
    return (
        f"method {name} does not read {', '.join(options)} (read only by {', '.join(readers) or 'no method'}); "
        f"drop {'it' if len(options) == 1 else 'them'}, or choose one of those methods"
    )


def create_method(name: str, model: nn.Module, T: int, **options: Any) -> TrainingMethod:
    """Wrap ``model`` in the training method ``name`` (an ``nn.Module`` holding any branches).

    ``options``: ``loss_scale`` (``"auto"`` or a number), ``input_shape``; for a method that reads
    a section (``distill``: alpha, beta, kd_tau, teacher, teacher_space, unreliable, eta, stages; ``kd``: samd_weight,
    nld_weight, samd_temperature, nld_tau, nld_mix, student_pass) either the section's config
    object or its fields; and the method's own arguments (``kd``: ``teacher``, a trained ANN).
    Options the method does not read are refused, naming those it does.
    """
    spec = method_spec(name)
    owners = {f: s for s in spec.sections for f in section_fields(s)}
    known = [*COMMON, *spec.needs, *spec.sections, *owners]
    unread = unread_options(name, [k for k in options if k not in (*COMMON, *spec.needs)])  # kd's teacher: a module
    if unread:
        raise ConfigError(unread_message(name, sorted(unread)))
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        raise ConfigError(f"method {name} does not take option(s) {', '.join(unknown)}; it takes {', '.join(known)}")
    kwargs: dict[str, Any] = {k: options[k] for k in (*COMMON, *spec.needs) if k in options}
    for section in spec.sections:
        values = {f: v for f, v in options.items() if owners.get(f) == section}
        given = options.get(section)
        for key, value in spec.forced.items():
            if owners.get(key) != section:
                continue
            if values.get(key, value) != value or (given is not None and getattr(given, key) != value):
                raise ConfigError(f"method {name} fixes {key} = {value!r}")
            values[key] = value
        try:
            config = given if given is not None else SECTIONS[section]()
            kwargs[section] = dataclasses.replace(config, **values) if values else config
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{section} options of method {name}: {err}") from None
    return spec.build(model, T, **kwargs)


__all__ = [
    "SECTIONS",
    "MethodSetting",
    "MethodSpec",
    "create_method",
    "list_methods",
    "method_settings",
    "method_spec",
    "readers_of",
    "register_method",
    "section_of",
    "unread_message",
    "unread_options",
]

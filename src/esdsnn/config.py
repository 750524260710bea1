"""Training configuration: one tree of component configs, read from YAML and command-line flags.

:class:`TrainConfig` holds what to train (method, model, data, T, seed) and one section per
component, each declared once where the component lives: ``optim`` (:class:`OptimConfig`),
``neuron`` (:class:`~esdsnn.neurons.LIFConfig`), ``distill``
(:class:`~esdsnn.distill.DistillConfig`), ``kd`` (:class:`~esdsnn.distill.KDConfig`), ``augment``
(:class:`~esdsnn.data.augment.AugmentConfig`), ``data`` (:class:`~esdsnn.data.base.DataOptions`) and
``run`` (:class:`RunConfig`). Every leaf has a
flat name that is unique across the tree (``lr``, ``decay``, ``beta``, ...): YAML files, saved
``config.yaml`` files and command-line flags (``--lr``) use these flat names, all derived by
walking the tree, so a new option is one field in its component. Unknown keys are rejected with
the list of known ones; values are coerced to each field's type (``Literal`` fields to their
choices); the methods' fixed values (``sd``: ``teacher = all``) are applied and recorded.

Fields left ``None`` that depend on the data set (``arch``, ``epochs``, ``batch_size``, ``lr``,
``threads``, ``val_fraction``, the augmentation switches) are filled in by
:meth:`TrainConfig.resolved` (:mod:`esdsnn.defaults`): the paper's recipe, the tuned digits run,
or, for data without a recipe, values sized to the data once it is read. A config built from
settings (:meth:`TrainConfig.from_dict`: YAML files, flags) that names a data set with a recipe
starts from that recipe's other settings (T, β, ... of :data:`esdsnn.recipes.RECIPES`), so
``--dataset cifar10-dvs`` alone runs the paper's CIFAR10-DVS recipe. Renamed settings are
still read under their old names, with a notice (:data:`RENAMED`); a run's saved config read back
(:meth:`TrainConfig.from_saved`) gives settings it predates the values that run used
(:data:`SAVED_BEFORE`).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Optional, Union

import yaml

from esdsnn.atomic import write_text_atomic
from esdsnn.data import dataset_info, list_datasets
from esdsnn.data.augment import SWITCHES, AugmentConfig
from esdsnn.data.base import DataOptions
from esdsnn.defaults import DATA_DEPENDENT, Choice, DataFacts, fixed_defaults, recipe_base, sized_defaults
from esdsnn.distill.esd_loss import DistillConfig
from esdsnn.distill.kd import KDConfig
from esdsnn.errors import ConfigError, notice
from esdsnn.fields import check_choices, choices, coerce_value, option
from esdsnn.methods import list_methods, method_spec
from esdsnn.methods.registry import unread_message, unread_options
from esdsnn.models import list_models
from esdsnn.models.registry import model_factory
from esdsnn.neurons.lif import LIFConfig
from esdsnn.runtime.precision import Precision

#: Old flat names still read (YAML keys and flags), with a notice: old name -> new name.
RENAMED: dict[str, str] = {"tau": "kd_tau", "amp": "precision", "spike_dtype": "precision"}
#: Old values of renamed settings, as the new setting's values (``None``: the old setting's
#: default, which the new one's default covers: nothing to set).
RENAMED_VALUES: dict[str, dict[str, Optional[str]]] = {
    "amp": {"none": None, "bf16": "bf16-mixed", "fp16": "16-mixed"},
    # bf16 convolutions on spikes are part of bf16-mixed now (with its autocast); "auto" was the
    # default of an earlier version (float32 except on native-bf16 hardware): read as the default
    "spike_dtype": {"float32": None, "auto": None, "bf16": "bf16-mixed"},
}
#: Settings added since runs were saved, per data set, with the value the runs saved before used.
SAVED_BEFORE: dict[str, dict[str, Any]] = {"cifar10-dvs": {"dvs_split": "stratified"}}

LrSchedule = Literal["epoch", "step"]

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum and a cosine schedule to 0 (SPEC §7)."""

    epochs: Optional[int] = option(
        None,
        "training epochs; with --resume, a larger N extends the run (the cosine is re-planned over N epochs)",
        resumable=True,
        changes_result=True,
    )
    batch_size: Optional[int] = option(None, "global batch size: under torchrun each of N processes takes batch_size/N")
    lr: Optional[float] = option(None, "initial learning rate (SGD, cosine to 0)")
    lr_schedule: Optional[LrSchedule] = option(
        None,
        "when the cosine learning rate moves: once per epoch (epoch) or after every training step (step: a "
        "short run still anneals to 0)",
    )
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(5e-4, "weight decay on conv/linear weights (none on BN params and biases)")

    def __post_init__(self) -> None:
        check_choices(self)
        _check(self.epochs is None or self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class RunConfig:
    """Where and how a run executes. Fields marked ``resumable`` may change when a run resumes;
    unless also marked ``changes_result`` they do not change what is computed, beyond the
    floating-point details of another device."""

    out: Optional[str] = option(None, "run directory; default runs/<timestamp>-<method>")
    threads: Optional[int] = option(
        None, "torch CPU threads (fewer when steps slow down, if chosen from the free cores)", resumable=True
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N", resumable=True)
    progress: bool = option(
        True,
        "show a progress bar per epoch on a terminal; elsewhere (a log file) one line every --log-every seconds",
        resumable=True,
    )
    log_every: float = option(
        30.0, "seconds between progress lines when stderr is not a terminal (0: none)", resumable=True
    )
    eval_every: int = option(
        1,
        "evaluate for selection (the validation split, else the test set) every N epochs and after the last",
        resumable=True,
    )
    workers: Optional[int] = option(
        None, "data workers (DVS conversion, ImageNet decoding); default: the loader's", resumable=True
    )
    report: bool = option(True, "write the firing-rate and energy report at the end of training", resumable=True)
    save_every_steps: int = option(
        0, "also save last.pt every N training steps (0: at the end of each epoch only)", resumable=True
    )
    precision: Precision = option(
        "32",
        "number types: 32 (float32 everywhere: exact, the default), bf16-mixed (bfloat16 autocast and "
        "bfloat16 convolutions on spikes; fast only where the device runs bf16 natively, and it changes "
        "the run) or 16-mixed (float16 autocast with a gradient scaler, CUDA only)",
        changes_result=True,
    )
    channels_last: bool = option(False, "channels-last memory format for the model and image batches")
    compile: bool = option(
        False, "torch.compile the neurons' time loops (the first steps compile, about 20 s)", resumable=True
    )
    sync_bn: bool = option(False, "under torchrun: BatchNorm statistics over the global batch of all processes")
    tensorboard: bool = option(
        True, "also log per-epoch metrics to TensorBoard (tb/) when tensorboard is installed", resumable=True
    )

    def __post_init__(self) -> None:
        check_choices(self)
        _check(self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        _check(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        _check(self.log_every >= 0, f"log_every must be >= 0 seconds, got {self.log_every}")
        _check(self.workers is None or self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        _check(self.save_every_steps >= 0, f"save_every_steps must be >= 0, got {self.save_every_steps}")
        _check(
            bool(_DEVICE_RE.match(self.device)), f"device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}"
        )


#: The sections of TrainConfig and their component types.
SECTIONS: dict[str, type] = {
    "optim": OptimConfig,
    "neuron": LIFConfig,
    "distill": DistillConfig,
    "kd": KDConfig,
    "augment": AugmentConfig,
    "data": DataOptions,
    "run": RunConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (see the module notes); build it with
    :meth:`from_dict` or :func:`load_config`, then call :func:`esdsnn.train.train`."""

    method: str = option("esd", "training method (esdsnn.list_methods(): esd, ratebp, bptt, esd-bptt, sd, ann, kd)")
    arch: Optional[str] = option(None, "model name, or your own as package.module:factory")
    dataset: str = option("digits", "data set name (digits, npz, cifar10, ...)")
    data_path: Optional[str] = option(None, "data file or folder (npz: the .npz file)")
    T: int = option(4, "number of time steps")
    seed: int = option(60, "random seed (initialisation and batch order)")
    loss_scale: Union[str, float] = option("auto", "'auto' (1/T for RateBP methods, 1 for BPTT) or a number")
    teacher_run: Optional[str] = option(
        None, "run directory of the trained teacher of a distilling method (kd: an ann run)"
    )
    val_fraction: Optional[float] = option(
        None,
        "fraction of the training data held out (stratified, seeded) to select the best epoch; the test "
        "set is then measured at the end; 0: selection on the test set, as the paper's recipes do",
    )
    init_from: Optional[str] = option(
        None,
        "start from the weights of a run (RUN_DIR: its best.pt, else last.pt) or a checkpoint FILE; layers "
        "whose shapes differ (a new head) start fresh, and the run says what was loaded",
    )
    optim: OptimConfig = field(default_factory=OptimConfig)
    neuron: LIFConfig = field(default_factory=LIFConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataOptions = field(default_factory=DataOptions)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        hints = _hints(TrainConfig)
        for name in _TOP:
            object.__setattr__(self, name, coerce_value(name, getattr(self, name), hints[name], "config"))
        _check(
            self.method in list_methods(), f"unknown method {self.method!r}; choose one of {', '.join(list_methods())}"
        )
        spec = method_spec(self.method)
        for key, value in spec.forced.items():  # what the method fixes is what the run records
            section = LEAVES[key].section
            assert section is not None  # what a method fixes lives in a section
            given = getattr(getattr(self, section), key)
            _check(
                given in (value, LEAVES[key].default),
                f"method {self.method} fixes {key} = {value!r}; drop {key} ({given!r}), or choose another method",
            )
            object.__setattr__(self, section, dataclasses.replace(getattr(self, section), **{key: value}))
        _check(self.T >= 1, f"T must be >= 1, got {self.T}")
        _check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        if isinstance(self.loss_scale, str):
            _check(
                self.loss_scale == "auto", f"loss_scale must be 'auto' or a positive number, got {self.loss_scale!r}"
            )
        else:
            _check(self.loss_scale > 0, f"loss_scale must be 'auto' or a positive number, got {self.loss_scale}")
        _check(
            spec.teacher_method is None or self.teacher_run is not None,
            f"method {self.method} needs a teacher: train one with --method {spec.teacher_method}, "
            f"then pass --teacher-run RUN_DIR",
        )
        _check(
            spec.teacher_method is not None or self.teacher_run is None,
            f"--teacher-run is read only by a distilling method (kd); {self.method} has no teacher: drop "
            f"--teacher-run, or use --method kd",
        )
        _check(
            self.val_fraction is None or 0 <= self.val_fraction < 1,
            f"val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        if self.arch is not None and ":" in self.arch:
            model_factory(self.arch)  # importable, with that function: else a one-line error now
        elif self.arch is not None:
            _check(
                self.arch in list_models(),
                f"unknown arch {self.arch!r}; choose one of {', '.join(list_models())}, "
                f"or your own factory as package.module:function",
            )
        _check(
            self.dataset in list_datasets(),
            f"unknown dataset {self.dataset!r}; choose one of {', '.join(list_datasets())}",
        )

    # ---- the flat view ----------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        """The flat names of all settings (YAML keys; flags are ``--`` + the name with dashes)."""
        return list(LEAVES)

    @classmethod
    def coerce_values(cls, values: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
        """Check the keys of ``values`` and convert each value to its field's type; unknown keys
        and ill-typed values raise :class:`ConfigError` naming ``source``."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source} must be a mapping of keys to values, got {type(values).__name__}")
        values = _renamed(values, source)
        unknown = [str(k) for k in values if k not in LEAVES]
        if unknown:
            raise ConfigError(f"unknown key(s) in {source}: {', '.join(unknown)}; known keys: {', '.join(LEAVES)}")
        return {k: coerce_value(k, v, LEAVES[k].hint, source) for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build and validate a config from flat settings. A missing setting takes the recipe's
        value when the data set has a recipe that sets it (:func:`esdsnn.defaults.recipe_base`),
        else its default."""
        values = cls.coerce_values(values, source=source)
        base = recipe_base(str(values.get("dataset", LEAVES["dataset"].default)))
        values = {**cls.coerce_values({k: v for k, v in base.items() if k not in values}), **values}
        sections: dict[str, Any] = {}
        for name, component in SECTIONS.items():
            given = {k: v for k, v in values.items() if LEAVES[k].section == name}
            try:
                sections[name] = component(**given)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        return cls(**{k: v for k, v in values.items() if LEAVES[k].section is None}, **sections)

    @classmethod
    def from_saved(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """The config a run saved (its ``config.yaml`` or checkpoint): a setting added since it was
        saved takes the value that run used (:data:`SAVED_BEFORE`), not today's default."""
        before = SAVED_BEFORE.get(str(values.get("dataset")), {})
        return cls.from_dict({**{k: v for k, v in before.items() if k not in values}, **values}, source=source)

    def to_dict(self) -> dict[str, Any]:
        """The flat settings, in declaration order (what ``config.yaml`` holds); augmentation
        settings and data options only where they apply to the data set."""
        info = dataset_info(self.dataset)
        applies = set(info.augmentations) | set(info.options)
        return {
            name: list(v) if isinstance(v, tuple) else v
            for name, v in ((n, self.get(n)) for n in LEAVES)
            if LEAVES[name].section not in ("augment", "data") or name in applies
        }

    def get(self, name: str) -> Any:
        """The value of the setting with flat name ``name``."""
        leaf = LEAVES[name]
        return getattr(getattr(self, leaf.section) if leaf.section else self, name)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with flat ``changes`` applied (coerced and validated like any other input)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def resolved(self, facts: Optional[DataFacts] = None) -> TrainConfig:
        """A copy with the data-set-dependent ``None`` fields filled in (``out`` stays as is).
        Without ``facts`` (the data not read yet), a data set without a recipe keeps ``arch`` and
        ``batch_size`` unset; :meth:`chosen_defaults` says what was filled and why."""
        return self._with_defaults(self.chosen_defaults(facts))

    def chosen_defaults(self, facts: Optional[DataFacts] = None) -> dict[str, Choice]:
        """The defaults that :meth:`resolved` fills in (settings left unset only), with reasons."""
        scale = (
            method_spec(self.method).auto_loss_scale(self.T, self.to_dict()) if self.loss_scale == "auto" else 1.0
        )  # a scale set by hand: lr is the user's business on that scale
        table = fixed_defaults(self.dataset, scale) if facts is None else sized_defaults(self.dataset, facts, scale)
        return {k: c for k, c in table.items() if k in DATA_DEPENDENT and self.get(k) is None}

    def _with_defaults(self, chosen: dict[str, Choice]) -> TrainConfig:
        changes = {k: c.value for k, c in chosen.items()}
        info = dataset_info(self.dataset)
        for name in SWITCHES:  # augmentation: the data set's default where it applies (else unset)
            if self.get(name) is None and name in info.augmentations:
                changes[name] = bool(info.augment_defaults.get(name, False))
        return self.replace(**changes) if changes else self

    def check_applicable(self) -> None:
        """Refuse, for a new run, a setting that would not apply: an option of a section the
        method does not read (:func:`~esdsnn.methods.registry.unread_options`, the rule
        ``create_method`` applies) set to other than its default (or its data set's recipe value),
        an augmentation switched on, or a data option changed, for a data set it does not apply
        to. Saved configs of older versions may hold such values and are not checked."""
        base = recipe_base(self.dataset)
        changed = (k for k, v in self.to_dict().items() if v != _default(k, base))
        unread = unread_options(self.method, changed)
        if unread:
            raise ConfigError(unread_message(self.method, unread))
        info = dataset_info(self.dataset)
        for name in SWITCHES:
            if name not in info.augmentations and self.get(name):
                raise ConfigError(
                    f"--{name} does not apply to {self.dataset} (its augmentations: "
                    f"{', '.join(info.augmentations) or 'none'}); drop it"
                )
        for name, leaf in LEAVES.items():
            if leaf.section == "data" and name not in info.options and self.get(name) != leaf.default:
                owners = [d for d in list_datasets() if name in dataset_info(d).options]
                raise ConfigError(
                    f"--{name.replace('_', '-')} applies to {', '.join(owners)} only, not {self.dataset}; drop it"
                )


def _default(name: str, base: Optional[Mapping[str, Any]] = None) -> Any:
    """The default of setting ``name`` (the recipe's value where ``base``, a data set's recipe,
    sets it) in the form ``to_dict`` gives (lists, not tuples)."""
    default = base[name] if base and name in base else LEAVES[name].default
    return list(default) if isinstance(default, tuple) else default


def _renamed(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``values`` with old setting names (and their old values) replaced by the new ones, one
    notice each; an old and a new name that ask for different things are refused."""
    out = dict(values)
    for old, new in RENAMED.items():
        if old not in out:
            continue
        value = out.pop(old)
        table = RENAMED_VALUES.get(old)
        if table is not None:
            key = str(value).strip().lower()
            if key not in table:
                raise ConfigError(
                    f"{old} (in {source}) must be one of {', '.join(table)}, got {value!r}; "
                    f"it is now --{new.replace('_', '-')} {' | '.join(choices(LEAVES[new].hint) or ())}"
                )
            value = table[key]
        flag = f"--{new.replace('_', '-')}"
        if value is None:
            notice(f"'{old}' in {source} is now '{new}' ({flag}); its value is the default there, nothing to set")
            continue
        if new in out and out[new] != value:
            raise ConfigError(f"{source} sets both {old} and {new} ({out[new]!r} vs {value!r} from {old}); keep {new}")
        notice(f"'{old}' in {source} is now '{new}' ({flag}); read as {new} {value}")
        out[new] = value
    return out


class Leaf(NamedTuple):
    """One setting: its flat name, the section holding it (None: top level), type, help."""

    name: str
    section: Optional[str]
    hint: Any
    default: Any
    help: str
    resumable: bool
    changes_result: bool = True  # False: a resumable setting that leaves the results as they are


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _leaves() -> dict[str, Leaf]:
    leaves: dict[str, Leaf] = {}
    top = _hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        owner = SECTIONS.get(f.name)
        items = (
            [(None, f, top[f.name])]
            if owner is None
            else [(f.name, g, _hints(owner)[g.name]) for g in dataclasses.fields(owner)]
        )
        for section, g, hint in items:
            if g.name in leaves or g.name in SECTIONS:
                raise TypeError(f"setting {g.name!r} is declared twice in the config tree")
            default = g.default_factory() if g.default_factory is not dataclasses.MISSING else g.default
            resumable = bool(g.metadata.get("resumable"))
            leaves[g.name] = Leaf(
                g.name,
                section,
                hint,
                default,
                g.metadata.get("help", ""),
                resumable,
                not resumable or bool(g.metadata.get("changes_result")),
            )
    return leaves


_TOP = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in SECTIONS)
LEAVES: dict[str, Leaf] = _leaves()
#: Settings that may change when a run is resumed.
RESUMABLE_FIELDS: tuple[str, ...] = tuple(name for name, leaf in LEAVES.items() if leaf.resumable)
#: Settings that never change a run's results (where it runs, how it reports progress): the
#: fields a comparison may find different in a run it reuses. ``epochs`` is not one of them.
SAME_RESULT_FIELDS: tuple[str, ...] = tuple(name for name, leaf in LEAVES.items() if not leaf.changes_result)


def config_leaves() -> Iterator[Leaf]:
    """Every setting of the tree, in declaration order (for the command line)."""
    return iter(LEAVES.values())


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# ---- files ----------------------------------------------------------------------------------
def resolve_config_path(path: str | Path) -> Path:
    """``path`` if it is a file, else the ready config of that name; neither: a ConfigError that
    says how to list the ready configs."""
    from esdsnn.recipes import find_recipe_file

    if Path(path).is_file():
        return Path(path)
    found = find_recipe_file(str(path))
    if found is None:
        raise ConfigError(
            f"config file {path} not found, and no ready config has that name (esdsnn configs lists them)"
        )
    return found


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file; a missing, unreadable or malformed file raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Defaults, then the YAML file at ``path`` (if any; a file, or the name of a ready config
    such as ``cifar10_resnet18_T6``: ``esdsnn configs`` lists them), then ``overrides`` (e.g.
    CLI flags)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        values.update(TrainConfig.coerce_values(read_yaml(path), source=str(path)))
    values.update(TrainConfig.coerce_values(overrides or {}, source="the command line"))
    return TrainConfig.from_dict(values)


def save_config(config: TrainConfig, path: str | Path, notes: tuple[str, ...] = ()) -> None:
    """Write ``config`` as flat YAML (all settings, in declaration order), atomically; ``notes``
    become comment lines at the top (what a reader of the file should know, e.g. that the run was
    extended), which loading ignores."""
    header = "".join(f"# {' '.join(line.split())}\n" for line in notes)
    write_text_atomic(path, header + yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False))


__all__ = [
    "LEAVES",
    "RENAMED",
    "RESUMABLE_FIELDS",
    "SAME_RESULT_FIELDS",
    "SAVED_BEFORE",
    "SECTIONS",
    "Leaf",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "choices",
    "config_leaves",
    "load_config",
    "read_yaml",
    "save_config",
]

"""Training configuration: one dataclass, read from YAML, overridden by command-line flags.

``TrainConfig`` is the single source of truth: the CLI builds one flag per field from it, YAML
files may set any field (and nothing else: unknown keys are rejected with the list of known ones),
and every run saves its resolved config as ``config.yaml``, which loads back to an equal config.

Fields left ``None`` that depend on the data set (``arch``, ``epochs``, ``batch_size``, ``lr``,
``threads``) are filled in by :meth:`TrainConfig.resolved`: for ``digits`` a short run tuned to
finish well within 3 minutes on 2 CPU cores, otherwise the CIFAR recipe of the paper (SPEC §7).
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import yaml

from esdsnn.errors import ConfigError

CHOICES: dict[str, tuple[str, ...]] = {
    "reset": ("soft", "hard"),
    "teacher": ("reliable", "all", "main"),
    "teacher_space": ("logits", "probs"),
    "unreliable": ("drop", "uniform", "entropy"),
    "student_pass": ("bptt", "ratebp"),
    "amp": ("none", "bf16", "fp16"),
}

# Per-data-set values for the fields left None. digits: tuned so that the default ESD run reaches
# >= 96% test accuracy (spike pass) in well under 3 minutes on 2 CPU cores.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # One thread: the model is small, and two threads slow down many times over as soon as the
    # other core is busy (measured: 0.3-0.8 s vs 6-7 s per step on a loaded 2-core machine).
    "digits": {"arch": "digits_resnet", "epochs": 10, "batch_size": 64, "lr": 0.1, "threads": 1},
}
FALLBACK_DEFAULTS: dict[str, Any] = {"arch": "resnet18", "epochs": 300, "batch_size": 128, "lr": 0.1, "threads": None}

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run depends on. Build it, then call :func:`esdsnn.train.loop.train`."""

    # what to train
    method: str = _f("esd", "training method (esd, ratebp, bptt, esd-bptt, sd, ...)")
    arch: Optional[str] = _f(None, "model name; default: digits_resnet on digits, resnet18 otherwise")
    dataset: str = _f("digits", "data set name (digits, npz, ...)")
    data_path: Optional[str] = _f(None, "data file or folder (npz: the .npz file)")
    T: int = _f(4, "number of time steps")
    # optimisation
    epochs: Optional[int] = _f(None, "training epochs; default depends on the data set")
    batch_size: Optional[int] = _f(
        None, "global batch size: under torchrun each of N processes takes batch_size/N; default depends on the data set")
    lr: Optional[float] = _f(None, "initial learning rate (SGD, cosine to 0); default depends on the data set")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(5e-4, "weight decay on conv/linear weights (none on BN params and biases)")
    seed: int = _f(60, "random seed (initialisation and batch order)")
    loss_scale: Union[str, float] = _f("auto", "'auto' (1/T for RateBP methods, 1 for BPTT) or a number")
    # LIF neuron
    decay: float = _f(0.2, "membrane decay factor lambda, in (0, 1)")
    threshold: float = _f(1.0, "firing threshold")
    reset: str = _f("soft", "reset rule: soft (subtract threshold) or hard (set to v_reset)")
    v_reset: float = _f(0.0, "membrane value after a hard reset")
    detach_reset: bool = _f(True, "stop the gradient through the reset")
    learnable_decay: bool = _f(False, "learn the decay factor")
    surrogate_alpha: float = _f(4.0, "steepness of the sigmoid surrogate derivative")
    # distillation (esd, esd-bptt, sd)
    alpha: float = _f(1.0, "weight of the branch cross-entropy losses")
    beta: float = _f(0.3, "weight of the distillation losses")
    tau: float = _f(3.0, "distillation temperature")
    teacher: str = _f("reliable", "teacher: reliable (ESD), all (plain self-distillation), main")
    teacher_space: str = _f("logits", "average the teacher in logits or probs")
    unreliable: str = _f("drop", "samples without a reliable teacher: drop, uniform, entropy")
    eta: float = _f(0.1, "weight of the unreliable-sample term (uniform/entropy)")
    # ANN-teacher distillation (kd)
    teacher_run: Optional[str] = _f(None, "kd: run directory of a trained --method ann teacher")
    samd_weight: float = _f(1.0, "kd: weight of the spatial attention map distillation (SAMD)")
    nld_weight: float = _f(1.0, "kd: weight of the noisy logit distillation (NLD)")
    samd_temperature: float = _f(2.0, "kd: softmax temperature of the attention maps")
    nld_tau: float = _f(2.0, "kd: temperature of the logit distillation")
    nld_mix: float = _f(0.9, "kd: weight w of the student's own probabilities in NLD")
    student_pass: str = _f("bptt", "kd: how the student trains, bptt or ratebp")
    # training augmentation of the CIFAR recipe (data sets without augmentation ignore these)
    crop: bool = _f(True, "random crop with 4-pixel padding")
    flip: bool = _f(True, "random horizontal flip")
    autoaugment: bool = _f(True, "AutoAugment (CIFAR-10 policy)")
    cutout: bool = _f(True, "Cutout 16x16")
    # run
    out: Optional[str] = _f(None, "run directory; default runs/<timestamp>-<method>")
    threads: Optional[int] = _f(None, "torch CPU threads; default: 1 on digits, else torch's setting")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    progress: bool = _f(True, "show a progress bar per epoch (only on a terminal)")
    eval_every: int = _f(1, "evaluate on the test set every N epochs (and after the last)")
    workers: Optional[int] = _f(None, "data workers (DVS conversion, ImageNet decoding); default: the loader's")
    report: bool = _f(True, "write the firing-rate and energy report at the end of training")
    # long runs: checkpoints, precision, compilation, several processes
    save_every_steps: int = _f(0, "also save last.pt every N training steps (0: at the end of each epoch only)")
    amp: str = _f("none", "mixed precision: none, bf16 or fp16 (fp16 with a gradient scaler)")
    channels_last: bool = _f(False, "channels-last memory format for the model and image batches")
    compile: bool = _f(False, "torch.compile the neurons' time loops (the first steps compile, about 20 s)")
    sync_bn: bool = _f(False, "under torchrun: BatchNorm statistics over the global batch of all processes")
    tensorboard: bool = _f(True, "also log per-epoch metrics to TensorBoard (tb/) when tensorboard is installed")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name], "config"))
        if self.method == "sd":  # plain self-distillation *is* the all-heads teacher: record it so
            self.teacher = "all"
        self.validate()

    @classmethod
    def coerce_values(cls, values: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
        """Check the keys of ``values`` and convert each value to its field's type; unknown keys
        and ill-typed values raise :class:`ConfigError` naming ``source``."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source} must be a mapping of keys to values, got {type(values).__name__}")
        known = cls.field_names()
        unknown = [str(k) for k in values if k not in known]
        if unknown:
            raise ConfigError(
                f"unknown key(s) in {source}: {', '.join(unknown)}; known keys: {', '.join(known)}"
            )
        hints = typing.get_type_hints(cls)
        return {k: _coerce(k, v, hints[k], source) for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> "TrainConfig":
        """Build and validate a config from a mapping (missing keys take their defaults)."""
        return cls(**cls.coerce_values(values, source=source))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (coerced and validated like any other input)."""
        merged = self.to_dict()
        merged.update(changes)
        return TrainConfig.from_dict(merged)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- checks -------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` for any impossible value; return ``self``."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.T >= 1, f"T must be >= 1, got {self.T}")
        need(self.epochs is None or self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        need(0 < self.decay < 1, f"decay must be in (0, 1), got {self.decay}")
        need(self.threshold > 0, f"threshold must be > 0, got {self.threshold}")
        need(self.surrogate_alpha > 0, f"surrogate_alpha must be > 0, got {self.surrogate_alpha}")
        need(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        need(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        need(self.tau > 0, f"tau must be > 0, got {self.tau}")
        need(self.eta >= 0, f"eta must be >= 0, got {self.eta}")
        need(self.samd_weight >= 0, f"samd_weight must be >= 0, got {self.samd_weight}")
        need(self.nld_weight >= 0, f"nld_weight must be >= 0, got {self.nld_weight}")
        need(self.samd_temperature > 0, f"samd_temperature must be > 0, got {self.samd_temperature}")
        need(self.nld_tau > 0, f"nld_tau must be > 0, got {self.nld_tau}")
        need(0 <= self.nld_mix <= 1, f"nld_mix must be in [0, 1], got {self.nld_mix}")
        need(self.method != "kd" or self.teacher_run is not None,
             "method kd needs a teacher: train one with --method ann, then pass --teacher-run RUN_DIR")
        need(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        need(self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        need(self.workers is None or self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        need(self.save_every_steps >= 0, f"save_every_steps must be >= 0, got {self.save_every_steps}")
        if isinstance(self.loss_scale, str):
            need(self.loss_scale == "auto", f"loss_scale must be 'auto' or a positive number, got {self.loss_scale!r}")
        else:
            need(self.loss_scale > 0, f"loss_scale must be 'auto' or a positive number, got {self.loss_scale}")
        for name, options in CHOICES.items():
            value = getattr(self, name)
            need(value in options, f"{name} must be one of {', '.join(options)}, got {value!r}")
        need(bool(_DEVICE_RE.match(self.device)), f"device must be auto, cpu, mps, cuda or cuda:N, got {self.device!r}")
        _check_registered("method", self.method, "list_methods")
        if self.arch is not None:
            _check_registered("arch", self.arch, "list_models")
        from esdsnn.data import list_datasets

        available = list_datasets()
        if self.dataset not in available:
            planned = list_datasets(include_planned=True)
            if self.dataset in planned:
                raise ConfigError(f"dataset {self.dataset} is not available yet; available: {', '.join(available)}")
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(available)}")
        return self

    def resolved(self) -> "TrainConfig":
        """A copy with the data-set-dependent ``None`` fields filled in (``out`` stays as is)."""
        defaults = DATASET_DEFAULTS.get(self.dataset, FALLBACK_DEFAULTS)
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **changes) if changes else self


def _check_registered(what: str, value: str, lister: str) -> None:
    import esdsnn

    names_fn = getattr(esdsnn, lister, None)
    if names_fn is None:  # core not importable: create_model/create_method will check later
        return
    names = list(names_fn())
    if value not in names:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(names)}")


# ---- value coercion (YAML values and command-line strings) ------------------------------------
_NONE_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Turn ``value`` (from YAML or a flag string) into the type of field ``name``."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    optional = origin is Union and type(None) in args
    inner = [a for a in args if a is not type(None)] if origin is Union else [hint]
    where = f"{name} (in {source})"
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} must not be empty")
    if optional and str in inner and len(inner) == 1:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
        return None
    if set(inner) == {str, float}:  # loss_scale: 'auto' or a number
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return _to_float(value, where, "'auto' or a number")
    kind = inner[0]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if kind is float:
        return _to_float(value, where, "a number")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    raise TypeError(f"no coercion for field {name} of type {hint}")  # pragma: no cover


def _to_float(value: Any, where: str, expected: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be {expected}, got {value!r}")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())  # also '1e-3', which YAML 1.1 leaves a string
        except ValueError:
            raise ConfigError(f"{where} must be {expected}, got {value!r}") from None
    else:
        raise ConfigError(f"{where} must be {expected}, got {value!r}")
    if not math.isfinite(result):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    return result


# ---- files ----------------------------------------------------------------------------------
def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file; a missing, unreadable or malformed file raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
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
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (e.g. CLI flags)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(TrainConfig.coerce_values(read_yaml(path), source=str(path)))
    values.update(TrainConfig.coerce_values(overrides or {}, source="the command line"))
    return TrainConfig(**values)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``config`` as YAML (all fields, in declaration order)."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)
    Path(path).write_text(text, encoding="utf-8")

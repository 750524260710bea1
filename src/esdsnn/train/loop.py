"""The training loop: data, model and method by name; SGD + cosine; metrics, checkpoints, summary.

The loop knows nothing of the model's insides: it calls ``method(x, y)``, backpropagates
``out.loss``, steps the optimizer, and measures test accuracy with :func:`esdsnn.predict` (spike
pass, main head). ``train(config)`` runs (or, with ``resume=True``, continues) one run;
``evaluate(run_dir)`` reloads a run's checkpoint and measures its test accuracy again.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol

import torch
from torch import nn
from tqdm import tqdm

import esdsnn
from esdsnn.data import dataset_loader, load_dataset
from esdsnn.data.base import BatchSource, DataBundle
from esdsnn.errors import CheckpointError, ConfigError, TrainingDiverged
from esdsnn.train import logging as runlog
from esdsnn.train.checkpoint import BEST, LAST, load_checkpoint, load_split_state, save_checkpoint, split_state
from esdsnn.train.config import TrainConfig, save_config

Echo = Callable[[str], None]
NEURON_FIELDS = ("decay", "threshold", "reset", "v_reset", "detach_reset", "learnable_decay", "surrogate_alpha")
DISTILL_FIELDS = ("alpha", "beta", "tau", "teacher", "teacher_space", "unreliable", "eta")
KD_FIELDS = ("samd_weight", "nld_weight", "samd_temperature", "nld_tau", "nld_mix", "student_pass")
# Fields that may change when a run is resumed (they do not change the maths).
RESUMABLE_FIELDS = ("progress", "threads", "device", "eval_every")


class StopSignal(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class RunResult:
    """What :func:`train` returns: the run directory, its summary, and how it ended."""

    run_dir: Path
    summary: dict[str, Any]
    status: str  # "completed" or "interrupted"
    epoch: int = 0  # completed epochs
    step: int = 0  # batches done in the epoch after that (interrupted runs)
    steps_per_epoch: int = 0

    @property
    def test_acc(self) -> Optional[float]:
        return self.summary.get("test_acc")


@dataclass
class EvalResult:
    """What :func:`evaluate` returns."""

    test_acc: float
    correct: int
    total: int
    checkpoint: Path
    epoch: int
    T: int  # steps of the test-time pass
    step: int = 0
    config: dict[str, Any] = field(default_factory=dict)


# ---- building blocks ---------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA if available, else CPU; an unavailable device raises ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name} requested but CUDA is not available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name} requested but MPS is not available; use --device cpu")
    return device


AUGMENT_FIELDS = ("crop", "flip", "autoaugment", "cutout")


def build_data(config: TrainConfig, device: torch.device) -> DataBundle:
    options: dict[str, Any] = {}
    if "augment" in inspect.signature(dataset_loader(config.dataset)).parameters:
        from esdsnn.data.augment import AugmentConfig

        options["augment"] = AugmentConfig(**{k: getattr(config, k) for k in AUGMENT_FIELDS})
    if config.workers is not None and "workers" in inspect.signature(dataset_loader(config.dataset)).parameters:
        options["workers"] = config.workers
    bundle = load_dataset(
        config.dataset,
        data_path=config.data_path,
        batch_size=config.batch_size,
        seed=config.seed,
        device=device,
        T=config.T,
        **options,
    )
    if bundle.time_steps is not None and bundle.time_steps != config.T:
        raise ConfigError(
            f"dataset {config.dataset} gives {bundle.time_steps} frames per sample but T={config.T}"
        )
    return bundle


def build_model(config: TrainConfig, bundle: DataBundle) -> nn.Module:
    return esdsnn.create_model(
        config.arch,
        num_classes=bundle.num_classes,
        in_channels=bundle.in_channels,
        **{k: getattr(config, k) for k in NEURON_FIELDS},
    )


def build_method(config: TrainConfig, model: nn.Module, teacher: Optional[nn.Module] = None) -> nn.Module:
    """The training method around ``model``; ``kd`` also needs its trained ANN ``teacher``."""
    options: dict[str, Any] = {k: getattr(config, k) for k in DISTILL_FIELDS + KD_FIELDS}
    if config.method == "kd":
        options["teacher"] = teacher  # the ANN module (the ESD ``teacher`` choice has no meaning here)
    return esdsnn.create_method(config.method, model, T=config.T, loss_scale=config.loss_scale, **options)


def load_teacher(config: TrainConfig, bundle: DataBundle, device: torch.device) -> nn.Module:
    """The frozen ANN of the run in ``config.teacher_run`` (trained with ``--method ann`` on the
    same data set), from its last checkpoint."""
    run_dir = runlog.existing_run_dir(config.teacher_run)
    ckpt = load_checkpoint(run_dir / LAST)
    teacher_config = TrainConfig.from_dict(ckpt["config"], source=str(run_dir / LAST)).resolved()
    if teacher_config.method != "ann":
        raise ConfigError(
            f"teacher run {run_dir} was trained with --method {teacher_config.method}; kd needs a "
            f"--method ann run"
        )
    if teacher_config.dataset != config.dataset:
        raise ConfigError(f"teacher run {run_dir} was trained on {teacher_config.dataset}, not {config.dataset}")
    teacher = build_model(teacher_config, bundle)
    build_method(teacher_config, teacher)  # ann: turns the model into its ReLU twin, as in training
    try:
        teacher.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {run_dir / LAST} does not fit its model: {_brief(exc)}") from None
    return teacher.to(device).eval().requires_grad_(False)


def inference_steps(method: Optional[nn.Module], config: TrainConfig) -> int:
    """Steps of the test-time spike pass: T, unless the method says otherwise (an ANN needs 1)."""
    return int(getattr(method, "inference_T", None) or config.T)


def _brief(exc: BaseException, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit]


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: conv/linear weights with ``weight_decay``; everything else (BN parameters,
    biases, neuron parameters) without. Frozen parameters are left out."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for sub in module.modules():
        for name, p in sub.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_weight = name == "weight" and isinstance(sub, (nn.modules.conv._ConvNd, nn.Linear))
            (decay if is_weight else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(method: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """SGD with momentum and a cosine schedule stepped per epoch down to 0 (no warm-up)."""
    optimizer = torch.optim.SGD(
        parameter_groups(method, config.weight_decay), lr=config.lr, momentum=config.momentum
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs, eta_min=0.0)
    return optimizer, scheduler


def test_accuracy(model: nn.Module, batches: BatchSource, T: int) -> tuple[int, int]:
    """``(correct, total)`` of the spike pass, main head (the only accuracy esdsnn reports)."""
    correct = total = 0
    for x, y in batches:
        logits = esdsnn.predict(model, x, T)
        correct += int((logits.argmax(-1) == y).sum())
        total += int(y.numel())
    return correct, total


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _all_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


@contextlib.contextmanager
def _threads(n: Optional[int]) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _InterruptFlag:
    """Set by the first Ctrl-C (the loop then saves a checkpoint after the current step); a
    second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    @contextlib.contextmanager
    def installed(self) -> Iterator["_InterruptFlag"]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals can only be caught in the main thread
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            self._set = True
            signal.signal(signal.SIGINT, previous if callable(previous) else signal.default_int_handler)

        signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


class _EitherStop:
    def __init__(self, *flags: Optional[StopSignal]) -> None:
        self.flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


# ---- training ------------------------------------------------------------------------------------
def resume_config(run_dir: str | Path, overrides: Optional[dict[str, Any]] = None) -> TrainConfig:
    """The config of the run in ``run_dir`` (from its last checkpoint), with ``overrides`` of the
    fields that may change on resume (progress, threads, device, eval_every)."""
    run_dir = runlog.existing_run_dir(run_dir)
    ckpt = load_checkpoint(run_dir / LAST)
    overrides = dict(overrides or {})
    banned = sorted(k for k in overrides if k not in RESUMABLE_FIELDS)
    if banned:
        raise ConfigError(
            f"--resume continues the saved config of {run_dir}; {', '.join(banned)} cannot change "
            f"(only {', '.join(RESUMABLE_FIELDS)} can)"
        )
    values = dict(ckpt["config"])
    values.update(TrainConfig.coerce_values(overrides, source="the command line"))
    values["out"] = str(run_dir)
    return TrainConfig(**values)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    stop: Optional[StopSignal] = None,
    echo: Optional[Echo] = None,
) -> RunResult:
    """Run (or with ``resume``, continue the run in ``config.out``) and return its result.

    Writes the run directory as it goes. The first Ctrl-C (or ``stop.is_set()``) saves a
    checkpoint after the current step and returns with status ``"interrupted"``; a NaN/inf loss
    raises :class:`TrainingDiverged` (the last good checkpoint stays). ``echo`` receives one line
    per epoch.
    """
    config = config.resolved()
    paths = {k: str(Path(getattr(config, k)).expanduser().resolve())
             for k in ("data_path", "teacher_run") if getattr(config, k) is not None}
    if paths:  # absolute, so that eval and resume work from any folder
        config = config.replace(**paths)
    with _threads(config.threads), _InterruptFlag().installed() as interrupt:
        return _train(config, resume, _EitherStop(interrupt, stop), echo or (lambda line: None))


def _train(config: TrainConfig, resume: bool, stop: StopSignal, echo: Echo) -> RunResult:
    started = time.perf_counter()
    device = resolve_device(config.device)
    ckpt: Optional[dict[str, Any]] = None
    if resume:
        if not config.out:
            raise ConfigError("resume needs the run directory (config.out)")
        run_dir = runlog.existing_run_dir(config.out)
        ckpt = load_checkpoint(run_dir / LAST)

    torch.manual_seed(config.seed)
    bundle = build_data(config, device)
    model = build_model(config, bundle)
    teacher = load_teacher(config, bundle, device) if config.method == "kd" else None
    method = build_method(config, model, teacher).to(device)
    optimizer, scheduler = make_optimizer(method, config)
    eval_T = inference_steps(method, config)

    if ckpt is None:
        run_dir = runlog.new_run_dir(config.out, config.method)
        config = config.replace(out=str(run_dir))
        save_config(config, run_dir / runlog.CONFIG_FILE)
    metrics = runlog.MetricsLog(run_dir / runlog.METRICS_FILE)

    state = _RunState()
    if ckpt is not None:
        load_split_state(method, model, ckpt["model"], ckpt.get("extra", {}))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        state = _RunState.from_dict(ckpt.get("progress", {}), epoch=int(ckpt["epoch"]), step=int(ckpt.get("step", 0)))
        if state.epoch >= config.epochs:
            echo(f"the run in {run_dir} is already complete ({state.epoch} epochs)")
            return RunResult(run_dir, runlog.read_summary(run_dir), "completed", state.epoch, 0, len(bundle.train))
        metrics.truncate(state.epoch)
        echo(f"resuming {run_dir} after epoch {state.epoch}" + (f", step {state.step}" if state.step else ""))
    else:
        echo(
            f"{config.method} on {config.dataset}: {config.arch}, T={config.T}, {config.epochs} epochs, "
            f"batch {config.batch_size}, lr {config.lr:g}, {device}, {torch.get_num_threads()} thread(s) -> {run_dir}"
        )

    def elapsed() -> float:  # seconds of this run, earlier sessions of a resumed run included
        return state.wall_s + time.perf_counter() - started

    def checkpoint(path: Path) -> Path:
        model_state, extra = split_state(method, model)
        return save_checkpoint(path, {
            "model": model_state,
            "extra": extra,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "progress": {**state.to_dict(), "wall_s": elapsed()},
            "rng": torch.get_rng_state(),
            "config": config.to_dict(),
        })

    def summary(status: str) -> dict[str, Any]:
        data = {
            "test_acc": state.test_acc,
            "method": config.method,
            "arch": config.arch,
            "T": config.T,
            "epochs": state.epoch,
            "wall_s": round(elapsed(), 3),
            "dataset": config.dataset,
            "status": status,
            "test_correct": state.test_correct,
            "test_total": state.test_total,
            "best_test_acc": state.best_test_acc,
            "best_epoch": state.best_epoch,
            "train_acc": state.train_acc,
            "epochs_planned": config.epochs,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "seed": config.seed,
            "num_params": count_parameters(model),
            "num_params_training": count_parameters(method),
            "esdsnn": esdsnn.__version__,
            "checkpoint": LAST,
            **runlog.environment(device),
        }
        runlog.write_json(run_dir / runlog.SUMMARY_FILE, data)
        return data

    for epoch in range(state.epoch + 1, config.epochs + 1):
        method.train()
        bundle.train.set_epoch(epoch - 1)
        lr = optimizer.param_groups[0]["lr"]
        epoch_started = time.perf_counter()
        skip = state.step
        bar = tqdm(
            total=len(bundle.train), initial=skip, desc=f"epoch {epoch}/{config.epochs}",
            leave=False, disable=None if config.progress else True, unit="batch", dynamic_ncols=True,
        )
        try:
            for i, (x, y) in enumerate(bundle.train):
                if i < skip:
                    continue  # resuming inside this epoch: the order is replayed, done batches skipped
                out = method(x, y)
                loss_value = float(out.parts.get("loss", float(out.loss.detach())))
                if not math.isfinite(loss_value):
                    summary("diverged")
                    raise _diverged(run_dir, epoch, i + 1, lr, f"the loss is {loss_value}")
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                state.add_batch(out.parts, out.logits.detach(), y)
                bar.update(1)
                bar.set_postfix(loss=f"{state.mean('loss'):.4f}", acc=f"{state.train_correct / max(state.seen, 1):.3f}", refresh=False)
                state.step = i + 1
                if stop.is_set() and state.step < len(bundle.train):
                    state.epoch_s += time.perf_counter() - epoch_started
                    checkpoint(run_dir / LAST)
                    return RunResult(run_dir, summary("interrupted"), "interrupted", state.epoch, state.step, len(bundle.train))
        finally:
            bar.close()

        if not _all_finite(method):
            summary("diverged")
            raise _diverged(run_dir, epoch, state.step, lr, "the weights are no longer finite")
        scheduler.step()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, **state.epoch_parts()}
        row["train_acc"] = state.train_correct / max(state.seen, 1)
        state.train_acc = row["train_acc"]
        test_acc = None
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            correct, total = test_accuracy(model, bundle.test, eval_T)
            test_acc = correct / max(total, 1)
            state.test_acc, state.test_correct, state.test_total = test_acc, correct, total
        row["test_acc"] = test_acc
        row["epoch_s"] = state.epoch_s + time.perf_counter() - epoch_started
        metrics.write(row)
        echo(runlog.epoch_line(epoch, config.epochs, row))

        improved = test_acc is not None and (state.best_test_acc is None or test_acc > state.best_test_acc)
        if improved:
            state.best_test_acc, state.best_epoch = test_acc, epoch
        state.end_epoch(epoch)
        if improved:
            checkpoint(run_dir / BEST)
        checkpoint(run_dir / LAST)
        if stop.is_set() and epoch < config.epochs:
            return RunResult(run_dir, summary("interrupted"), "interrupted", state.epoch, 0, len(bundle.train))

    final = summary("completed")
    if config.report and config.method != "ann":  # firing rates mean nothing for the ReLU twin
        final = _write_report(run_dir, model, bundle, eval_T, device, final, echo)
    return RunResult(run_dir, final, "completed", state.epoch, 0, len(bundle.train))


def _write_report(run_dir: Path, model: nn.Module, bundle: DataBundle, T: int, device: torch.device,
                  summary: dict[str, Any], echo: Echo) -> dict[str, Any]:
    """Firing rates, SOPs and the energy estimate on the test set, merged into summary.json."""
    from esdsnn.analysis.report import write_report

    try:
        extra = write_report(run_dir, model, bundle.test, T, device=device)
    except Exception as exc:  # the run itself is saved: a failed report must not lose it
        echo(f"warning: the report could not be written ({_brief(exc)}); run `esdsnn report --run {run_dir}`")
        return summary
    summary = {**summary, **extra}
    runlog.write_json(run_dir / runlog.SUMMARY_FILE, summary)
    echo(f"average firing rate {extra['avg_firing_rate']:.4f}; energy estimate {extra['energy_mj_per_sample']:.4g} mJ/sample; report in {run_dir / 'report.md'}")
    return summary


def _diverged(run_dir: Path, epoch: int, step: int, lr: float, what: str) -> TrainingDiverged:
    last = run_dir / LAST
    kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    return TrainingDiverged(
        f"training diverged at epoch {epoch}, step {step}: {what} (lr {lr:g}); lower --lr, or check "
        f"the data for NaN/inf or unnormalised values; {kept}"
    )


@dataclass
class _RunState:
    """Counters of the run so far (saved in checkpoints so that a resumed run continues them)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # batches done in the current epoch
    part_sums: dict[str, float] = field(default_factory=dict)
    seen: int = 0
    train_correct: int = 0
    epoch_s: float = 0.0
    wall_s: float = 0.0
    train_acc: Optional[float] = None
    test_acc: Optional[float] = None
    test_correct: Optional[int] = None
    test_total: Optional[int] = None
    best_test_acc: Optional[float] = None
    best_epoch: Optional[int] = None

    def add_batch(self, parts: dict[str, float], logits: torch.Tensor, y: torch.Tensor) -> None:
        n = int(y.numel())
        for k, v in parts.items():
            self.part_sums[k] = self.part_sums.get(k, 0.0) + float(v) * n
        self.seen += n
        self.train_correct += int((logits.argmax(-1) == y).sum())

    def mean(self, key: str) -> float:
        return self.part_sums.get(key, float("nan")) / max(self.seen, 1)

    def epoch_parts(self) -> dict[str, float]:
        return {k: v / max(self.seen, 1) for k, v in self.part_sums.items()}

    def end_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0
        self.part_sums, self.seen, self.train_correct, self.epoch_s = {}, 0, 0, 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("epoch", "step")}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, epoch: int, step: int) -> "_RunState":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(epoch=epoch, step=step, **known)


# ---- evaluation ----------------------------------------------------------------------------------
def evaluate(
    run_dir: str | Path,
    *,
    checkpoint: str = "last",
    device: Optional[str] = None,
    threads: Optional[int] = None,
) -> EvalResult:
    """Reload the model of a run (``last`` or ``best`` checkpoint, or a file path) and measure its
    test accuracy (spike pass, main head) on the run's data set and split with the run's T."""
    run_dir = runlog.existing_run_dir(run_dir)
    names = {"last": LAST, "best": BEST}
    path = run_dir / names[checkpoint] if checkpoint in names else Path(checkpoint)
    ckpt = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(ckpt["config"], source=str(path))
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path} holds a config this esdsnn cannot use: {exc}") from None
    config = config.resolved()
    with _threads(threads if threads is not None else config.threads):
        dev = resolve_device(device or config.device)
        bundle = build_data(config, dev)
        model = build_model(config, bundle)
        # Build the method as in training when that changes the model (ann: the ReLU twin); the
        # kd student is a plain SNN, and its teacher is not needed here.
        method = build_method(config, model) if config.method != "kd" else None
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {path} does not fit model {config.arch}: {_brief(exc)}") from None
        model.to(dev)
        steps = inference_steps(method, config)
        correct, total = test_accuracy(model, bundle.test, steps)
    return EvalResult(
        test_acc=correct / max(total, 1), correct=correct, total=total, checkpoint=path,
        epoch=int(ckpt["epoch"]), T=steps, step=int(ckpt.get("step", 0)), config=config.to_dict(),
    )

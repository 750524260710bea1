"""The training loop: data, model and method by name; SGD + cosine; metrics, checkpoints, summary.

The loop knows nothing of the model's insides: it calls ``method(x, y)``, backpropagates
``out.loss``, steps the optimizer, and measures test accuracy with :func:`esdsnn.predict` (spike
pass, main head). ``train(config)`` runs (or, with ``resume=True``, continues) one run;
``evaluate(run_dir)`` reloads a run's checkpoint and measures its test accuracy again.

Runs can be left running:

- **Exact resume.** ``last.pt`` is saved at the end of every epoch, every ``save_every_steps``
  steps, on Ctrl-C / SIGTERM and before the first step; it holds the model, branches, optimizer,
  scheduler, gradient scaler, counters, the position in the epoch's batch order and every RNG
  state. The batch order and augmentation of an epoch depend only on (seed, epoch), so a resumed
  run replays the epoch's order, skips the batches already done and ends with bit-identical
  weights and metrics (CPU, same settings), whether it stopped cleanly or was killed.
- **Several processes** (torchrun): see :mod:`esdsnn.train.distributed`.
- **Mixed precision / compilation**: ``amp`` (``bf16``, ``fp16`` with a GradScaler),
  ``channels_last``, ``compile`` (the neurons' time loops, see
  :func:`esdsnn.neurons.lif.compile_neurons_`).
- **Guards**: a NaN/inf loss (or non-finite weights) stops the run naming the step and the usual
  fixes, and a checkpoint is only ever written from finite weights, so the last good one stays;
  a run directory that cannot be written, or lacks the space for the checkpoints, is refused
  before training starts.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import esdsnn
from esdsnn.data import dataset_loader, load_dataset
from esdsnn.data.base import BatchSource, DataBundle, TensorBatches
from esdsnn.errors import CheckpointError, ConfigError, TrainingDiverged
from esdsnn.train import distributed
from esdsnn.train import logging as runlog
from esdsnn.train.checkpoint import (
    BEST, LAST, PREVIOUS, all_finite, checkpoint_nbytes, describe, load_checkpoint, load_latest,
    load_split_state, optimizer_tensors, rng_state, save_checkpoint, set_rng_state, split_state,
)
from esdsnn.train.config import TrainConfig, save_config
from esdsnn.train.distributed import DistContext

Echo = Callable[[str], None]
NEURON_FIELDS = ("decay", "threshold", "reset", "v_reset", "detach_reset", "learnable_decay", "surrogate_alpha")
DISTILL_FIELDS = ("alpha", "beta", "tau", "teacher", "teacher_space", "unreliable", "eta")
KD_FIELDS = ("samd_weight", "nld_weight", "samd_temperature", "nld_tau", "nld_mix", "student_pass")
# Fields that may change when a run is resumed (they do not change what is computed, beyond the
# floating-point details of another device or compiled kernels).
RESUMABLE_FIELDS = ("progress", "threads", "device", "eval_every", "save_every_steps", "compile",
                    "tensorboard", "report", "workers")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    signal: Optional[int] = None  # the signal that interrupted the run (SIGINT, SIGTERM), if any
    rank: int = 0  # this process's rank (only rank 0 writes files and prints)

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


def build_data(config: TrainConfig, device: torch.device, ctx: Optional[DistContext] = None) -> DataBundle:
    """The data set of ``config`` on ``device``. Under several processes (``ctx``), loaders that
    take a ``sampler_factory`` (ImageNet) get a sharding sampler and the per-process batch
    ``batch_size / world_size``; in-memory data is loaded whole and sharded by :func:`shard_data`."""
    options: dict[str, Any] = {}
    accepted = inspect.signature(dataset_loader(config.dataset)).parameters
    if "augment" in accepted:
        from esdsnn.data.augment import AugmentConfig

        options["augment"] = AugmentConfig(**{k: getattr(config, k) for k in AUGMENT_FIELDS})
    if config.workers is not None and "workers" in accepted:
        options["workers"] = config.workers
    batch_size = config.batch_size
    if ctx is not None and ctx.distributed:
        if batch_size % ctx.world_size:
            raise ConfigError(
                f"batch_size {batch_size} is the global batch and must divide evenly over the "
                f"{ctx.world_size} processes; use a multiple of {ctx.world_size}"
            )
        if "sampler_factory" in accepted:
            options["sampler_factory"] = distributed.sampler_factory(ctx)
            batch_size //= ctx.world_size
    bundle = load_dataset(
        config.dataset,
        data_path=config.data_path,
        batch_size=batch_size,
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


def shard_data(bundle: DataBundle, ctx: DistContext, config: TrainConfig) -> tuple[BatchSource, BatchSource]:
    """``(train, test)`` batches of this process: in-memory sets sliced by :class:`ShardedBatches`
    (also with one process: it resumes mid-epoch without re-preparing the skipped batches),
    sampler-sharded loaders as they are."""
    sampled = "sampler_factory" in inspect.signature(dataset_loader(config.dataset)).parameters
    train, test = bundle.train, bundle.test
    if ctx.distributed and sampled:
        return train, test
    if isinstance(train, TensorBatches):
        train = distributed.ShardedBatches(train, ctx.rank, ctx.world_size)
    elif ctx.distributed:
        raise ConfigError(f"dataset {config.dataset} cannot be split across processes (run it in one process)")
    if ctx.distributed and isinstance(test, TensorBatches):
        test = distributed.ShardedBatches(test, ctx.rank, ctx.world_size, train=False)
    elif ctx.distributed:
        raise ConfigError(f"the test set of {config.dataset} cannot be split across processes")
    return train, test


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
    """Set by the first Ctrl-C (SIGINT) or SIGTERM: the loop then saves a checkpoint after the
    current step and returns. A second Ctrl-C interrupts at once; a second SIGTERM terminates."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def is_set(self) -> bool:
        return self.signum is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator["_InterruptFlag"]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals can only be caught in the main thread
            return
        previous = {s: signal.getsignal(s) for s in self.SIGNALS}

        def handler(signum: int, frame: Any) -> None:
            if self.signum is None:
                self.signum = signum
            before = previous[signum]
            if signum == signal.SIGINT and not callable(before):
                before = signal.default_int_handler
            signal.signal(signum, before if before is not None else signal.SIG_DFL)

        for s in self.SIGNALS:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, before in previous.items():
                signal.signal(s, before if before is not None else signal.SIG_DFL)


class _EitherStop:
    def __init__(self, *flags: Optional[StopSignal]) -> None:
        self.flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


def _stderr_warning(line: str) -> None:
    import sys

    print(f"esdsnn: warning: {line}", file=sys.stderr, flush=True)


# ---- training ------------------------------------------------------------------------------------
def resume_config(run_dir: str | Path, overrides: Optional[dict[str, Any]] = None) -> TrainConfig:
    """The config of the run in ``run_dir`` (from its latest readable checkpoint), with
    ``overrides`` of the fields that may change on resume (:data:`RESUMABLE_FIELDS`)."""
    run_dir = runlog.existing_run_dir(run_dir)
    _, ckpt, _ = load_latest(run_dir)
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
    try:
        return TrainConfig.from_dict(values, source=str(run_dir / LAST))
    except ConfigError as exc:
        raise CheckpointError(f"the checkpoint of {run_dir} holds a config this esdsnn cannot use: {exc}") from None


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    stop: Optional[StopSignal] = None,
    echo: Optional[Echo] = None,
    warn: Optional[Echo] = None,
) -> RunResult:
    """Run (or with ``resume``, continue the run in ``config.out``) and return its result.

    Writes the run directory as it goes. The first Ctrl-C or SIGTERM (or ``stop.is_set()``) saves
    a checkpoint after the current step and returns with status ``"interrupted"``; a NaN/inf loss
    raises :class:`TrainingDiverged` (the last good checkpoint stays). ``echo`` receives one line
    per epoch, ``warn`` one line per warning (default: stderr). Started by torchrun with several
    processes, it trains data-parallel (:mod:`esdsnn.train.distributed`); only rank 0 echoes,
    warns and writes.
    """
    config = config.resolved()
    paths = {k: str(Path(getattr(config, k)).expanduser().resolve())
             for k in ("data_path", "teacher_run") if getattr(config, k) is not None}
    if paths:  # absolute, so that eval and resume work from any folder
        config = config.replace(**paths)
    interrupt = _InterruptFlag()
    with _threads(config.threads), interrupt.installed(), \
            distributed.session(config.device, resolve_device) as ctx:
        quiet: Echo = lambda line: None  # noqa: E731
        session = _Session(
            config, ctx, _EitherStop(interrupt, stop), interrupt,
            echo=(echo or quiet) if ctx.is_main else quiet,
            warn=(warn or _stderr_warning) if ctx.is_main else quiet,
        )
        return session.run(resume)


class _Session:
    """One training session of a run (a fresh one, or a resumed one) in this process."""

    def __init__(self, config: TrainConfig, ctx: DistContext, stop: StopSignal, interrupt: _InterruptFlag,
                 echo: Echo, warn: Echo) -> None:
        self.config = config
        self.ctx = ctx
        self.stop = stop
        self.interrupt = interrupt
        self.echo = echo
        self.warn = warn
        self.device = ctx.device
        self.started = time.perf_counter()
        self.state = _RunState()
        self.git = runlog.git_revision() if ctx.is_main else None

    # ---- set-up ----------------------------------------------------------------------------------
    def run(self, resume: bool) -> RunResult:
        config, ctx = self.config, self.ctx
        if config.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"--amp fp16 needs a CUDA device (half-precision kernels and a gradient scaler); "
                              f"on {self.device.type} use --amp bf16 or none")
        ckpt: Optional[dict[str, Any]] = None
        if resume:
            if not config.out:
                raise ConfigError("resume needs the run directory (config.out)")
            self.run_dir = runlog.existing_run_dir(config.out)
            path, ckpt, problems = load_latest(self.run_dir)
            for line in problems:
                self.warn(line)
            if problems:
                self.warn(f"resuming from {path} ({describe(ckpt)}) instead")

        _seed_everything(config.seed)
        bundle = build_data(config, self.device, ctx)
        self.bundle = bundle
        self.train_batches, self.test_batches = shard_data(bundle, ctx, config)
        model = build_model(config, bundle)
        teacher = load_teacher(config, bundle, self.device) if config.method == "kd" else None
        method = build_method(config, model, teacher)
        if ctx.distributed and config.sync_bn:
            distributed.convert_sync_batchnorm(method)
        method.to(self.device)
        if config.channels_last:
            method.to(memory_format=torch.channels_last)
            if teacher is not None:
                teacher.to(memory_format=torch.channels_last)
        if config.compile:
            from esdsnn.neurons.lif import compile_neurons_

            compile_neurons_(model)
        self.model, self.method = model, method
        self.optimizer, self.scheduler = make_optimizer(method, config)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.amp_dtype = AMP_DTYPES.get(config.amp)
        self.eval_T = inference_steps(method, config)
        need = checkpoint_nbytes(method)

        if ckpt is None:
            def create() -> str:
                run_dir = runlog.new_run_dir(config.out, config.method)
                runlog.check_run_dir(run_dir, 4 * need + 2**20)
                save_config(config.replace(out=str(run_dir)), run_dir / runlog.CONFIG_FILE)
                return str(run_dir)

            self.run_dir = Path(ctx.main_only(create))
            self.config = config = config.replace(out=str(self.run_dir))
        else:
            ctx.main_only(lambda: runlog.check_run_dir(self.run_dir, 2 * need + 2**20))
        ctx.main_only(lambda: self._write_env(resumed=ckpt is not None))
        self.metrics = runlog.MetricsLog(self.run_dir / runlog.METRICS_FILE) if ctx.is_main else None

        if ckpt is not None:
            done = self._restore(ckpt)
            if done is not None:
                return done
        else:
            self.echo(
                f"{config.method} on {config.dataset}: {config.arch}, T={config.T}, {config.epochs} epochs, "
                f"batch {config.batch_size}" + (f" ({ctx.world_size} processes)" if ctx.distributed else "")
                + f", lr {config.lr:g}, {self.device}, {torch.get_num_threads()} thread(s)"
                + (f", amp {config.amp}" if self.amp_dtype is not None else "") + f" -> {self.run_dir}"
            )
            self.checkpoint(LAST)  # a run always has a checkpoint to resume from

        self.step_module = distributed.wrap_ddp(method, ctx) if ctx.distributed else method
        self.tensorboard = None
        if ctx.is_main and config.tensorboard:
            self.tensorboard = runlog.TensorBoardLog.open(self.run_dir, purge_step=self.state.epoch + 1 if ckpt else None)
        try:
            return self._epochs()
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()

    def _restore(self, ckpt: dict[str, Any]) -> Optional[RunResult]:
        """Load the checkpoint's state; a :class:`RunResult` if the run is already complete."""
        config, state = self.config, self.state
        load_split_state(self.method, self.model, ckpt["model"], ckpt.get("extra", {}))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        self.state = state = _RunState.from_dict(ckpt.get("progress", {}), epoch=int(ckpt["epoch"]),
                                                 step=int(ckpt.get("step", 0)))
        data = ckpt.get("data", {})
        if data.get("world_size", self.ctx.world_size) != self.ctx.world_size:
            self.warn(f"the run was saved with {data['world_size']} process(es) and resumes with "
                      f"{self.ctx.world_size}: the global batches stay the same, the summation order changes")
        if data.get("steps_per_epoch", len(self.train_batches)) != len(self.train_batches):
            raise CheckpointError(
                f"the checkpoint of {self.run_dir} was saved with {data['steps_per_epoch']} steps per epoch, "
                f"this data gives {len(self.train_batches)}: resume with the same data and number of processes"
            )
        if state.epoch >= config.epochs:
            self.echo(f"the run in {self.run_dir} is already complete ({state.epoch} epochs)")
            summary = self.ctx.main_only(lambda: runlog.read_summary(self.run_dir))
            return self._result(summary, "completed")
        if self.metrics is not None:
            self.metrics.truncate(state.epoch)
        self.echo(f"resuming {self.run_dir} after epoch {state.epoch}" + (f", step {state.step}" if state.step else ""))
        return None

    def _write_env(self, resumed: bool) -> None:
        env = runlog.run_environment(self.device, self.ctx.world_size, git=self.git, amp=self.config.amp,
                                     compile=self.config.compile, channels_last=self.config.channels_last)
        path = self.run_dir / runlog.ENV_FILE
        if resumed and path.is_file():
            try:
                import json

                first = json.loads(path.read_text(encoding="utf-8"))
                first["resumed"] = [*first.get("resumed", []), env]
                env = first
            except (OSError, ValueError):
                pass
        runlog.write_json(path, env)

    # ---- the epochs ------------------------------------------------------------------------------
    def _epochs(self) -> RunResult:
        config, state, ctx = self.config, self.state, self.ctx
        steps = len(self.train_batches)
        for epoch in range(state.epoch + 1, config.epochs + 1):
            self.method.train()
            self.train_batches.set_epoch(epoch - 1)
            lr = self.optimizer.param_groups[0]["lr"]
            self.epoch_started = time.perf_counter()
            stop_now = False
            bar = tqdm(
                total=steps, initial=state.step, desc=f"epoch {epoch}/{config.epochs}", leave=False,
                disable=(None if config.progress else True) if ctx.is_main else True,
                unit="batch", dynamic_ncols=True,
            )
            try:
                for i, (x, y) in distributed.batches_from(self.train_batches, state.step):
                    stop_now = self._step(x, y, epoch, i, lr)
                    bar.update(1)
                    bar.set_postfix(loss=f"{state.mean('loss'):.4f}",
                                    acc=f"{state.train_correct / max(state.seen, 1):.3f}", refresh=False)
                    state.step = i + 1
                    if state.step >= steps:
                        break
                    if stop_now:
                        state.epoch_s += time.perf_counter() - self.epoch_started
                        self.checkpoint(LAST)
                        return self._result(self.summary("interrupted"), "interrupted")
                    if config.save_every_steps and state.step % config.save_every_steps == 0:
                        self.checkpoint(LAST)
            finally:
                bar.close()
            self._end_epoch(epoch, lr)
            stop_now = stop_now or not ctx.all_true(not self.stop.is_set())
            if stop_now and epoch < config.epochs:
                return self._result(self.summary("interrupted"), "interrupted")

        final = self.summary("completed")
        if ctx.is_main and config.report and config.method != "ann":  # firing rates mean nothing for the ReLU twin
            final = _write_report(self.run_dir, self.model, self.bundle, self.eval_T, self.device, final, self.echo)
        return self._result(final, "completed")

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, i: int, lr: float) -> bool:
        """One training step; returns whether some process was asked to stop."""
        ctx, state = self.ctx, self.state
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = self.step_module(x, y)
        n = int(y.numel())
        keys = list(out.parts)
        loss_local = float(out.parts["loss"]) if "loss" in out.parts else float(out.loss.detach())
        correct = int((out.logits.detach().argmax(-1) == y).sum())
        totals = [float(n), *(float(out.parts[k]) * n for k in keys), float(correct), loss_local * n,
                  1.0 if self.stop.is_set() else 0.0]
        if ctx.distributed:  # one small all-reduce: metrics, the NaN check and the stop flag agree
            totals = ctx.sum(torch.tensor(totals, dtype=torch.float64)).tolist()
        n_global = totals[0]
        loss_value = totals[-2] / n_global
        if not math.isfinite(loss_value):
            self.summary("diverged")
            raise self._diverged(epoch, i + 1, lr, f"the loss is {loss_value}")
        loss = out.loss
        if ctx.distributed and n * ctx.world_size != n_global:  # an uneven last batch: weigh by size
            loss = loss * (n * ctx.world_size / n_global)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        state.add_totals(keys, totals)
        return totals[-1] > 0

    def _end_epoch(self, epoch: int, lr: float) -> None:
        config, state, ctx = self.config, self.state, self.ctx
        ctx.broadcast_buffers(self.method)  # rank 0's BN statistics: what is saved is what is evaluated
        if not ctx.all_true(all_finite(self.method.state_dict().values())):
            self.summary("diverged")
            raise self._diverged(epoch, state.step, lr, "the weights are no longer finite")
        self.scheduler.step()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, **state.epoch_parts()}
        row["train_acc"] = state.train_correct / max(state.seen, 1)
        state.train_acc = row["train_acc"]
        test_acc = None
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            correct, total = test_accuracy(self.model, self.test_batches, self.eval_T)
            if ctx.distributed:
                correct, total = (int(v) for v in ctx.sum(torch.tensor([correct, total], dtype=torch.float64)).tolist())
            test_acc = correct / max(total, 1)
            state.test_acc, state.test_correct, state.test_total = test_acc, correct, total
        row["test_acc"] = test_acc
        row["epoch_s"] = state.epoch_s + time.perf_counter() - self.epoch_started
        if self.metrics is not None:
            self.metrics.write(row)
        if self.tensorboard is not None:
            self.tensorboard.write(row)
        self.echo(runlog.epoch_line(epoch, config.epochs, row))

        improved = test_acc is not None and (state.best_test_acc is None or test_acc > state.best_test_acc)
        if improved:
            state.best_test_acc, state.best_epoch = test_acc, epoch
        state.end_epoch(epoch)
        if improved:
            self.checkpoint(BEST)
        self.checkpoint(LAST)

    # ---- files -----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds of this run, earlier sessions of a resumed run included."""
        return self.state.wall_s + time.perf_counter() - self.started

    def checkpoint(self, name: str) -> None:
        """Save the whole training state as ``name`` (rank 0), never from non-finite values: then
        the run stops as diverged and the last good checkpoint stays."""
        state, ctx = self.state, self.ctx
        finite = all_finite(self.method.state_dict().values()) and all_finite(optimizer_tensors(self.optimizer))
        if not ctx.all_true(finite):
            self.summary("diverged")
            raise self._diverged(state.epoch + (1 if state.step else 0), state.step,
                                 self.optimizer.param_groups[0]["lr"], "the weights are no longer finite")
        if not ctx.is_main:
            return
        model_state, extra = split_state(self.method, self.model)
        progress = {**state.to_dict(), "wall_s": self.elapsed()}
        if state.step:  # mid-epoch: the time of the epoch so far
            progress["epoch_s"] = state.epoch_s + time.perf_counter() - self.epoch_started
        save_checkpoint(self.run_dir / name, {
            "model": model_state,
            "extra": extra,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "epoch": state.epoch,
            "step": state.step,
            "progress": progress,
            "data": {"epoch": state.epoch, "step": state.step, "steps_per_epoch": len(self.train_batches),
                     "world_size": ctx.world_size, "batch_size": self.config.batch_size, "seed": self.config.seed},
            "rng": rng_state(cuda=self.device.type == "cuda"),
            "config": self.config.to_dict(),
            "esdsnn": esdsnn.__version__,
        }, keep_previous=self.run_dir / PREVIOUS if name == LAST else None)

    def summary(self, status: str) -> dict[str, Any]:
        config, state = self.config, self.state
        data = {
            "test_acc": state.test_acc,
            "method": config.method,
            "arch": config.arch,
            "T": config.T,
            "epochs": state.epoch,
            "wall_s": round(self.elapsed(), 3),
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
            "num_params": count_parameters(self.model),
            "num_params_training": count_parameters(self.method),
            "esdsnn": esdsnn.__version__,
            "git": self.git,
            "amp": config.amp,
            "checkpoint": LAST,
            **runlog.environment(self.device, self.ctx.world_size),
        }
        if self.ctx.is_main:
            runlog.write_json(self.run_dir / runlog.SUMMARY_FILE, data)
        return data

    def _result(self, summary: dict[str, Any], status: str) -> RunResult:
        return RunResult(self.run_dir, summary, status, self.state.epoch, self.state.step if status == "interrupted" else 0,
                         len(self.train_batches), self.interrupt.signum if status == "interrupted" else None, self.ctx.rank)

    def _diverged(self, epoch: int, step: int, lr: float, what: str) -> TrainingDiverged:
        return _diverged(self.run_dir, epoch, step, lr, what, amp=self.config.amp)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


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

def _diverged(run_dir: Path, epoch: int, step: int, lr: float, what: str, amp: str = "none") -> TrainingDiverged:
    last = run_dir / LAST
    kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    precision = "; with --amp fp16 try --amp bf16 or none" if amp == "fp16" else ""
    return TrainingDiverged(
        f"training diverged at epoch {epoch}, step {step}: {what} (lr {lr:g}); lower --lr, or check "
        f"the data for NaN/inf or unnormalised values{precision}; {kept}"
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

    def add_totals(self, keys: list[str], totals: list[float]) -> None:
        """Add one step's ``[n, n·part_1, ..., n·part_k, correct, ...]`` (summed over processes)."""
        for k, v in zip(keys, totals[1 : 1 + len(keys)]):
            self.part_sums[k] = self.part_sums.get(k, 0.0) + v
        self.seen += int(totals[0])
        self.train_correct += int(totals[1 + len(keys)])

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
@dataclass
class LoadedRun:
    """A saved run rebuilt for evaluation: its config, trained model, data and inference steps."""

    config: TrainConfig
    model: nn.Module
    bundle: DataBundle
    steps: int
    device: torch.device
    checkpoint: Path
    ckpt: dict[str, Any]


def load_run(run_dir: str | Path, *, checkpoint: str = "last", device: Optional[str] = None,
             threads: Optional[int] = None) -> LoadedRun:
    """Rebuild a run's model from a checkpoint (``last``, ``best`` or a file) with its data set."""
    run_dir = runlog.existing_run_dir(run_dir)
    names = {"last": LAST, "best": BEST}
    path = run_dir / names[checkpoint] if checkpoint in names else Path(checkpoint)
    ckpt = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(ckpt["config"], source=str(path))
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path} holds a config this esdsnn cannot use: {exc}") from None
    config = config.resolved()
    n_threads = threads if threads is not None else config.threads
    if n_threads is not None:
        torch.set_num_threads(n_threads)
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
    return LoadedRun(config, model.to(dev), bundle, inference_steps(method, config), dev, path, ckpt)


def evaluate(
    run_dir: str | Path,
    *,
    checkpoint: str = "last",
    device: Optional[str] = None,
    threads: Optional[int] = None,
) -> EvalResult:
    """Reload the model of a run (``last`` or ``best`` checkpoint, or a file path) and measure its
    test accuracy (spike pass, main head) on the run's data set and split with the run's T."""
    with _threads(None):  # restores the caller's thread count
        run = load_run(run_dir, checkpoint=checkpoint, device=device, threads=threads)
        correct, total = test_accuracy(run.model, run.bundle.test, run.steps)
    config, path, ckpt, steps = run.config, run.checkpoint, run.ckpt, run.steps
    return EvalResult(
        test_acc=correct / max(total, 1), correct=correct, total=total, checkpoint=path,
        epoch=int(ckpt["epoch"]), T=steps, step=int(ckpt.get("step", 0)), config=config.to_dict(),
    )

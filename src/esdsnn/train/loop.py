"""Training a run: ``train(config)`` runs (or, with ``resume=True``, continues) one run.

Runs can be left running:

- **Exact resume.** ``last.pt`` is saved at the end of every epoch, every ``save_every_steps``
  steps, on Ctrl-C / SIGTERM and before the first step; it holds the model, branches, optimizer,
  scheduler, gradient scaler, counters, the position in the epoch's batch order and every RNG
  state. The batch order and augmentation of an epoch depend only on (seed, epoch), so a resumed
  run replays the epoch's order, skips the batches already done and ends with bit-identical
  weights and metrics (CPU, same settings), whether it stopped cleanly or was killed.
- **Several processes** (torchrun): see :mod:`esdsnn.train.distributed`.
- **Precision / compilation**: ``precision`` (``32`` by default; ``bf16-mixed``, ``16-mixed``
  with a GradScaler: :mod:`esdsnn.runtime.precision`), ``channels_last``, ``compile`` (the
  neurons' time loops, see :func:`esdsnn.neurons.lif.compile_neurons_`).
- **One writer**: the run directory is locked (:mod:`esdsnn.runs.lock`, rank 0) from before the
  first write to the end, so a second ``train`` or ``--resume`` on it is refused; a folder whose
  run stopped before its first checkpoint starts afresh in place (:mod:`esdsnn.runs.claim`).
- **Guards**: a NaN/inf loss (or non-finite weights) stops the run naming the step and the usual
  fixes, and a checkpoint is only ever written from finite weights, so the last good one stays;
  a run directory that cannot be written, or lacks the space for the checkpoints, is refused
  before training starts; running out of memory or disk later ends the run with one line naming
  the fix (:mod:`esdsnn.train.failures`).
- **After training**: callbacks given to :func:`train` (the CLI passes the firing-rate and energy
  report) get the trained model and add their figures to ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from esdsnn.config import RESUMABLE_FIELDS, TrainConfig, read_yaml
from esdsnn.errors import CheckpointError, ConfigError
from esdsnn.runs import files as runfiles
from esdsnn.runs.build import resolve_device, torch_threads
from esdsnn.runs.checkpoint import load_latest
from esdsnn.runs.claim import stopped_before_first_checkpoint
from esdsnn.runtime.precision import use_precision
from esdsnn.train import distributed
from esdsnn.train.interrupts import EitherStop, InterruptFlag, StopSignal
from esdsnn.train.logging import stderr_warning
from esdsnn.train.session import AfterTraining, Echo, RunResult, Session


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    stop: Optional[StopSignal] = None,
    echo: Optional[Echo] = None,
    warn: Optional[Echo] = None,
    after_training: Sequence[AfterTraining] = (),
) -> RunResult:
    """Run (or with ``resume``, continue the run in ``config.run.out``) and return its result.

    Writes the run directory as it goes. The first Ctrl-C or SIGTERM (or ``stop.is_set()``) saves
    a checkpoint after the current step and returns with status ``"interrupted"``; a NaN/inf loss
    raises :class:`~esdsnn.errors.TrainingDiverged` (the last good checkpoint stays). ``echo``
    receives one line per epoch, ``warn`` one line per warning (default: stderr);
    ``after_training`` callbacks run when the run completes. Started by torchrun with several
    processes, it trains data-parallel; only rank 0 echoes, warns and writes.
    """
    if not resume:
        config.check_applicable()
    threads = config.resolved().run.threads  # the session fills in the rest once the data is read
    paths = {
        k: str(Path(config.get(k)).expanduser().resolve())
        for k in ("data_path", "teacher_run")
        if config.get(k) is not None
    }
    if paths:  # absolute, so that eval and resume work from any folder
        config = config.replace(**paths)
    interrupt = InterruptFlag()
    with torch_threads(threads), interrupt.installed(), distributed.session(config.run.device, resolve_device) as ctx:
        quiet: Echo = lambda line: None  # noqa: E731
        session = Session(
            config,
            ctx,
            EitherStop(interrupt, stop),
            interrupt,
            echo=(echo or quiet) if ctx.is_main else quiet,
            warn=(warn or stderr_warning) if ctx.is_main else quiet,
            after_training=tuple(after_training),
        )
        with use_precision(config.run.precision):
            return session.run(resume)


def resume_config(run_dir: str | Path, overrides: Optional[dict[str, Any]] = None) -> TrainConfig:
    """The config of the run in ``run_dir`` (from its latest readable checkpoint; from its
    ``config.yaml`` when it stopped before its first checkpoint, to start afresh in place), with
    ``overrides`` of the settings that may change on resume (:data:`~esdsnn.config.RESUMABLE_FIELDS`)."""
    run_dir = runfiles.existing_run_dir(run_dir)
    if stopped_before_first_checkpoint(run_dir):
        source = run_dir / runfiles.CONFIG_FILE
        saved = TrainConfig.coerce_values(read_yaml(source), source=str(source))
    else:
        try:
            path, ckpt, _ = load_latest(run_dir)
        except CheckpointError as exc:  # nothing to continue from: what is left is to train it again
            raise CheckpointError(
                f"{exc}; retrain it: esdsnn train --config {run_dir / runfiles.CONFIG_FILE} --out NEW_DIR"
            ) from None
        source, saved = path, ckpt["config"]
    overrides = dict(overrides or {})
    banned = sorted(k for k in overrides if k not in RESUMABLE_FIELDS)
    if banned:
        raise ConfigError(
            f"--resume continues the saved config of {run_dir}; {', '.join(banned)} cannot change "
            f"(only {', '.join(RESUMABLE_FIELDS)} can)"
        )
    values = dict(saved)
    values.setdefault("lr_schedule", "epoch")  # saved before the setting existed: the cosine moved per epoch
    values.update(TrainConfig.coerce_values(overrides, source="the command line"))
    values["out"] = str(run_dir)
    try:
        return TrainConfig.from_saved(values, source=str(source))
    except ConfigError as exc:
        raise CheckpointError(f"the checkpoint of {run_dir} holds a config this esdsnn cannot use: {exc}") from None


__all__ = ["RunResult", "resume_config", "train"]

"""One training session of a run in this process: set up, epochs, steps, evaluation, checkpoints.

The session knows nothing of the model's insides: it calls ``method(x, y)``, backpropagates
``out.loss``, steps the optimiser and measures test accuracy with :func:`esdsnn.predict` (spike
pass, main head). What it must know about the method it asks the method's spec.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import esdsnn
from esdsnn.config import TrainConfig, save_config
from esdsnn.errors import CheckpointError, ConfigError, TrainingDiverged, brief
from esdsnn.layers.sync_norm import convert_sync_batchnorm
from esdsnn.methods import method_spec
from esdsnn.models.anatomy import check_output_contract
from esdsnn.models.base import SpikingNet
from esdsnn.neurons.lif import compile_neurons_
from esdsnn.runs import files as runfiles
from esdsnn.runs.build import build_method, build_model, build_training_data, load_teacher
from esdsnn.runs.checkpoint import BEST, LAST, PREVIOUS, describe, load_checkpoint, load_latest, save_checkpoint
from esdsnn.runs.claim import Claim, check_out_early, claim_existing, claim_new
from esdsnn.runs.fingerprint import data_fingerprint
from esdsnn.runs.load import TrainedModel
from esdsnn.runtime.precision import autocast_for, cpu_capability, precision_native, precision_spec
from esdsnn.train import distributed
from esdsnn.train.distributed import DistContext
from esdsnn.train.failures import diverged_error, training_failure
from esdsnn.train.init_from import init_from
from esdsnn.train.interrupts import InterruptFlag, StopSignal
from esdsnn.train.logging import TensorBoardLog, epoch_line, run_header
from esdsnn.train.optim import extend_schedule, make_optimizer
from esdsnn.train.progress import EpochProgress, StepWatch, is_terminal
from esdsnn.train.records import summary_record, write_env
from esdsnn.train.selection import Selection
from esdsnn.train.state import (
    RunResult,
    RunState,
    all_finite,
    checkpoint_nbytes,
    load_split_state,
    optimizer_tensors,
    replan_notes,
    rng_state,
    set_rng_state,
    split_state,
)

Echo = Callable[[str], None]
#: Called on rank 0 when a run completes, with its trained model; returns extra summary fields.
AfterTraining = Callable[[TrainedModel, Echo], Optional[dict]]


class Session:
    """One training session of a run (a fresh one, or a resumed one) in this process."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistContext,
        stop: StopSignal,
        interrupt: InterruptFlag,
        echo: Echo,
        warn: Echo,
        after_training: tuple[AfterTraining, ...] = (),
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.stop = stop
        self.interrupt = interrupt
        self.echo = echo
        self.warn = warn
        self.after_training = after_training
        self.device = ctx.device
        self.spec = method_spec(config.method)
        self.started = time.perf_counter()
        self.state = RunState()
        self.git = runfiles.git_revision() if ctx.is_main else None

    # ---- set-up ----------------------------------------------------------------------------------
    def run(self, resume: bool) -> RunResult:
        """The run, holding its directory's lock (rank 0) from before the first write to the end;
        memory or a disk that runs out ends it with one line naming the fix."""
        self.claim: Optional[Claim] = None
        self.run_dir: Optional[Path] = None
        self.saved: Optional[str] = None  # where the last checkpoint written stands, in words
        try:
            return self._run(resume)
        except (OSError, RuntimeError, MemoryError) as exc:
            failure = training_failure(exc, self.run_dir, self.config, self.spec, self.saved)
            if failure is None:
                raise
            raise failure from None
        finally:
            if self.claim is not None:
                self.claim.lock.release()

    def _run(self, resume: bool) -> RunResult:
        config, ctx = self.config, self.ctx
        if config.run.precision == "16-mixed" and self.device.type != "cuda":
            raise ConfigError(
                f"--precision 16-mixed needs a CUDA device (half-precision kernels and a gradient "
                f"scaler); on {self.device.type} use --precision bf16-mixed or 32"
            )
        if not precision_native(config.run.precision, self.device):
            self.warn(
                f"--precision {config.run.precision}: this {self.device.type} ({cpu_capability()}) has no native "
                f"bfloat16, so it is emulated and many times slower than --precision 32"
            )
        ckpt = self._checkpoint_to_resume() if resume else None
        if not resume:  # before the data is read: a folder another process writes, or one that holds a run
            ctx.main_only(lambda: check_out_early(config.run.out))
        _seed_everything(config.seed)
        self._build()
        config = self.config
        self.init_line = None
        if ckpt is None and config.init_from:
            self.init_line = init_from(self.method, self.model, config.init_from).line()
        need = checkpoint_nbytes(self.method)
        if ckpt is None:
            self.run_dir = Path(ctx.main_only(lambda: self._create_run_dir(need)))
            self.config = config = config.replace(out=str(self.run_dir))
        else:
            ctx.main_only(lambda: runfiles.check_run_dir(self.run_dir, 2 * need + 2**20))
        self.fingerprint = data_fingerprint(config.data_path) if ctx.is_main else None
        ctx.main_only(lambda: self._write_env(resumed=ckpt is not None))
        self.metrics = runfiles.MetricsLog(self.run_dir / runfiles.METRICS_FILE) if ctx.is_main else None
        if ckpt is not None:
            done = self._restore(ckpt)
            if done is not None:
                return done
        else:
            self.echo(self._header())
            if self.init_line:
                self.echo(self.init_line)
            self.checkpoint(LAST)  # a run always has a checkpoint to resume from

        self.step_module = distributed.wrap_ddp(self.method, ctx) if ctx.distributed else self.method
        self.tensorboard = None
        if ctx.is_main and config.run.tensorboard:
            self.tensorboard = TensorBoardLog.open(self.run_dir, purge_step=self.state.epoch + 1 if ckpt else None)
        try:
            return self._epochs()
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()
            self.step_module = self.method  # DDP holds the process group: let it go before the group ends

    def _checkpoint_to_resume(self) -> Optional[dict[str, Any]]:
        """The checkpoint to continue from, once this process holds the run's lock; None for a
        run that stopped before its first checkpoint (started afresh in place)."""
        if not self.config.run.out:
            raise ConfigError("resume needs the run directory (config.run.out)")
        run_dir = runfiles.existing_run_dir(self.config.run.out)
        afresh = self.ctx.main_only(lambda: self._claim(claim_existing(run_dir, self.warn)))
        self.run_dir = run_dir
        if afresh:
            return None
        path, ckpt, problems = load_latest(self.run_dir)
        for line in problems:
            self.warn(line)
        if problems:
            self.warn(f"resuming from {path} ({describe(ckpt)}) instead")
        return ckpt

    def _build(self) -> None:
        """Data (sharded), model, method, teacher, optimiser, scaler."""
        ctx = self.ctx
        self.config, bundle, self.chosen = build_training_data(self.config, self.device)
        config = self.config
        if ctx.distributed and config.optim.batch_size % ctx.world_size:
            raise ConfigError(
                f"batch_size {config.optim.batch_size} is the global batch and must divide evenly over the "
                f"{ctx.world_size} processes; use a multiple of {ctx.world_size}"
            )
        self.bundle = bundle
        self.train_batches = bundle.train.shard(ctx.rank, ctx.world_size)
        self.test_batches = bundle.test.shard(ctx.rank, ctx.world_size, train=False) if ctx.distributed else bundle.test
        self.val_batches = None
        if bundle.val is not None:
            self.val_batches = (
                bundle.val.shard(ctx.rank, ctx.world_size, train=False) if ctx.distributed else bundle.val
            )
        # threads chosen from the free cores (not by the user) drop to one when steps slow down
        self.watch = StepWatch(guard="threads" in self.chosen and not ctx.distributed)
        model = build_model(config, bundle)
        if not isinstance(model, SpikingNet):  # a model of one's own: its output, checked once before training
            check_output_contract(model, bundle.input_shape)
        teacher = load_teacher(config, bundle, self.device) if self.spec.teacher_method else None
        method = build_method(config, model, teacher, input_shape=bundle.input_shape)
        if ctx.distributed and config.run.sync_bn:
            convert_sync_batchnorm(method)
        method.to(self.device)
        if config.run.channels_last:
            method.to(memory_format=torch.channels_last)
            if teacher is not None:
                teacher.to(memory_format=torch.channels_last)
        if config.run.compile:
            compile_neurons_(model)
        self.model, self.method = model, method
        self.optimizer, self.scheduler = make_optimizer(method, config.optim, len(self.train_batches))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision_spec(config.run.precision).grad_scaler)
        self.eval_T = self.spec.inference_steps(config.T)
        self.selection = Selection(model, self.val_batches, self.test_batches, self.eval_T, ctx)

    def _claim(self, claim: Claim) -> bool:
        self.claim = claim
        return claim.afresh

    def _create_run_dir(self, need: int) -> str:
        """The run's directory, locked: a new one, or (``--resume`` of a run without a checkpoint)
        the one already claimed, started afresh in place."""
        config = self.config
        if self.claim is None:
            self._claim(claim_new(config.run.out, config.method, self.warn))
        run_dir = self.claim.run_dir
        runfiles.check_run_dir(run_dir, 4 * need + 2**20)
        save_config(config.replace(out=str(run_dir)), run_dir / runfiles.CONFIG_FILE)
        return str(run_dir)

    def _header(self) -> str:
        return run_header(
            self.config,
            self.bundle,
            self.chosen,
            self.model,
            self.method,
            self.device,
            self.ctx.world_size,
            self.run_dir,
        )

    def _restore(self, ckpt: dict[str, Any]) -> Optional[RunResult]:
        """Load the checkpoint's state; a :class:`RunResult` if the run is already complete."""
        load_split_state(self.method, self.model, ckpt["model"], ckpt.get("extra", {}))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        planned, done = int(ckpt["config"].get("epochs") or self.config.optim.epochs), int(ckpt["epoch"])
        if self.config.optim.epochs != planned:
            self.echo(
                extend_schedule(
                    self.optimizer, self.scheduler, done=done, planned=planned, epochs=self.config.optim.epochs
                )
            )
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        self.state = state = RunState.from_dict(
            ckpt.get("progress", {}), epoch=int(ckpt["epoch"]), step=int(ckpt.get("step", 0))
        )
        data = ckpt.get("data", {})
        if data.get("world_size", self.ctx.world_size) != self.ctx.world_size:
            self.warn(
                f"the run was saved with {data['world_size']} process(es) and resumes with "
                f"{self.ctx.world_size}: the global batches stay the same, the summation order changes"
            )
        if data.get("steps_per_epoch", len(self.train_batches)) != len(self.train_batches):
            raise CheckpointError(
                f"the checkpoint of {self.run_dir} was saved with {data['steps_per_epoch']} steps per epoch, "
                f"this data gives {len(self.train_batches)}: resume with the same data and number of processes"
            )
        if state.epoch >= self.config.optim.epochs:
            self.echo(f"the run in {self.run_dir} is already complete ({state.epoch} epochs)")
            summary = self.ctx.main_only(lambda: runfiles.read_summary(self.run_dir))
            return self._result(summary, "completed")
        if self.config.optim.epochs != planned and done:  # in epoch 1 the longer run is matched exactly
            state.replans.append({"from": planned, "to": self.config.optim.epochs, "after_epoch": done})
        if self.ctx.is_main:  # config.yaml: the settings the run now has (and how its epochs changed)
            save_config(self.config, self.run_dir / runfiles.CONFIG_FILE, notes=replan_notes(state.replans))
        if self.metrics is not None:
            self.metrics.truncate(state.epoch)
        self.echo(f"resuming {self.run_dir} after epoch {state.epoch}" + (f", step {state.step}" if state.step else ""))
        return None

    def _write_env(self, resumed: bool) -> None:
        write_env(self, resumed)

    # ---- the epochs ------------------------------------------------------------------------------
    def _epochs(self) -> RunResult:
        config, state, ctx = self.config, self.state, self.ctx
        epochs, steps = config.optim.epochs, len(self.train_batches)
        for epoch in range(state.epoch + 1, epochs + 1):
            self.method.train()
            self.train_batches.set_epoch(epoch - 1)
            lr = self.optimizer.param_groups[0]["lr"]
            self.epoch_started = time.perf_counter()
            stop_now = False
            shown = config.run.progress and ctx.is_main
            progress = EpochProgress(
                epoch,
                epochs,
                steps,
                state.step,
                bar=shown and is_terminal(),
                log_every=config.run.log_every if shown else 0.0,
                echo=self.echo,
                epochs_left=epochs - epoch,
            )
            try:
                for i, (x, y) in enumerate(self.train_batches.iter_from(state.step), state.step):
                    began = time.perf_counter()
                    stop_now = self._step(x, y, epoch, i, lr)
                    state.step = i + 1
                    progress.update(
                        state.step,
                        int(y.shape[0]) * ctx.world_size,
                        state.mean("loss"),
                        state.train_correct / max(state.seen, 1),
                    )
                    for line in self.watch.after_step(
                        time.perf_counter() - began, steps, steps - state.step, epochs - epoch
                    ):
                        self.echo(line)
                    if state.step >= steps:
                        break
                    if stop_now:
                        state.epoch_s += time.perf_counter() - self.epoch_started
                        self.checkpoint(LAST)
                        return self._result(self.summary("interrupted"), "interrupted")
                    if config.run.save_every_steps and state.step % config.run.save_every_steps == 0:
                        self.checkpoint(LAST)
            finally:
                progress.close()
            self._end_epoch(epoch, lr)
            stop_now = stop_now or not ctx.all_true(not self.stop.is_set())
            if stop_now and epoch < epochs:
                return self._result(self.summary("interrupted"), "interrupted")
        return self._result(self._finish(self.summary("completed")), "completed")

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, i: int, lr: float) -> bool:
        """One training step; returns whether some process was asked to stop."""
        ctx, state = self.ctx, self.state
        if self.config.run.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(self.config.run.precision, self.device):
            out = self.step_module(x, y)
        n = int(y.numel())
        keys = list(out.parts)
        loss_local = float(out.parts["loss"]) if "loss" in out.parts else float(out.loss.detach())
        correct = int((out.logits.detach().argmax(-1) == y).sum())
        totals = [
            float(n),
            *(float(out.parts[k]) * n for k in keys),
            float(correct),
            loss_local * n,
            1.0 if self.stop.is_set() else 0.0,
        ]
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
        self.scheduler.after_step()
        state.add_totals(keys, totals)
        return totals[-1] > 0

    def _end_epoch(self, epoch: int, lr: float) -> None:
        """Metrics of the epoch; evaluation for selection (validation split, else the test set as
        the paper's recipes do) and, with a validation split, the test set after the last epoch
        for the final and the best weights; checkpoints."""
        config, state, ctx = self.config, self.state, self.ctx
        ctx.broadcast_buffers(self.method)  # rank 0's BN statistics: what is saved is what is evaluated
        if not ctx.all_true(all_finite(self.method.state_dict().values())):
            self.summary("diverged")
            raise self._diverged(epoch, state.step, lr, "the weights are no longer finite")
        self.scheduler.after_epoch()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, **state.epoch_parts()}
        row["train_acc"] = state.train_acc = state.train_correct / max(state.seen, 1)
        state.firing_rate = row.get("firing_rate")
        last = epoch == config.optim.epochs
        improved = self.selection.end_epoch(
            state, row, epoch, evaluate=epoch % config.run.eval_every == 0 or last, last=last
        )
        row["epoch_s"] = state.epoch_s + time.perf_counter() - self.epoch_started
        if self.metrics is not None:
            self.metrics.write(row)
        if self.tensorboard is not None:
            self.tensorboard.write(row)
        self.echo(epoch_line(epoch, config.optim.epochs, row))
        state.end_epoch(epoch)
        if improved:
            self.checkpoint(BEST)
        if last and self.val_batches is not None:
            self.selection.test_best(
                state, lambda: load_checkpoint(self.run_dir / BEST, map_location=self.device)["model"]
            )
        self.checkpoint(LAST)

    def _finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Run the after-training callbacks (rank 0) and merge what they return into the summary;
        a failing callback costs a warning, never the run."""
        if not self.ctx.is_main or not self.after_training:
            return summary
        trained = TrainedModel(
            self.run_dir,
            self.config,
            self.spec,
            self.model,
            self.bundle.test,
            self.eval_T,
            self.device,
            tuple(self.bundle.input_shape),
        )
        for callback in self.after_training:
            try:
                extra = callback(trained, self.echo)
            except Exception as exc:  # the run itself is saved: an extra must not lose it
                self.echo(
                    f"warning: {getattr(callback, '__name__', 'an after-training step')} failed ({brief(exc, 300)})"
                )
                continue
            if extra:
                summary = {**summary, **extra}
        runfiles.write_json(self.run_dir / runfiles.SUMMARY_FILE, summary)
        return summary

    # ---- files -----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds of this run, earlier sessions of a resumed run included."""
        return self.state.wall_s + time.perf_counter() - self.started

    def checkpoint(self, name: str) -> None:
        """Save the whole training state as ``name`` (rank 0) — ``best.pt`` holds the weights
        only — never from non-finite values: then the run stops as diverged and the last good
        checkpoint stays."""
        state, ctx = self.state, self.ctx
        finite = all_finite(self.method.state_dict().values()) and all_finite(optimizer_tensors(self.optimizer))
        if not ctx.all_true(finite):
            self.summary("diverged")
            raise self._diverged(
                state.epoch + (1 if state.step else 0),
                state.step,
                self.optimizer.param_groups[0]["lr"],
                "the weights are no longer finite",
            )
        if not ctx.is_main:
            return
        model_state, extra = split_state(self.method, self.model)
        progress = {**state.to_dict(), "wall_s": self.elapsed()}
        if state.step:  # mid-epoch: the time of the epoch so far
            progress["epoch_s"] = state.epoch_s + time.perf_counter() - self.epoch_started
        if name == BEST:  # to evaluate, report, export or --init-from; resuming takes last.pt
            save_checkpoint(
                self.run_dir / name,
                {
                    "model": model_state,
                    "extra": extra,
                    "epoch": state.epoch,
                    "step": 0,
                    "weights_only": True,
                    "selected_on": self.selection.selected_on,
                    "selection_acc": state.best_selection,
                    "config": self.config.to_dict(),
                    "esdsnn": esdsnn.__version__,
                },
            )
            return
        save_checkpoint(
            self.run_dir / name,
            {
                "model": model_state,
                "extra": extra,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "epoch": state.epoch,
                "step": state.step,
                "progress": progress,
                "data": {
                    "epoch": state.epoch,
                    "step": state.step,
                    "steps_per_epoch": len(self.train_batches),
                    "world_size": ctx.world_size,
                    "batch_size": self.config.optim.batch_size,
                    "seed": self.config.seed,
                },
                "rng": rng_state(cuda=self.device.type == "cuda"),
                "config": self.config.to_dict(),
                "esdsnn": esdsnn.__version__,
            },
            keep_previous=self.run_dir / PREVIOUS if name == LAST else None,
        )
        self.saved = describe({"epoch": state.epoch, "step": state.step})

    def summary(self, status: str) -> dict[str, Any]:
        """Write (rank 0) and return ``summary.json`` (:func:`esdsnn.train.records.summary_record`)."""
        data = summary_record(self, status)
        if self.ctx.is_main:
            runfiles.write_json(self.run_dir / runfiles.SUMMARY_FILE, data)
        return data

    def _result(self, summary: dict[str, Any], status: str) -> RunResult:
        interrupted = status == "interrupted"
        return RunResult(
            self.run_dir,
            summary,
            status,
            self.state.epoch,
            self.state.step if interrupted else 0,
            len(self.train_batches),
            self.interrupt.signum if interrupted else None,
            self.ctx.rank,
        )

    def _diverged(self, epoch: int, step: int, lr: float, what: str) -> TrainingDiverged:
        return diverged_error(self.run_dir, epoch, step, lr, what, precision=self.config.run.precision)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


__all__ = ["AfterTraining", "RunResult", "Session", "diverged_error"]  # diverged_error: esdsnn.train.failures

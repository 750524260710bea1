"""What a training session records about itself: ``summary.json`` (its figures, settings and
environment) and ``env.json`` (where it ran, once per session)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import esdsnn
from esdsnn.runs import files as runfiles
from esdsnn.runs.checkpoint import LAST
from esdsnn.runtime.precision import precision_native

if TYPE_CHECKING:  # pragma: no cover
    from esdsnn.train.session import Session


def summary_record(session: Session, status: str) -> dict[str, Any]:
    """``summary.json``: accuracies as fractions (test: final weights; best_*: the epoch selected on
    ``selected_on``), the data's shape and fingerprint, how the epochs were planned (and re-planned
    by ``--resume --epochs``), the environment."""
    config, state, bundle = session.config, session.state, session.bundle
    return {
        "test_acc": state.test_acc,
        "method": config.method,
        "arch": config.arch,
        "T": config.T,
        "epochs": state.epoch,
        "wall_s": round(session.elapsed(), 3),
        "dataset": config.dataset,
        "status": status,
        "spiking": session.spec.spiking,
        "test_correct": state.test_correct,
        "test_total": state.test_total,
        "test_loss": state.test_loss,
        "selected_on": session.selection.selected_on,
        "best_epoch": state.best_epoch,
        "best_test_acc": state.best_test_acc,
        "val_acc": state.val_acc,
        "best_val_acc": state.best_val_acc,
        "train_acc": state.train_acc,
        "firing_rate": state.firing_rate,
        **bundle.facts(),
        "val_fraction": config.val_fraction,
        "epochs_planned": config.optim.epochs,
        "epochs_replanned": state.replans or None,
        "batch_size": config.optim.batch_size,
        "lr": config.optim.lr,
        "seed": config.seed,
        "num_params": sum(p.numel() for p in session.model.parameters()),
        "num_params_training": sum(p.numel() for p in session.method.parameters()),
        "init_from": config.init_from,
        "data_fingerprint": session.fingerprint,
        "esdsnn": esdsnn.__version__,
        "git": session.git,
        "precision": config.run.precision,
        "precision_native": precision_native(config.run.precision, session.device),
        "checkpoint": LAST,
        **runfiles.environment(session.device, session.ctx.world_size),
    }


def write_env(session: Session, resumed: bool) -> None:
    """``env.json``: written when the run starts; each resumed session adds its own entry."""
    run = session.config.run
    env = runfiles.run_environment(
        session.device,
        session.ctx.world_size,
        git=session.git,
        precision=run.precision,
        precision_native=precision_native(run.precision, session.device),
        compile=run.compile,
        channels_last=run.channels_last,
        data_fingerprint=session.fingerprint,
    )
    assert session.run_dir is not None  # set before the run's files are written
    path = session.run_dir / runfiles.ENV_FILE
    if resumed and path.is_file():
        try:
            first = json.loads(path.read_text(encoding="utf-8"))
            first["resumed"] = [*first.get("resumed", []), env]
            env = first
        except (OSError, ValueError):
            pass
    runfiles.write_json(path, env)


__all__ = ["summary_record", "write_env"]

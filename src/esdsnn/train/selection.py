"""Evaluation during training and the choice of the best epoch.

With a validation split (data without a recipe) the best epoch is the one with the highest
validation accuracy (a tie goes to the lower validation loss: small splits tie often) and the
test set is measured once, after the last epoch, for the final and the best weights. Without
one (the paper's recipes) the test set is measured every ``eval_every`` epochs and the best epoch
is the one with the highest test accuracy, as the paper selects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import nn

from esdsnn.runs.load import Measured, measure
from esdsnn.train.distributed import DistContext
from esdsnn.train.state import RunState


class Selection:
    """Measures ``model`` on the validation and test batches (summed over processes) and keeps
    the run's best epoch in its :class:`RunState`."""

    def __init__(self, model: nn.Module, val: Any, test: Any, steps: int, ctx: DistContext) -> None:
        self.model, self.val, self.test, self.steps, self.ctx = model, val, test, steps, ctx
        self.best_weights: Optional[dict[str, torch.Tensor]] = None  # this session's best, on every process

    @property
    def selected_on(self) -> str:
        return "val" if self.val is not None else "test"

    def measure(self, batches: Any) -> Measured:
        figures = measure(self.model, batches, self.steps)
        if self.ctx.distributed:
            correct, total, loss_sum = self.ctx.sum(
                torch.tensor([figures.correct, figures.total, figures.loss_sum], dtype=torch.float64)
            ).tolist()
            figures = Measured(int(correct), int(total), loss_sum)
        return figures

    def record_test(self, state: RunState, row: dict[str, Any]) -> float:
        test = self.measure(self.test)
        state.test_acc, state.test_correct, state.test_total, state.test_loss = (
            test.acc,
            test.correct,
            test.total,
            test.loss,
        )
        row["test_acc"], row["test_loss"] = test.acc, test.loss
        return test.acc

    def end_epoch(self, state: RunState, row: dict[str, Any], epoch: int, *, evaluate: bool, last: bool) -> bool:
        """Measure what this epoch needs into ``state`` and ``row``; whether it is the best so far."""
        if not evaluate:
            return False
        if self.val is None:
            selection = self.record_test(state, row)
            improved = state.best_selection is None or selection > state.best_selection
            if improved:
                state.best_test_acc = selection
        else:
            val = self.measure(self.val)
            row["val_acc"], row["val_loss"] = state.val_acc, state.val_loss = selection, loss = val.acc, val.loss
            best_loss = state.best_val_loss if state.best_val_loss is not None else math.inf
            improved = (
                state.best_selection is None
                or selection > state.best_selection
                or (selection == state.best_selection and loss < best_loss)
            )
            if improved:
                state.best_val_acc, state.best_val_loss = selection, loss
                self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if last:
                self.record_test(state, row)
        if improved:
            state.best_selection, state.best_epoch = selection, epoch
        return improved

    def test_best(self, state: RunState, read_best: Callable[[], dict[str, torch.Tensor]]) -> None:
        """The test accuracy of the best (validation-selected) weights, measured once at the end;
        ``read_best`` gives them when this session has not seen them (a resumed run)."""
        if state.best_epoch is None or state.best_epoch == state.epoch:
            state.best_test_acc = state.test_acc
            return
        final = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.best_weights if self.best_weights is not None else read_best())
        state.best_test_acc = self.measure(self.test).acc
        self.model.load_state_dict(final)


__all__ = ["Selection"]

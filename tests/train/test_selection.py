"""The best epoch: chosen on the validation split when there is one (a tie goes to the lower
validation loss), on the test set only without one; checked against scripted measurements whose
best epochs on validation and on test differ, so that selecting on the wrong split is caught."""

import torch
from torch import nn

from esdsnn.runs.load import Measured
from esdsnn.train import selection
from esdsnn.train.distributed import DistContext
from esdsnn.train.selection import Selection
from esdsnn.train.state import RunState

# epoch -> (accuracy, mean loss) of the weights after that epoch, on 100 samples
VAL = {1: (0.50, 1.0), 2: (0.80, 0.9), 3: (0.80, 0.7), 4: (0.60, 0.5)}
TEST = {1: (0.90, 0.2), 2: (0.50, 0.6), 3: (0.70, 0.4), 4: (0.95, 0.1)}


class _Split(list):
    def __init__(self, name):
        super().__init__()
        self.name = name


def _scripted(model, batches, T):
    """What measuring gives: the table of the split, at the epoch the weights belong to."""
    epoch = int(model.weight.item())
    acc, loss = (VAL if batches.name == "val" else TEST)[epoch]
    _scripted.calls.append((batches.name, epoch))
    return Measured(round(acc * 100), 100, loss * 100)


def _train_four_epochs(monkeypatch, val):
    monkeypatch.setattr(selection, "measure", _scripted)
    _scripted.calls = []
    model = nn.Linear(1, 1, bias=False)
    chosen = Selection(model, val, _Split("test"), steps=1, ctx=DistContext())
    state = RunState()
    for epoch in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(epoch)  # "training": the weights of this epoch
        chosen.end_epoch(state, {}, epoch, evaluate=True, last=epoch == 4)
        state.epoch = epoch
    chosen.test_best(state, read_best=lambda: {"weight": torch.full((1, 1), float(state.best_epoch))})
    return state, model


def test_with_a_validation_split_the_best_epoch_is_the_best_on_validation(monkeypatch):
    state, model = _train_four_epochs(monkeypatch, _Split("val"))
    # independent: the highest validation accuracy, ties to the lowest validation loss
    expected = max(VAL, key=lambda e: (VAL[e][0], -VAL[e][1]))
    assert expected == 3
    assert state.best_epoch == expected and state.best_val_acc == VAL[3][0]
    assert state.best_test_acc == TEST[3][0]  # the test accuracy of the selected weights
    assert state.test_acc == TEST[4][0]  # the final weights, measured after the last epoch
    assert model.weight.item() == 4  # the final weights are put back after measuring the best
    # the test set is measured only at the end: the last epoch's weights and the best ones
    assert [c for c in _scripted.calls if c[0] == "test"] == [("test", 4), ("test", 3)]


def test_without_a_validation_split_the_best_epoch_is_the_best_on_test(monkeypatch):
    state, _ = _train_four_epochs(monkeypatch, None)
    assert state.best_epoch == max(TEST, key=lambda e: TEST[e][0]) == 4
    assert state.best_test_acc == TEST[4][0] and state.best_val_acc is None

"""training_curves.png from a known metrics.csv: which lines each panel holds, with what data."""

import csv
import math

import pytest

from esdsnn.analysis.plots import plot_training_curves, training_curves_figure

PNG = b"\x89PNG\r\n\x1a\n"
COLUMNS = [
    "epoch",
    "lr",
    "loss",
    "ce_main",
    "ce_branches",
    "kd",
    "acc_main",
    "acc_head0",
    "acc_head1",
    "firing_rate",
    "train_acc",
    "val_acc",
    "val_loss",
    "test_acc",
    "test_loss",
    "epoch_s",
]
# Four epochs, as the new metrics.csv writes them: validation every epoch, test only at the end.
ROWS = [
    [1, 0.1, 2.0, 1.5, 0.4, 0.1, 0.30, 0.20, 0.25, 0.12, 0.30, 0.28, 1.9, "", "", 1.0],
    [2, 0.075, 1.5, 1.1, 0.3, 0.1, 0.50, 0.40, 0.45, 0.11, 0.50, 0.46, 1.4, "", "", 1.0],
    [3, 0.025, 1.0, 0.7, 0.2, 0.1, 0.70, 0.55, 0.60, 0.10, 0.70, 0.61, 1.1, "", "", 1.0],
    [4, 0.0, 0.8, 0.5, 0.2, 0.1, 0.80, 0.60, 0.70, 0.10, 0.80, 0.66, 1.0, 0.65, 1.05, 1.0],
]


def _write(path, columns, rows):
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def _axes(fig):
    return {ax.get_label(): ax for ax in fig.axes}


def _lines(ax):
    return {line.get_label(): line for line in ax.lines}


def _data(line):
    xs, ys = line.get_data()
    return [float(x) for x in xs], [float(y) for y in ys]


def test_accuracy_panel_has_train_validation_and_test_as_distinct_lines(tmp_path):
    fig = training_curves_figure(_write(tmp_path / "metrics.csv", COLUMNS, ROWS))
    axes = _axes(fig)
    assert set(axes) == {"accuracy", "loss", "heads", "objective", "lr"}
    acc = _lines(axes["accuracy"])
    assert sorted(acc) == ["test", "train", "validation"]  # acc_main is not drawn beside train_acc
    assert acc["train"] is not acc["test"]
    assert _data(acc["train"]) == ([1, 2, 3, 4], pytest.approx([30, 50, 70, 80]))
    assert _data(acc["validation"]) == ([1, 2, 3, 4], pytest.approx([28, 46, 61, 66]))
    assert _data(acc["test"]) == ([4], pytest.approx([65]))  # only the epoch that has a value
    assert acc["test"].get_marker() not in (None, "None", "")  # a single point must still show
    assert acc["train"].get_linestyle() != acc["test"].get_linestyle()
    assert axes["accuracy"].get_ylabel() == "accuracy (%)" and axes["accuracy"].get_ylim() == (0, 100)

    # like with like: the main head's cross-entropy on every split (train: ce_main, not the objective)
    loss = _lines(axes["loss"])
    assert sorted(loss) == ["test", "train", "validation"]
    assert axes["loss"].get_ylabel() == "main-head cross-entropy"
    assert _data(loss["train"]) == ([1, 2, 3, 4], pytest.approx([1.5, 1.1, 0.7, 0.5]))
    assert _data(loss["validation"])[1] == pytest.approx([1.9, 1.4, 1.1, 1.0])
    assert _data(loss["test"]) == ([4], pytest.approx([1.05]))
    # the whole ESD objective (CE of every head + KD) in its own panel, with its terms
    objective = _lines(axes["objective"])
    assert sorted(objective) == ["ce_branches", "ce_main", "kd", "total (minimised)"]
    assert _data(objective["total (minimised)"])[1] == pytest.approx([2.0, 1.5, 1.0, 0.8])

    heads = _lines(axes["heads"])
    assert sorted(heads) == ["head 0", "head 1", "main head"]
    assert _data(heads["head 1"])[1] == pytest.approx([25, 45, 60, 70])
    assert _data(_lines(axes["lr"])["lr"])[1] == pytest.approx([0.1, 0.075, 0.025, 0.0])

    for ax in fig.axes:  # whole epochs on every x axis
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_label(), ticks)
        assert ax.get_xlabel() == "epoch"


def test_old_metrics_without_validation_columns_still_plot(tmp_path):
    columns = ["epoch", "lr", "loss", "ce_main", "acc_main", "train_acc", "test_acc", "epoch_s"]
    rows = [[1, 0.1, 2.0, 2.0, 0.4, 0.4, 0.35, 1.0], [2, 0.05, 1.0, 1.0, 0.6, 0.6, 0.55, 1.0]]
    path = _write(tmp_path / "metrics.csv", columns, rows)
    fig = training_curves_figure(path)
    axes = _axes(fig)
    assert "heads" not in axes  # acc_main alone is train_acc again
    acc = _lines(axes["accuracy"])
    assert sorted(acc) == ["test", "train"]
    assert _data(acc["test"]) == ([1, 2], pytest.approx([35, 55]))
    assert sorted(_lines(axes["loss"])) == ["train"]
    assert "objective" not in axes  # BPTT without branches: the objective is the main head's CE, drawn once
    assert plot_training_curves(path, tmp_path / "curves.png").read_bytes()[:8] == PNG


def test_empty_validation_column_is_left_out(tmp_path):
    columns = ["epoch", "loss", "train_acc", "val_acc", "val_loss", "test_acc"]
    rows = [[1, 2.0, 0.4, "", "", 0.3], [2, 1.0, 0.6, "", "", 0.5]]
    fig = training_curves_figure(_write(tmp_path / "m.csv", columns, rows))
    assert sorted(_lines(_axes(fig)["accuracy"])) == ["test", "train"]
    assert sorted(_lines(_axes(fig)["loss"])) == ["train"]


def test_columns_given_directly_and_nothing_to_plot(tmp_path):
    fig = training_curves_figure({"train_loss": [1.0, 0.5], "train_acc": [0.1, 0.3]})
    loss = _lines(_axes(fig)["loss"])["train"]
    assert _data(loss) == ([1, 2], pytest.approx([1.0, 0.5]))  # epochs numbered from 1
    (tmp_path / "empty.csv").write_text("epoch,loss\n")
    assert training_curves_figure(tmp_path / "empty.csv") is None
    assert plot_training_curves(tmp_path / "empty.csv", tmp_path / "e.png") is None
    assert not (tmp_path / "e.png").exists()
    assert training_curves_figure({"epoch": [1.0], "epoch_s": [math.nan]}) is None


def test_firing_figure_marks_flagged_layers():
    from esdsnn.analysis.plots import firing_rates_figure

    layers = [
        dict(name="stem.1", rate=1.0, flag="saturated"),
        dict(name="stages.0.1", rate=0.0, flag="dead"),
        dict(name="stages.1.1", rate=0.2),
    ]  # the last as an older firing_rates.json has it: no flag
    fig = firing_rates_figure({"layers": layers, "avg_rate": 0.4, "T": 4, "samples": 8})
    (ax,) = fig.axes
    assert [round(p.get_height(), 6) for p in ax.patches] == [1.0, 0.0, 0.2]
    assert [t.get_text() for t in ax.texts] == ["saturated", "dead"]
    assert [t.xy for t in ax.texts] == [(0, 1.0), (1, 0.0)]
    assert ax.patches[0].get_facecolor() != ax.patches[2].get_facecolor()
    assert ax.get_ylim()[0] == 0


def test_the_train_line_is_never_the_objective_under_another_name(tmp_path):
    """A file without ce_main: its total is drawn as the train CE only when it has no other terms
    (then it is the main head's CE); an objective with terms stays in its own panel."""
    esd = {"epoch": [1.0, 2.0], "loss": [3.0, 2.0], "kd": [0.5, 0.4], "val_loss": [1.0, 0.9]}
    axes = _axes(training_curves_figure(esd))
    assert sorted(_lines(axes["loss"])) == ["validation"]
    assert sorted(_lines(axes["objective"])) == ["kd", "total (minimised)"]
    plain = {"epoch": [1.0, 2.0], "loss": [1.2, 1.0], "val_loss": [1.3, 1.1]}
    axes = _axes(training_curves_figure(plain))
    assert _data(_lines(axes["loss"])["train"])[1] == pytest.approx([1.2, 1.0]) and "objective" not in axes

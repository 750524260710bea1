"""The report of a saved run directory, and the figures it draws."""

import csv
import json

import torch
from torch import nn

import esdsnn
from esdsnn.analysis.plots import plot_training_curves, read_numeric_csv
from esdsnn.analysis.report import flagged_layers, write_report
from esdsnn.models.base import SpikingNet
from esdsnn.neurons.lif import LIF

PNG = b"\x89PNG\r\n\x1a\n"


def _run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method: esd\n")
    rows = [
        dict(epoch=1, lr=0.1, loss=2.3, ce_main=2.2, kd=0.1, train_acc=0.2, test_acc="", epoch_s=1.0),
        dict(epoch=2, lr=0.05, loss=1.5, ce_main=1.4, kd=0.1, train_acc=0.5, test_acc=0.45, epoch_s=1.0),
        dict(epoch=3, lr=0.0, loss=1.0, ce_main=0.9, kd=0.1, train_acc=0.7, test_acc=0.6, epoch_s=1.0),
    ]
    with (run / "metrics.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (run / "summary.json").write_text(json.dumps({"method": "esd", "arch": "digits_resnet", "T": 2, "test_acc": 0.6}))
    return run


def test_write_report_on_saved_run(tmp_path):
    run = _run_dir(tmp_path)
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    source = [(torch.randn(5, 1, 8, 8) * 2, torch.randint(10, (5,))) for _ in range(2)]
    out = write_report(run, model, source, 2, device="cpu")
    assert set(out) == {"avg_firing_rate", "energy_mj_per_sample"}
    assert 0.0 <= out["avg_firing_rate"] <= 1.0 and out["energy_mj_per_sample"] > 0
    for name in ("firing_rates.png", "training_curves.png"):
        assert (run / name).read_bytes()[:8] == PNG
    d = json.loads((run / "firing_rates.json").read_text())
    assert d["avg_rate"] == out["avg_firing_rate"] and d["samples"] == 10 and d["T"] == 2
    md = (run / "report.md").read_text()
    assert "| layer | neurons | t=1 | t=2 | mean |" in md
    assert "energy estimate" in md.lower() and "not a measurement" in md
    assert "training_curves.png" in md and "| esd | digits_resnet |" in md
    # summary.json's test_acc 0.6 is shown in percent, with the unit in the header
    assert "| method | arch | T | test accuracy (%) |" in md and "| esd | digits_resnet | 2 | 60.00 |" in md


def test_report_without_metrics_and_curves_reader(tmp_path):
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    out = write_report(tmp_path / "fresh", model, [(torch.randn(3, 1, 8, 8), torch.zeros(3, dtype=torch.long))], 1)
    assert set(out) == {"avg_firing_rate", "energy_mj_per_sample"}
    assert not (tmp_path / "fresh" / "training_curves.png").exists()
    assert "training_curves" not in (tmp_path / "fresh" / "report.md").read_text()

    run = _run_dir(tmp_path)
    cols = read_numeric_csv(run / "metrics.csv")
    assert cols["epoch"] == [1, 2, 3] and cols["test_acc"][1:] == [0.45, 0.6]
    assert plot_training_curves({"train_loss": [1.0, 0.5], "train_acc": [0.1, 0.3]}, tmp_path / "c.png").exists()
    (tmp_path / "empty.csv").write_text("epoch,loss\n")
    assert plot_training_curves(tmp_path / "empty.csv", tmp_path / "e.png") is None


class TwoLIFNet(SpikingNet):
    """conv1x1 (weight 1) → LIF → conv1x1 (weight 1) → LIF → linear, with the two thresholds given.

    By hand, inputs of 1 and thresholds (0.01, 100): the first LIF gets 1 ≥ 0.01 at every step
    (rate 1, saturated); the second gets 1 + 0.2·u per step, never 100 (rate 0, dead). Inputs of
    0.9 and thresholds (1, 1): the first sees 0.9, 1.08, 0.916, 1.0832 → spikes 0 1 0 1 (rate 0.5);
    the second sees 0, 1, 0, 1 → 0 1 0 1 (rate 0.5): neither flagged.
    """

    def __init__(self, thresholds=(0.01, 100.0)) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.stage_channels = 2, 1, (1,)
        conv0, conv1 = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            conv0.weight.fill_(1.0)
            conv1.weight.fill_(1.0)
        self.stem = nn.Sequential(conv0, LIF(decay=0.2, threshold=thresholds[0]))
        self.stages = nn.ModuleList([nn.Sequential(conv1, LIF(decay=0.2, threshold=thresholds[1]))])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))


def test_report_flags_dead_and_saturated_layers(tmp_path):
    source = [(torch.ones(4, 1, 1, 1), torch.zeros(4, dtype=torch.long))]
    write_report(tmp_path / "run", TwoLIFNet((0.01, 100.0)), source, 3)
    d = json.loads((tmp_path / "run" / "firing_rates.json").read_text())
    assert [(layer["name"], layer["rate"], layer["flag"]) for layer in d["layers"]] == [
        ("stem.1", 1.0, "saturated"),
        ("stages.0.1", 0.0, "dead"),
    ]
    assert d["dead_layers"] == ["stages.0.1"] and d["saturated_layers"] == ["stem.1"]
    md = (tmp_path / "run" / "report.md").read_text()
    assert "**Layers to check** (dead: mean rate < 0.001 spikes / neuron / step; saturated: mean rate ≥ 0.95)" in md
    (dead,) = [line for line in md.splitlines() if line.startswith("- **dead layer** `stages.0.1`")]
    (saturated,) = [line for line in md.splitlines() if line.startswith("- **saturated layer** `stem.1`")]
    assert "lower its threshold (--threshold)" in dead and "raise its threshold (--threshold)" in saturated
    assert (
        "spike-pass accuracy on these samples: " in md
        and "%" in md.split("spike-pass accuracy on these samples: ")[1].split("\n")[0]
    )
    assert flagged_layers(tmp_path / "run") == "dead layer(s) stages.0.1; saturated layer(s) stem.1"


def test_report_says_when_no_layer_is_flagged(tmp_path):
    source = [(torch.full((4, 1, 1, 1), 0.9), torch.zeros(4, dtype=torch.long))]
    write_report(tmp_path / "run", TwoLIFNet((1.0, 1.0)), source, 4)
    d = json.loads((tmp_path / "run" / "firing_rates.json").read_text())
    assert [(layer["rate"], layer["flag"]) for layer in d["layers"]] == [(0.5, None), (0.5, None)]
    assert d["dead_layers"] == [] and d["saturated_layers"] == []
    md = (tmp_path / "run" / "report.md").read_text()
    assert "No dead or saturated layer (dead: mean rate < 0.001" in md and "**dead layer**" not in md
    assert flagged_layers(tmp_path / "run") == ""


def test_the_report_says_in_words_where_the_best_epoch_was_selected():
    from esdsnn.analysis.report import render_report

    firing = esdsnn.analysis.firing.measure_firing(TwoLIFNet((1.0, 1.0)), [torch.full((2, 1, 1, 1), 0.9)], 2)
    on_test = render_report(
        firing, title="r", summary={"test_acc": 0.9, "selected_on": "test", "best_epoch": 3, "best_test_acc": 0.92}
    )
    assert (
        "selected_on: test — the best epoch, 3, was selected on the test set itself, as the paper's recipes do; "
        "its test accuracy is 92.00 %; that figure is not an unbiased estimate."
    ) in on_test
    on_val = render_report(
        firing,
        title="r",
        summary={"test_acc": 0.9, "selected_on": "val", "best_epoch": 2, "best_val_acc": 0.95, "best_test_acc": 0.91},
    )
    assert (
        "selected_on: val — the best epoch, 2, was selected on the validation split (95.00 % validation "
        "accuracy); its test accuracy is 91.00 %."
    ) in on_val
    assert "selected_on" not in render_report(firing, title="r", summary={"test_acc": 0.9})  # an older run

"""The report of a saved run directory, and the figures it draws."""
import csv
import json

import torch

import esdsnn
from esdsnn.analysis.plots import plot_training_curves, read_numeric_csv
from esdsnn.analysis.report import write_report

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

"""The training loop, in process: optimizer groups, exact resume, the NaN guard, run files."""

import math
import re

import pytest
import torch
from torch import nn

import esdsnn
from esdsnn.config import TrainConfig, load_config
from esdsnn.errors import ConfigError, TrainingDiverged
from esdsnn.runs import evaluate
from esdsnn.runs.build import build_data
from esdsnn.runs.checkpoint import load_checkpoint
from esdsnn.runs.claim import check_new_out
from esdsnn.runs.files import MetricsLog, new_run_dir, read_metrics, read_summary
from esdsnn.train import loop, session
from esdsnn.train.optim import parameter_groups


def _config(tmp_path, **changes):
    values = dict(epochs=2, batch_size=128, progress=False, threads=1, out=str(tmp_path / "run"))
    values.update(changes)
    return TrainConfig.from_dict(values)


def test_parameter_groups_decay_only_conv_and_linear_weights():
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    method = esdsnn.create_method("esd", model, T=2)
    decay, no_decay = parameter_groups(method, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    conv_linear = {id(m.weight) for m in method.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {id(p) for p in decay["params"]} == conv_linear
    assert all(p.ndim == 1 for p in no_decay["params"])  # BN weights/biases and linear biases
    every = {id(p) for p in method.parameters()}
    grouped = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(grouped) == len(set(grouped)) and set(grouped) == every
    branch_params = {id(p) for p in method.parameters()} - {id(p) for p in model.parameters()}
    assert branch_params and branch_params <= set(grouped)


class _StopAfter:
    """A stop signal that fires after ``n`` checks (one check per training step)."""

    def __init__(self, n):
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    full = loop.train(_config(tmp_path, out=str(tmp_path / "full")))
    assert full.status == "completed"

    cut = loop.train(_config(tmp_path, out=str(tmp_path / "cut")), stop=_StopAfter(5))
    assert cut.status == "interrupted" and (cut.epoch, cut.step) == (0, 6)
    assert load_checkpoint(cut.run_dir / "last.pt")["step"] == 6
    resumed = loop.train(loop.resume_config(cut.run_dir), resume=True)
    assert resumed.status == "completed"

    a = load_checkpoint(full.run_dir / "last.pt")
    b = load_checkpoint(resumed.run_dir / "last.pt")
    for part in ("model", "extra"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert resumed.summary["test_acc"] == full.summary["test_acc"]
    rows_a, rows_b = read_metrics(full.run_dir / "metrics.csv"), read_metrics(resumed.run_dir / "metrics.csv")
    assert len(rows_b) == 2
    for ra, rb in zip(rows_a, rows_b):
        ra.pop("epoch_s"), rb.pop("epoch_s")
        assert ra == rb


def test_resume_refuses_config_changes(tmp_path):
    run = loop.train(_config(tmp_path, epochs=1, method="ratebp"), stop=_StopAfter(1))
    with pytest.raises(ConfigError, match="lr cannot change"):
        loop.resume_config(run.run_dir, {"lr": "0.5"})
    assert loop.resume_config(run.run_dir, {"progress": True}).run.progress is True


class _GoesNaN(nn.Module):
    """Wraps a method; its loss becomes NaN after ``good`` steps."""

    def __init__(self, inner, good):
        super().__init__()
        self.inner, self.good, self.calls = inner, good, 0

    def forward(self, x, y):
        out = self.inner(x, y)
        self.calls += 1
        if self.calls > self.good:
            out.loss = out.loss * float("nan")
            out.parts["loss"] = float("nan")
        return out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    build = session.build_method
    monkeypatch.setattr(
        session,
        "build_method",
        lambda config, model, teacher=None, **kw: _GoesNaN(build(config, model, teacher, **kw), good=14),
    )
    config = _config(tmp_path, epochs=3, method="ratebp")  # 11 steps per epoch: NaN in epoch 2, step 4
    with pytest.raises(TrainingDiverged) as info:
        loop.train(config)
    message = str(info.value)
    assert "epoch 2, step 4" in message and "lower --lr" in message and "last.pt" in message
    run_dir = tmp_path / "run"
    kept = load_checkpoint(run_dir / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert len(read_metrics(run_dir / "metrics.csv")) == 1
    assert read_summary(run_dir)["status"] == "diverged"
    assert evaluate(run_dir).total == 360  # the kept checkpoint still evaluates


def test_cosine_schedule_eval_every_and_files(tmp_path):
    config = _config(tmp_path, epochs=3, eval_every=2, method="ratebp", T=2, val_fraction=0)  # select on test
    result = loop.train(config)
    rows = read_metrics(result.run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for r in rows:  # per epoch, from 0.1 down (to 0 after the last epoch), no warm-up
        e = int(r["epoch"]) - 1
        assert float(r["lr"]) == pytest.approx(0.05 * (1 + math.cos(math.pi * e / 3)), rel=1e-4)
    assert [bool(r["test_acc"]) for r in rows] == [False, True, True]
    assert list(rows[0])[:3] == ["epoch", "lr", "loss"] and list(rows[0])[-3:] == ["test_acc", "test_loss", "epoch_s"]
    assert result.summary["selected_on"] == "test" and not any(r["val_acc"] for r in rows)
    summary = result.summary
    for key in (
        "test_acc",
        "method",
        "arch",
        "T",
        "epochs",
        "wall_s",
        "dataset",
        "best_test_acc",
        "num_params",
        "torch",
        "threads",
        "device",
    ):
        assert key in summary, key
    assert summary["epochs"] == 3 and summary["T"] == 2 and summary["threads"] == 1
    assert summary["test_acc"] == pytest.approx(float(rows[-1]["test_acc"]), abs=1e-6)
    assert load_config(result.run_dir / "config.yaml") == load_config(result.run_dir / "config.yaml").resolved()
    assert load_config(result.run_dir / "config.yaml").run.out == str(result.run_dir)
    evaluated = evaluate(result.run_dir)
    assert (evaluated.correct, evaluated.total) == (summary["test_correct"], summary["test_total"])
    with pytest.raises(ConfigError, match="already holds a run"):
        loop.train(config)


def test_run_directory_names(tmp_path):
    first = new_run_dir(None, "esd", root=tmp_path)
    second = new_run_dir(None, "esd", root=tmp_path)
    assert re.fullmatch(r"\d{8}-\d{6}-esd(-\d+)?", first.name) and first != second
    assert new_run_dir(str(tmp_path / "new" / "dir"), "esd").is_dir()
    # whether a folder may take a new run is decided under its lock (esdsnn.runs.claim)
    (first / "config.yaml").write_text("method: esd\n")
    check_new_out(first)  # a run that stopped before its first checkpoint: it starts afresh in place
    (first / "last.pt").write_bytes(b"")
    with pytest.raises(
        ConfigError,
        match=f"already holds a run; choose another --out, or continue it with esdsnn train --resume {first}",
    ):
        check_new_out(first)
    (first / "last.pt").rename(first / "best.pt")  # weights only: nothing to resume, so no --resume offered
    with pytest.raises(ConfigError, match=r"already holds a trained model \(best.pt\) and no checkpoint to resume"):
        check_new_out(first)


def test_metrics_log_columns_and_truncate(tmp_path):
    log = MetricsLog(tmp_path / "m.csv")
    for epoch in (1, 2, 3):
        log.write(
            {"epoch": epoch, "lr": 0.1, "ce_main": 1.0, "loss": 2.0, "train_acc": 0.5, "test_acc": None, "epoch_s": 1.5}
        )
    rows = read_metrics(tmp_path / "m.csv")
    assert list(rows[0]) == [
        "epoch",
        "lr",
        "loss",
        "ce_main",
        "train_acc",
        "val_acc",
        "val_loss",
        "test_acc",
        "test_loss",
        "epoch_s",
    ]
    assert rows[0]["test_acc"] == ""
    log.truncate(2)
    assert [r["epoch"] for r in read_metrics(tmp_path / "m.csv")] == ["1", "2"]
    MetricsLog(tmp_path / "m.csv").write(
        {"epoch": 3, "lr": 0.0, "loss": 1.0, "ce_main": 1.0, "train_acc": 1, "test_acc": 1, "epoch_s": 1}
    )
    assert [r["epoch"] for r in read_metrics(tmp_path / "m.csv")] == ["1", "2", "3"]


def test_ann_teacher_then_kd_student(tmp_path):
    ann = loop.train(_config(tmp_path, method="ann", out=str(tmp_path / "ann")))
    assert ann.summary["test_acc"] >= 0.8
    evaluated = evaluate(ann.run_dir)
    assert evaluated.T == 1 and evaluated.correct == ann.summary["test_correct"]

    with pytest.raises(ConfigError, match="needs a teacher"):
        TrainConfig(method="kd")
    kd = loop.train(_config(tmp_path, method="kd", teacher_run=str(ann.run_dir), out=str(tmp_path / "kd")))
    assert kd.summary["test_acc"] >= 0.8
    evaluated = evaluate(kd.run_dir)
    assert evaluated.T == 4 and evaluated.correct == kd.summary["test_correct"]
    with pytest.raises(ConfigError, match="kd needs a --method ann run"):
        loop.train(_config(tmp_path, method="kd", teacher_run=str(kd.run_dir), out=str(tmp_path / "kd2")))


def test_the_config_reaches_loaders_as_one_request(monkeypatch):
    import esdsnn.data as data
    from esdsnn.data.augment import AugmentConfig

    seen = []

    def loader(request):
        seen.append(request)
        return data.load_dataset("digits", batch_size=request.batch_size, seed=request.seed)

    monkeypatch.setitem(data._DATASETS, "fake", data.DatasetInfo("unused:unused"))  # passes the config check
    monkeypatch.setattr("esdsnn.runs.build.dataset_loader", lambda name: loader)
    config = TrainConfig.from_dict(dict(dataset="fake", flip=False, cutout=False, batch_size=64, workers=3, T=5))
    build_data(config, torch.device("cpu"))
    (request,) = seen
    assert request.augment == AugmentConfig(
        crop=None, flip=False, autoaugment=None, cutout=False
    )  # None: the loader's default
    assert (request.batch_size, request.workers, request.T, request.seed) == (64, 3, 5, 60)

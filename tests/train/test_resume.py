"""Training you can leave running: SIGKILL/SIGTERM then --resume, corrupt checkpoints, RNG state."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from esdsnn.cli import main
from esdsnn.config import TrainConfig
from esdsnn.errors import CheckpointError
from esdsnn.runs.checkpoint import BEST, LAST, PREVIOUS, load_checkpoint, load_latest, save_checkpoint
from esdsnn.runs.files import read_metrics
from esdsnn.train import loop
from esdsnn.train.state import rng_state, set_rng_state

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
COMMON = ["--batch-size", "128", "--threads", "1", "--no-progress", "--no-report", "--save-every-steps", "2"]


def esdsnn_cmd(*args):
    return [sys.executable, "-m", "esdsnn", *map(str, args)]


def peek(path):
    """``(epoch, step)`` of a checkpoint being written by another process, or None (cheap: the
    tensors are memory-mapped, not read)."""
    try:
        data = torch.load(path, weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    return int(data["epoch"]), int(data["step"])


def assert_same_state(a, b, parts=("model", "extra")):
    for part in parts:
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def assert_same_optimizer(a, b):
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]), k


def rows_without_timing(path):
    rows = read_metrics(path)
    for r in rows:
        r.pop("epoch_s")
    return rows


@pytest.mark.parametrize("method", ["esd", "bptt"])
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, method):
    """A real `esdsnn train` killed with SIGKILL in epoch 2 and resumed ends exactly like a run
    that was never interrupted: weights, branches, momentum and every metrics row."""
    cut = tmp_path / "cut"
    victim = subprocess.Popen(
        esdsnn_cmd("train", "--method", method, "--epochs", "2", "--T", "2", *COMMON, "--out", cut),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and victim.poll() is None:
            if (cut / "metrics.csv").exists():  # epoch 1 is done: wait for a step checkpoint of epoch 2
                seen = peek(cut / LAST)
                if seen is not None and seen[0] == 1 and seen[1] > 0:
                    break
            time.sleep(0.1)
        assert victim.poll() is None, ("finished before it could be killed", victim.communicate())
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    saved = load_checkpoint(cut / LAST)
    assert saved["epoch"] == 1 and 0 < saved["step"] < 12  # killed mid-epoch, after a step checkpoint
    assert [r["epoch"] for r in read_metrics(cut / "metrics.csv")] == ["1"]

    done = subprocess.run(
        esdsnn_cmd("train", "--resume", cut, "--no-progress"),
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming {cut} after epoch 1, step {saved['step']}" in done.stdout
    # the uninterrupted reference (in this process: the same code, one thread, the same numbers)
    full = loop.train(
        TrainConfig.from_dict(
            dict(
                method=method,
                epochs=2,
                T=2,
                batch_size=128,
                threads=1,
                progress=False,
                report=False,
                save_every_steps=2,
                out=str(tmp_path / "full"),
            )
        )
    ).run_dir

    a, b = load_checkpoint(full / LAST), load_checkpoint(cut / LAST)
    assert (a["epoch"], b["epoch"]) == (2, 2)
    assert_same_state(a, b)
    assert_same_optimizer(a, b)
    assert rows_without_timing(full / "metrics.csv") == rows_without_timing(cut / "metrics.csv")


def test_sigterm_saves_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        esdsnn_cmd("train", "--method", "ratebp", "--epochs", "1", "--T", "2", *COMMON, "--out", run),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            seen = peek(run / LAST) if (run / PREVIOUS).exists() else None
            if seen is not None and seen[1] > 0:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, (out, err)  # 128 + SIGTERM, after saving
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err
    saved = load_checkpoint(run / LAST)
    assert saved["epoch"] == 0 and 0 < saved["step"] < 12  # saved where it stopped
    done = subprocess.run(
        esdsnn_cmd("train", "--resume", run, "--no-progress"),
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == ["1"]


class _StopAfter:
    def __init__(self, n):
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0


def _config(tmp_path, name, **changes):
    values = dict(
        method="bptt",
        T=2,
        epochs=2,
        batch_size=128,
        progress=False,
        threads=1,
        report=False,
        save_every_steps=2,
        out=str(tmp_path / name),
    )
    values.update(changes)
    return TrainConfig.from_dict(values)


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, capsys):
    full = loop.train(_config(tmp_path, "full"))
    cut = loop.train(_config(tmp_path, "cut"), stop=_StopAfter(4))  # stops after step 5 of 12
    assert (cut.epoch, cut.step) == (0, 5)
    assert load_checkpoint(cut.run_dir / PREVIOUS)["step"] == 4  # the step checkpoint it replaced
    last = cut.run_dir / LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated, as by a full disk

    warnings = []
    resumed = loop.train(loop.resume_config(cut.run_dir), resume=True, warn=warnings.append)
    assert resumed.status == "completed"
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert str(last) in warnings[0] and "unreadable or corrupt" in warnings[0]
    assert str(cut.run_dir / PREVIOUS) in warnings[1] and "epoch 1, step 4" in warnings[1]
    assert_same_state(load_checkpoint(full.run_dir / LAST), load_checkpoint(last))
    assert rows_without_timing(full.run_dir / "metrics.csv") == rows_without_timing(cut.run_dir / "metrics.csv")

    # nothing to fall back on: one line naming the file, exit 2
    for name in (LAST, PREVIOUS):
        (cut.run_dir / name).write_bytes(b"garbage")
    (cut.run_dir / BEST).unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(cut.run_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("esdsnn: error: checkpoint ")
    assert str(last) in err and "unreadable or corrupt" in err
    assert f"retrain it: esdsnn train --config {cut.run_dir / 'config.yaml'} --out NEW_DIR" in err


def test_load_latest_takes_the_most_advanced_fallback(tmp_path):
    def ckpt(name, epoch, step, **more):
        save_checkpoint(
            tmp_path / name, {"model": {}, "config": {}, "epoch": epoch, "step": step, "optimizer": {}, **more}
        )

    with pytest.raises(CheckpointError, match="last.pt not found"):
        load_latest(tmp_path)
    ckpt(PREVIOUS, 1, 4)
    ckpt(BEST, 2, 0)
    path, _data, problems = load_latest(tmp_path)
    assert path.name == BEST and problems == [f"checkpoint {tmp_path / LAST} not found"]
    # today's best.pt holds the weights only: it cannot resume a run
    save_checkpoint(tmp_path / BEST, {"model": {}, "config": {}, "epoch": 2, "step": 0, "weights_only": True})
    assert load_latest(tmp_path)[0].name == PREVIOUS
    ckpt(LAST, 2, 3)
    assert load_latest(tmp_path)[0].name == LAST
    save_checkpoint(
        tmp_path / LAST, {"model": {}, "config": {}, "epoch": 2, "step": 5}, keep_previous=tmp_path / PREVIOUS
    )
    assert load_checkpoint(tmp_path / PREVIOUS)["step"] == 3 and load_checkpoint(tmp_path / LAST)["step"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LAST, PREVIOUS, BEST])  # no temp files


def test_every_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    save_checkpoint(tmp_path / "r.pt", {"model": {}, "config": {}, "epoch": 0, "rng": rng_state()})
    expected = (torch.rand(3), random.random(), np.random.rand(3))
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])  # torch.load(weights_only=True)
    again = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(expected[0], again[0]) and expected[1] == again[1]
    assert np.array_equal(expected[2], again[2])


def test_resume_of_a_version_1_checkpoint(tmp_path):
    """Checkpoints of the first format (RNG as a bare tensor, no scaler/data) still resume."""
    cut = loop.train(_config(tmp_path, "cut", save_every_steps=0), stop=_StopAfter(2))
    data = load_checkpoint(cut.run_dir / LAST)
    v1 = {k: v for k, v in data.items() if k not in ("scaler", "data", "esdsnn")}
    v1["format_version"], v1["rng"] = 1, data["rng"]["torch"]
    torch.save(v1, cut.run_dir / LAST)
    assert loop.train(loop.resume_config(cut.run_dir), resume=True).status == "completed"


# ---- methods and models that draw random numbers in their steps ----------------------------------
DROPOUT_FACTORY = """
import torch.nn as nn
from esdsnn import layers as snn

def net(num_classes, in_channels, **lif):
    return nn.Sequential(
        snn.Conv2d(in_channels, 8, 3, padding=1, bias=False), snn.BatchNorm2d(8), snn.LIF(**lif),
        snn.Dropout(0.3),
        snn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False), snn.BatchNorm2d(16), snn.LIF(**lif),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
"""


def assert_interrupted_then_resumed_equals_uninterrupted(tmp_path, **changes):
    """Stopped mid-epoch 1 at a step checkpoint, then resumed, a run ends with the weights,
    branches, momentum and metrics of one that never stopped; with the RNG state not restored
    (the random draws of the steps after the cut then differ), it would not."""
    full = loop.train(_config(tmp_path, "full", epochs=1, **changes))
    cut = loop.train(_config(tmp_path, "cut", epochs=1, **changes), stop=_StopAfter(3))
    assert cut.status == "interrupted" and (cut.epoch, cut.step) == (0, 4)
    resumed = loop.train(loop.resume_config(cut.run_dir), resume=True)
    assert resumed.status == "completed"
    a, b = load_checkpoint(full.run_dir / LAST), load_checkpoint(cut.run_dir / LAST)
    assert_same_state(a, b)
    assert_same_optimizer(a, b)
    assert rows_without_timing(full.run_dir / "metrics.csv") == rows_without_timing(cut.run_dir / "metrics.csv")


def test_kd_resumes_bit_exact_with_its_noise(tmp_path):
    """kd draws NLD's noise from the global RNG at every step."""
    teacher = loop.train(_config(tmp_path, "teacher", method="ann", epochs=1, save_every_steps=0))
    assert_interrupted_then_resumed_equals_uninterrupted(tmp_path, method="kd", teacher_run=str(teacher.run_dir))


def test_a_model_with_dropout_resumes_bit_exact(tmp_path, monkeypatch):
    """Dropout draws one mask per sample and step of training from the global RNG."""
    (tmp_path / "dropnets.py").write_text(DROPOUT_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert_interrupted_then_resumed_equals_uninterrupted(tmp_path, method="ratebp", arch="dropnets:net")

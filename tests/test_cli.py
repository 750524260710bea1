"""The command line, as a user runs it: ``python -m esdsnn ...`` in a subprocess."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from esdsnn.cli import main
from esdsnn.runs.checkpoint import load_checkpoint
from esdsnn.runs.files import read_metrics

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SUMMARY_KEYS = ("test_acc", "method", "arch", "T", "epochs", "wall_s", "dataset")


def esdsnn(*args, cwd, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "esdsnn", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("esdsnn: error: "), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def files(tmp_path):
    (tmp_path / "unknown.yaml").write_text("lr: 0.1\nlearning_rate: 0.1\n")
    (tmp_path / "malformed.yaml").write_text("lr: [0.1\nmethod: esd\n")
    (tmp_path / "malformed.npz").write_bytes(b"PK\x03\x04 this is no zip archive")
    np.savez(tmp_path / "nokeys.npz", x_train=np.zeros((4, 1, 2, 2)), y_train=np.zeros(4))
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")  # numpy would call it a pickle
    (tmp_path / "bptt_alpha.yaml").write_text("method: bptt\nalpha: 2.0\n")
    return tmp_path


# The cases of the issue, as a user meets them: a fresh process each.
@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train", "--method", "magic"], ["unknown method 'magic'", "esd"]),
        (["train", "--arch", "resnet1000"], ["unknown arch 'resnet1000'", "digits_resnet"]),
        (["train", "--config", "unknown.yaml"], ["learning_rate", "known keys:", "batch_size"]),
        (["train", "--T", "0"], ["T must be >= 1"]),
        (["train", "--lr", "-0.1"], ["lr must be > 0"]),
        (["train", "--config", "missing.yaml"], ["missing.yaml not found"]),
        (["train", "--config", "malformed.yaml"], ["malformed.yaml is not valid YAML"]),
        (["train", "--dataset", "npz", "--data-path", "absent.npz"], ["absent.npz not found"]),
        (["train", "--dataset", "npz", "--data-path", "malformed.npz"], ["malformed.npz is not a readable .npz"]),
        (["train", "--bogus-flag"], ["unrecognized arguments: --bogus-flag"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(files, args, fragments):
    proc = esdsnn(*args, cwd=files)
    assert_user_error(proc, *fragments)
    assert not (files / "runs").exists()  # nothing is written for bad input


# More of the same, in process (the same code path, without the start-up cost of a process).
@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train", "--lr", "fast"], ["lr", "must be a number"]),
        (["train", "--reset", "medium"], ["reset must be one of soft, hard"]),
        (["train", "--teacher", "best"], ["teacher must be one of"]),
        (["train", "--epochs", "0"], ["epochs must be >= 1"]),
        (
            ["train", "--learnable-decay"],
            ["--learnable-decay needs a BPTT-based method", "--no-learnable-decay or --method esd-bptt"],
        ),
        (["train", "--dataset", "npz"], ["needs --data-path"]),
        (["train", "--dataset", "npz", "--data-path", "nokeys.npz"], ["nokeys.npz lacks the key(s) x_test, y_test"]),
        (["train", "--dataset", "mnist"], ["unknown dataset 'mnist'"]),
        (["train", "--dataset", "npz", "--data-path", "text.npz"], ["text.npz is not an .npz file", "numpy.savez("]),
        (["train", "--method", "bptt", "--alpha", "2"], ["method bptt does not read alpha", "esd, esd-bptt, sd"]),
        (["train", "--config", "bptt_alpha.yaml"], ["method bptt does not read alpha"]),
        (["train", "--method", "sd", "--teacher", "main"], ["method sd fixes teacher = 'all'"]),
        (["train", "--T"], ["expected one argument"]),
        (["train", "--resume", "no-such-run"], ["no-such-run not found"]),
        (["train", "--resume", "x", "--config", "y.yaml"], ["drop --config"]),
        (["eval", "--run", "no-such-run"], ["no-such-run not found"]),
        (["eval"], ["--run"]),
        (["fly"], ["invalid choice"]),
        ([], ["choose a command: train, eval"]),
    ],
)
def test_bad_input_in_process(files, monkeypatch, capsys, args, fragments):
    monkeypatch.chdir(files)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("esdsnn: error: ") and "Traceback" not in err
    assert "allow_pickle" not in err  # numpy's hint is never the fix for a data set
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (files / "runs").exists()


def test_every_config_field_is_a_flag(tmp_path, monkeypatch):
    import esdsnn.train as training
    from esdsnn.config import TrainConfig

    seen = {}

    def fake_train(config, **kwargs):
        seen["config"] = config
        raise KeyboardInterrupt  # stop here: only the parsing is under test

    monkeypatch.setattr(training, "train", fake_train)
    flags = [
        "--method",
        "esd",
        "--arch",
        "resnet19",
        "--T",
        "2",
        "--batch-size",
        "8",
        "--lr",
        "0.5",
        "--loss-scale",
        "0.25",
        "--no-detach-reset",
        "--learnable-decay",
        "--teacher-space",
        "probs",
        "--data-path",
        "x",
        "--threads",
        "1",
        "--no-progress",
        "--eval-every",
        "3",
        "--v-reset",
        "-0.5",
    ]
    assert main(["train", *flags]) == 130
    config = seen["config"]
    assert (config.method, config.arch, config.T, config.optim.batch_size, config.optim.lr) == (
        "esd",
        "resnet19",
        2,
        8,
        0.5,
    )
    assert config.loss_scale == 0.25 and config.neuron.detach_reset is False and config.neuron.learnable_decay is True
    assert config.distill.teacher_space == "probs" and config.data_path == "x" and config.run.progress is False
    assert config.run.eval_every == 3 and config.neuron.v_reset == -0.5
    help_text = esdsnn("train", "--help", cwd=tmp_path).stdout
    for name in TrainConfig.field_names():
        assert "--" + name.replace("_", "-") in help_text, name


def test_help_and_version(tmp_path):
    proc = esdsnn("train", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "--batch-size" in proc.stdout and "--no-detach-reset" in proc.stdout
    proc = esdsnn("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("esdsnn ")


@pytest.mark.parametrize("method", ["bptt", "ratebp", "esd", "esd-bptt", "sd"])
def test_train_then_eval_each_method(tmp_path, method, report):
    run = tmp_path / "run"
    proc = esdsnn(
        "train", "--method", method, "--epochs", 2, "--threads", 1, "--no-progress", "--out", run, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    assert {"config.yaml", "metrics.csv", "summary.json", "last.pt", "best.pt"} <= {p.name for p in run.iterdir()}
    summary = json.loads((run / "summary.json").read_text())
    for key in (*SUMMARY_KEYS, "best_test_acc", "num_params", "torch", "threads", "device"):
        assert key in summary, key
    assert summary["method"] == method and summary["arch"] == "digits_resnet" and summary["dataset"] == "digits"
    assert summary["T"] == 4 and summary["epochs"] == 2 and summary["threads"] == 1
    assert 0.8 <= summary["test_acc"] <= 1.0, summary  # chance is 0.1
    report(
        f"digits, {method}, 2 epochs, T=4, 1 thread: test_acc {summary['test_acc']:.4f} in {summary['wall_s']:.1f} s"
    )

    rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    columns = list(rows[0])
    assert columns[:3] == ["epoch", "lr", "loss"]
    assert columns[-7:] == ["firing_rate", "train_acc", "val_acc", "val_loss", "test_acc", "test_loss", "epoch_s"]
    assert "ce_main" in columns
    assert rows[0]["test_acc"] == "" and rows[0]["val_acc"] != ""  # digits: selected on a validation split
    if method in ("esd", "esd-bptt", "sd"):
        assert {"ce_branches", "kd", "acc_head1"} <= set(columns)
    assert float(rows[-1]["test_acc"]) == pytest.approx(summary["test_acc"], abs=1e-6)
    assert load_checkpoint(run / "last.pt")["epoch"] == 2

    proc = esdsnn("eval", "--run", run, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["correct"] == summary["test_correct"] and result["total"] == summary["test_total"]
    assert result["test_acc"] == summary["test_acc"]
    proc = esdsnn("eval", "--run", run, cwd=tmp_path)
    assert proc.returncode == 0 and f"test accuracy {summary['test_acc']:.2%}" in proc.stdout


def test_npz_end_to_end(tmp_path):
    """Any labelled image arrays: two separable classes in NHWC uint8."""
    rng = np.random.default_rng(0)

    def images(n):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, size=(n, 6, 6, 3)).astype(np.uint8)
        x[y == 1, :3] += 150  # class 1: bright top half
        return x, y

    x_train, y_train = images(256)
    x_test, y_test = images(64)
    np.savez(tmp_path / "toy.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    run = tmp_path / "run"
    proc = esdsnn(
        "train",
        "--dataset",
        "npz",
        "--data-path",
        "toy.npz",
        "--arch",
        "digits_resnet",
        "--method",
        "ratebp",
        "--epochs",
        4,
        "--batch-size",
        32,
        "--threads",
        1,
        "--no-progress",
        "--out",
        run,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == "npz" and summary["test_acc"] >= 0.9
    proc = esdsnn("eval", "--run", run, "--json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["correct"] == summary["test_correct"]


def test_config_file_and_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("method: ratebp\nepochs: 5\nT: 2\nbatch_size: 128\nthreads: 1\nprogress: false\n")
    run = tmp_path / "run"
    proc = esdsnn("train", "--config", "c.yaml", "--epochs", 1, "--out", run, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    saved = (run / "config.yaml").read_text()
    assert "method: ratebp" in saved and "epochs: 1" in saved and "T: 2" in saved and "arch: digits_resnet" in saved
    # the saved config is a valid --config that reproduces the run's settings
    proc = esdsnn("train", "--config", run / "config.yaml", cwd=tmp_path)
    assert_user_error(proc, "already holds a run")


def test_nan_guard(tmp_path):
    run = tmp_path / "run"
    proc = esdsnn("train", "--lr", "1e6", "--epochs", 2, "--threads", 1, "--no-progress", "--out", run, cwd=tmp_path)
    assert_user_error(proc, "training diverged at epoch", "lower --lr", "check the data")
    for ckpt in run.glob("*.pt"):  # whatever was written before the divergence still loads
        load_checkpoint(ckpt)
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "esdsnn",
            "train",
            "--method",
            "ratebp",
            "--epochs",
            "3",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(run),
        ],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while not (run / "metrics.csv").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] >= 1
    summary = json.loads((run / "summary.json").read_text())
    if summary["status"] == "interrupted":
        done = esdsnn("train", "--resume", run, "--no-progress", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 3
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == ["1", "2", "3"]

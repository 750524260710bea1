"""Training on your own data: the printed choices, progress lines in a log file, validation-based
selection, --init-from, extending a run, the data fingerprint and one-line failures."""

import math
import os

import numpy as np
import pytest
import torch

from esdsnn.cli import main
from esdsnn.config import TrainConfig
from esdsnn.runs.checkpoint import BEST, LAST, load_checkpoint
from esdsnn.runs.files import read_metrics, read_summary
from esdsnn.train import loop
from esdsnn.train.optim import cosine_lr
from esdsnn.train.progress import EpochProgress, FirstStepsTimer
from tests.data.test_own_data import write_npz


def _blobs(path, n_train=160, n_test=40, classes=4, size=10, seed=0):
    """Learnable images: each class a bright square in its own corner, plus noise."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % classes
        x = rng.normal(0.2, 0.1, (n, size, size))
        for i, c in enumerate(y):
            r, q = divmod(int(c), 2)
            x[i, r * size // 2 : (r + 1) * size // 2, q * size // 2 : (q + 1) * size // 2] += 0.7
        return np.clip(x * 255, 0, 255).astype(np.uint8), y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return write_npz(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def _config(tmp_path, name, data, **changes):
    values = dict(
        dataset="npz",
        data_path=str(data),
        method="esd",
        T=2,
        epochs=2,
        batch_size=16,
        progress=False,
        report=False,
        tensorboard=False,
        threads=1,
        out=str(tmp_path / name),
    )
    values.update(changes)
    return TrainConfig.from_dict(values)


def test_the_chosen_defaults_are_printed_and_the_best_epoch_is_selected_on_validation(tmp_path):
    data = _blobs(tmp_path / "blobs.npz")
    lines = []
    result = loop.train(_config(tmp_path, "run", data, batch_size=None, epochs=3), echo=lines.append)
    header = lines[0].splitlines()
    assert header[0].startswith("esd on npz (") and len(header) == 6
    assert "144 train + 16 val (10% held out, stratified, seed 60) + 40 test; 1×10×10 images; 4 classes" in header[1]
    assert "digits_resnet" in header[2] and "[default: arch: 10×10 inputs (≤ 16 px)" in header[2]
    assert "batch 8" in header[3] and "about a tenth of the 144 training samples" in header[3]
    assert "selected on the validation split" in header[5]
    assert any(line.startswith("estimate from the first steps:") and "per epoch of 18 steps" in line for line in lines)

    s = result.summary
    rows = read_metrics(result.run_dir / "metrics.csv")
    val = [(float(r["val_acc"]), -float(r["val_loss"])) for r in rows]  # ties go to the lower loss
    assert s["selected_on"] == "val" and s["best_epoch"] == 1 + max(range(3), key=lambda i: (val[i], -i))
    assert s["best_val_acc"] == pytest.approx(max(val)[0]) and s["val_acc"] == pytest.approx(val[-1][0])
    assert [r["test_acc"] == "" for r in rows] == [True, True, False]  # the test set only at the end
    assert s["test_acc"] == pytest.approx(float(rows[-1]["test_acc"])) and s["best_test_acc"] is not None
    assert (s["num_classes"], s["input_shape"], s["num_train"], s["num_val"], s["num_test"]) == (
        4,
        [1, 10, 10],
        144,
        16,
        40,
    )
    assert all(0 < float(r["firing_rate"]) < 1 for r in rows)
    assert s["firing_rate"] == pytest.approx(float(rows[-1]["firing_rate"]), rel=1e-5)  # the CSV keeps 6 digits
    best = load_checkpoint(result.run_dir / BEST)
    assert "optimizer" not in best and best["weights_only"] and best["epoch"] == s["best_epoch"]
    assert "optimizer" in load_checkpoint(result.run_dir / LAST)
    if s["best_epoch"] < 3:  # the best weights were measured on the test set once, at the end
        from esdsnn.runs.load import evaluate

        assert evaluate(result.run_dir, checkpoint="best").test_acc == pytest.approx(s["best_test_acc"])


def test_the_paper_recipes_select_on_the_test_set_and_say_so(tmp_path):
    result = loop.train(
        TrainConfig.from_dict(
            dict(
                dataset="digits",
                T=2,
                epochs=1,
                batch_size=128,
                val_fraction=0,
                progress=False,
                report=False,
                out=str(tmp_path / "r"),
            )
        )
    )
    assert result.summary["selected_on"] == "test" and result.summary["num_val"] == 0
    assert result.summary["best_test_acc"] == result.summary["test_acc"]


def test_progress_lines_without_a_terminal_come_every_interval():
    now = [0.0]
    lines = []
    bar = EpochProgress(2, 5, 100, 0, bar=False, log_every=30, echo=lines.append, epochs_left=3, clock=lambda: now[0])
    for step in range(1, 100):
        now[0] = step * 1.0  # one second per step
        bar.update(step, 16, loss=0.5, acc=0.25)
    assert len(lines) == 3  # at 30, 60 and 90 s
    assert lines[0] == ("epoch 2/5  step 30/100  loss 0.5000  train 25.00%  16 samples/s  ETA epoch 1m10s, run 6m10s")
    timer = FirstStepsTimer(steps=3, clock=iter([0.0, 2.0, 3.0, 4.0, 5.0]).__next__)
    assert [timer.tick() for _ in range(5)] == [None, None, None, pytest.approx(4 / 3), None]


def test_log_lines_appear_in_a_run_whose_output_is_a_file(tmp_path):
    data = _blobs(tmp_path / "blobs.npz")
    lines = []
    loop.train(_config(tmp_path, "run", data, epochs=1, progress=True, log_every=1e-9, batch_size=8), echo=lines.append)
    steps = [line for line in lines if line.startswith("epoch 1/1  step ")]
    assert len(steps) >= 5 and all("samples/s" in line and "ETA epoch" in line for line in steps)


def test_init_from_across_T_and_across_a_new_head(tmp_path):
    data = _blobs(tmp_path / "blobs.npz")
    source = loop.train(_config(tmp_path, "src", data, epochs=1, T=2))
    lines = []
    longer = loop.train(_config(tmp_path, "t3", data, epochs=1, T=3, init_from=str(source.run_dir)), echo=lines.append)
    said = [line for line in lines if line.startswith("initialised from")]
    assert said and f"{source.run_dir / BEST}" in said[0] and "left fresh" not in said[0]
    assert "unused" not in said[0]
    start = load_checkpoint(longer.run_dir / "last.prev.pt")  # written before the first step
    assert start["epoch"] == 0
    for key, value in load_checkpoint(source.run_dir / BEST)["model"].items():
        assert torch.equal(start["model"][key], value), key

    other = _blobs(tmp_path / "three.npz", classes=3)
    lines = []
    loop.train(_config(tmp_path, "new-head", other, epochs=1, init_from=str(source.run_dir / LAST)), echo=lines.append)
    said = next(line for line in lines if line.startswith("initialised from"))
    assert "left fresh because their shapes differ (head.2.weight, head.2.bias" in said


def test_extending_a_run_replans_the_cosine_and_equals_the_longer_run_when_extended_in_epoch_1(tmp_path):
    data = _blobs(tmp_path / "blobs.npz")
    done = loop.train(_config(tmp_path, "two", data, epochs=2, lr=0.1, lr_schedule="epoch"))
    lines = []
    longer = loop.train(loop.resume_config(done.run_dir, {"epochs": "4"}), resume=True, echo=lines.append)
    assert longer.status == "completed" and longer.summary["epochs"] == 4
    assert any("schedule re-planned from 2 to 4 epochs" in line for line in lines)
    lrs = [float(r["lr"]) for r in read_metrics(longer.run_dir / "metrics.csv")]
    assert lrs[2:] == pytest.approx([cosine_lr(0.1, 2, 4), cosine_lr(0.1, 3, 4)], rel=1e-5)
    assert lrs[:2] == pytest.approx([0.1, cosine_lr(0.1, 1, 2)], rel=1e-5)

    class StopAfter:  # stop after a few steps of epoch 1
        n = 3

        def is_set(self):
            self.n -= 1
            return self.n < 0

    cut = loop.train(
        _config(tmp_path, "cut", data, epochs=2, save_every_steps=1, lr_schedule="epoch"), stop=StopAfter()
    )
    assert cut.status == "interrupted" and cut.epoch == 0
    extended = loop.train(loop.resume_config(cut.run_dir, {"epochs": "3"}), resume=True)
    straight = loop.train(_config(tmp_path, "three", data, epochs=3, lr_schedule="epoch"))
    a, b = load_checkpoint(extended.run_dir / LAST), load_checkpoint(straight.run_dir / LAST)
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key

    with pytest.raises(Exception, match="already trained 4 epochs; --epochs must be at least 4"):
        loop.train(loop.resume_config(longer.run_dir, {"epochs": "3"}), resume=True)


def test_a_cosine_per_step_anneals_within_the_run_and_extends_step_by_step(tmp_path):
    """Own data's default: the learning rate moves after every step, so 2 epochs end near 0 (a
    cosine per epoch would run the whole second epoch at lr/2); extending re-plans it by steps,
    and a run cut after its first step and extended equals the longer run."""
    data = _blobs(tmp_path / "blobs.npz")  # 144 training samples after validation: 9 steps of 16
    done = loop.train(_config(tmp_path, "two", data, epochs=2, lr=0.2))
    last = load_checkpoint(done.run_dir / LAST)
    assert last["config"]["lr_schedule"] == "step"  # the default on data without a recipe
    lrs = [float(r["lr"]) for r in read_metrics(done.run_dir / "metrics.csv")]  # at each epoch's start
    assert lrs == pytest.approx([0.2, cosine_lr(0.2, 9, 18)], rel=1e-5)
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert last["scheduler"]["last_epoch"] == 18 and last["scheduler"]["T_max"] == 18

    longer = loop.train(loop.resume_config(done.run_dir, {"epochs": "4"}), resume=True)
    lrs = [float(r["lr"]) for r in read_metrics(longer.run_dir / "metrics.csv")]
    assert lrs[2:] == pytest.approx([cosine_lr(0.2, 18, 36), cosine_lr(0.2, 27, 36)], rel=1e-5)

    class StopAfter:  # stop after the first step: the only one both schedules take at the same lr
        n = 0

        def is_set(self):
            self.n -= 1
            return self.n < 0

    cut = loop.train(_config(tmp_path, "cut", data, epochs=2, lr=0.2, save_every_steps=1), stop=StopAfter())
    assert cut.status == "interrupted" and cut.epoch == 0
    extended = loop.train(loop.resume_config(cut.run_dir, {"epochs": "3"}), resume=True)
    straight = loop.train(_config(tmp_path, "three", data, epochs=3, lr=0.2))
    a, b = load_checkpoint(extended.run_dir / LAST), load_checkpoint(straight.run_dir / LAST)
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_a_run_saved_before_lr_schedule_existed_resumes_with_its_cosine_per_epoch(tmp_path):
    data = _blobs(tmp_path / "blobs.npz")
    cut = loop.train(
        _config(tmp_path, "old", data, epochs=2, lr=0.1, lr_schedule="epoch", save_every_steps=1),
        stop=type("StopAfter", (), {"n": 3, "is_set": lambda self: (setattr(self, "n", self.n - 1), self.n < 0)[1]})(),
    )
    for name in (LAST, "last.prev.pt"):  # as an older version wrote it: no lr_schedule in the config
        path = cut.run_dir / name
        if path.is_file():
            ckpt = load_checkpoint(path)
            del ckpt["config"]["lr_schedule"]
            torch.save(ckpt, path)
    config = loop.resume_config(cut.run_dir)
    assert config.optim.lr_schedule == "epoch"
    finished = loop.train(config, resume=True)
    lrs = [float(r["lr"]) for r in read_metrics(finished.run_dir / "metrics.csv")]
    assert lrs == pytest.approx([0.1, cosine_lr(0.1, 1, 2)], rel=1e-5)


def test_eval_warns_when_the_data_changed_since_training(tmp_path, capsys):
    data = _blobs(tmp_path / "blobs.npz")
    run = loop.train(_config(tmp_path, "run", data, epochs=1))
    fingerprint = read_summary(run.run_dir)["data_fingerprint"]
    assert fingerprint["kind"] == "file" and len(fingerprint["sha256"]) == 64
    capsys.readouterr()
    assert main(["eval", "--run", str(run.run_dir)]) == 0
    assert "changed" not in capsys.readouterr().err
    os.utime(data, (1, 1))  # touched only: same content, no warning
    assert main(["eval", "--run", str(run.run_dir)]) == 0
    assert "changed" not in capsys.readouterr().err
    _blobs(data, seed=1)  # other images, same size
    assert main(["eval", "--run", str(run.run_dir)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "changed since training" in line] and len(err) == 1


def test_failures_are_one_line_with_exit_code_2(tmp_path, capsys, monkeypatch):
    data = _blobs(tmp_path / "blobs.npz")
    base = [
        "train",
        "--dataset",
        "npz",
        "--data-path",
        str(data),
        "--epochs",
        "1",
        "--T",
        "2",
        "--no-progress",
        "--no-report",
    ]

    def one_error(code, *needles):
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("esdsnn: error: "), err
        for needle in needles:
            assert needle in err[0]
        return err[0]

    one_error(
        main([*base, "--teacher-run", str(tmp_path), "--out", str(tmp_path / "a")]),
        "--teacher-run is read only by a distilling method (kd)",
    )
    one_error(
        main([*base, "--batch-size", "999", "--out", str(tmp_path / "b")]),
        "larger than the 144 training samples",
        "use --batch-size 144 or less",
    )
    one_error(main([*base, "--autoaugment", "--out", str(tmp_path / "c")]), "--autoaugment does not apply to npz")

    from esdsnn.train import session

    def no_memory(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 94371840000 bytes"
        )

    monkeypatch.setattr(session.Session, "_step", no_memory)
    # esd's memory does not grow with T: the fix is the batch or T, and the run can be continued
    line = one_error(
        main([*base, "--out", str(tmp_path / "d")]),
        "out of memory (",
        "can't allocate memory",
        "use a smaller --batch-size (now 8) or --T (now 2);",
        f"continue with esdsnn train --resume {tmp_path / 'd'}",
    )
    assert "--method" not in line
    one_error(
        main([*base, "--method", "bptt", "--out", str(tmp_path / "d2")]),
        "out of memory",
        "or a RateBP method (--method esd or ratebp), whose memory does not grow with T",
    )
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / "e"))

    monkeypatch.setattr("esdsnn.runs.files.new_run_dir", read_only)
    one_error(main([*base, "--out", str(tmp_path / "e")]), f"cannot access {tmp_path / 'e'}: Read-only file system")


def test_the_old_tau_is_still_read_with_a_notice(capsys):
    config = TrainConfig.from_dict({"tau": 2.5})
    assert config.distill.kd_tau == 2.5
    assert "'tau' in config is now 'kd_tau' (--kd-tau)" in capsys.readouterr().err
    assert math.isclose(TrainConfig.from_dict({"kd_tau": 1.5}).distill.kd_tau, 1.5)


def test_an_event_npz_trains_with_every_kind_of_pass(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = rng.poisson(0.3, (40, 3, 2, 8, 8)).astype(np.uint8)  # [N, T, C, H, W] event counts
    x[y == 1, :, 0, :4] += 2  # class 1: more ON events in the top half
    data = write_npz(tmp_path / "ev.npz", x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
    for method in ("esd", "bptt"):
        result = loop.train(_config(tmp_path, method, data, method=method, T=3, epochs=2, batch_size=8))
        s = result.summary
        assert s["time_steps_of_data"] == 3 and s["input_shape"] == [2, 8, 8] and s["test_total"] == 8


def test_thread_guard_drops_to_one_thread_when_steps_slow_down():
    from esdsnn.train.progress import ThreadGuard

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        guard = ThreadGuard(window=4, factor=2.5)
        guard.reference = 0.1
        assert [guard.check(0.2) for _ in range(4)] == [None] * 4 and torch.get_num_threads() == 2  # 2× is load noise
        lines = [guard.check(0.3) for _ in range(4)]  # once the median of the last 4 is 3× the first steps
        assert lines[:2] == [None, None] and lines[3] is None
        assert (
            lines[2]
            == "steps slowed from 0.1 s to 0.3 s (another job on the cores?): 2 -> 1 thread for the rest of this session"
        )
        assert torch.get_num_threads() == 1 and guard.check(1.0) is None
    finally:
        torch.set_num_threads(before)


def test_a_data_file_rewritten_within_the_second_of_the_run_is_seen_as_changed(tmp_path):
    """Same size, same whole-second modification time, other bytes (a file regenerated right after
    the run): the fingerprint must not take the fast path and call it unchanged."""
    from esdsnn.runs.fingerprint import data_changed, data_fingerprint

    path = tmp_path / "data.bin"
    path.write_bytes(b"a" * 64)
    second = 1_700_000_000 * 10**9
    os.utime(path, ns=(second + 100, second + 100))
    recorded = data_fingerprint(str(path))
    assert data_changed(recorded, str(path)) is None
    path.write_bytes(b"b" * 64)
    os.utime(path, ns=(second + 200, second + 200))
    assert "changed since training" in data_changed(recorded, str(path))
    path.write_bytes(b"a" * 64)  # the same bytes again, another time: unchanged (by the hash)
    assert data_changed(recorded, str(path)) is None
    old = {k: v for k, v in recorded.items() if k != "mtime_ns"}  # recorded by 0.2.0: no mtime_ns
    assert data_changed(old, str(path)) is None
    path.write_bytes(b"c" * 64)
    os.utime(path, ns=(second + 300, second + 300))
    assert "changed since training" in data_changed(old, str(path))

"""What a run directory says is what happened: readers fall back like resume does, config.yaml
records the epochs a run now has, a report of a run in training leaves summary.json to its writer,
a full disk names the fix, and settings the method does not read are refused before anything."""

import errno
import json

import numpy as np
import pytest
import yaml

from esdsnn.analysis.report import report_run
from esdsnn.cli import main
from esdsnn.config import TrainConfig, load_config
from esdsnn.errors import ConfigError
from esdsnn.runs import evaluate
from esdsnn.runs.checkpoint import BEST, LAST, PREVIOUS
from esdsnn.runs.files import read_metrics, read_summary
from esdsnn.runs.lock import RunLock
from esdsnn.train import loop, session

TINY = dict(method="bptt", T=1, batch_size=128, threads=1, progress=False, report=False)


def tiny_run(tmp_path, name="run", **changes):
    return loop.train(TrainConfig.from_dict({**TINY, "epochs": 1, "out": str(tmp_path / name), **changes}))


def one_line(capsys, kind="error"):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"esdsnn: {kind}: "), lines
    return lines[0]


def test_readers_fall_back_like_resume_with_one_line_and_say_what_to_do_when_nothing_reads(tmp_path, capsys):
    run = tiny_run(tmp_path, save_every_steps=4).run_dir
    want = evaluate(run)
    capsys.readouterr()
    last = run / LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated, as by a kill mid-copy

    got = evaluate(run)  # Python API: the most advanced readable one, best.pt (the weights of epoch 1)
    line = one_line(capsys, "warning")
    assert str(last) in line and "unreadable or corrupt" in line
    assert f"reading {run / BEST} (the end of epoch 1) instead" in line
    assert (got.checkpoint, got.epoch, got.correct) == (run / BEST, 1, want.correct)

    assert main(["report", "--run", str(run)]) == 0  # the report reads the same way
    assert f"reading {run / BEST}" in capsys.readouterr().err

    (run / BEST).write_bytes(b"garbage")  # then last.prev.pt: the step checkpoint last.pt replaced
    assert main(["eval", "--run", str(run), "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and f"reading {run / PREVIOUS} (epoch 1, step 8) instead" in err
    assert json.loads(out)["step"] == 8

    (run / PREVIOUS).write_bytes(b"garbage")
    assert main(["eval", "--run", str(run)]) == 2
    line = one_line(capsys)
    assert "unreadable or corrupt" in line and f"retrain it: esdsnn train --config {run / 'config.yaml'}" in line
    assert main(["eval", "--run", str(run), "--checkpoint", "best"]) == 2
    assert "(or read --checkpoint last)" in one_line(capsys)


def test_config_yaml_records_the_epochs_a_run_now_has(tmp_path):
    run = tiny_run(tmp_path).run_dir
    longer = loop.train(loop.resume_config(run, {"epochs": "2"}), resume=True)
    assert longer.summary["epochs"] == 2
    text = (run / "config.yaml").read_text()
    assert text.startswith("# epochs: extended from 1 to 2 by esdsnn train --resume after epoch 1")
    assert yaml.safe_load(text)["epochs"] == 2 and load_config(run / "config.yaml").optim.epochs == 2
    assert longer.summary["epochs_replanned"] == [{"from": 1, "to": 2, "after_epoch": 1}]
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == ["1", "2"]


def test_a_report_of_a_run_in_training_leaves_its_summary_to_the_writer(tmp_path, capsys):
    run = tiny_run(tmp_path).run_dir
    summary = (run / "summary.json").read_text()
    with RunLock(run):  # a writer holds the run (here: this process, through another open file)
        report_run(run)
    assert (run / "summary.json").read_text() == summary  # not merged: one writer
    assert "the run was still training" in (run / "report.md").read_text()
    assert "is still training" in capsys.readouterr().err
    report_run(run)  # no writer: the figures go into summary.json as before
    assert "avg_firing_rate" in read_summary(run)


def test_a_full_disk_names_the_run_and_the_command_that_continues_it(tmp_path, capsys, monkeypatch):
    save = session.save_checkpoint
    calls = []

    def fills_up(path, payload, **kwargs):  # the third save (after epoch 1) finds the disk full
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(path, payload, **kwargs)

    monkeypatch.setattr(session, "save_checkpoint", fills_up)
    run = tmp_path / "run"
    flags = ["--method", "bptt", "--T", "1", "--batch-size", "128", "--threads", "1", "--no-progress", "--no-report"]
    assert main(["train", *flags, "--epochs", "2", "--save-every-steps", "4", "--out", str(run)]) == 2
    line = one_line(capsys)
    assert (
        f"no space left on the device of {run} (No space left on device); free some space, then continue "
        f"with esdsnn train --resume {run}" in line
    )
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0  # and it does continue
    assert read_summary(run)["status"] == "completed"


def test_the_python_api_refuses_what_the_method_does_not_read(tmp_path):
    with pytest.raises(ConfigError, match=r"method bptt does not read alpha \(read only by esd, esd-bptt, sd\)"):
        loop.train(TrainConfig.from_dict({**TINY, "alpha": 2.0, "out": str(tmp_path / "a")}))
    with pytest.raises(ConfigError, match="method sd fixes teacher = 'all'"):
        TrainConfig.from_dict({"method": "sd", "teacher": "main"})
    assert not (tmp_path / "a").exists()


def test_a_small_data_set_gets_a_batch_that_fits(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 255, (n, 8, 8, 1)).astype(np.uint8)  # noqa: E731
    np.savez(
        tmp_path / "six.npz", x_train=images(6), y_train=np.arange(6) % 2, x_test=images(4), y_test=np.arange(4) % 2
    )
    base = [
        "train",
        "--dataset",
        "npz",
        "--data-path",
        str(tmp_path / "six.npz"),
        "--T",
        "1",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--no-progress",
        "--no-report",
    ]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0  # 4 samples after the split: batch 4, chosen
    assert read_summary(tmp_path / "a")["batch_size"] == 4
    capsys.readouterr()
    assert main([*base, "--batch-size", "5", "--out", str(tmp_path / "b")]) == 2
    assert "larger than the 4 training samples left after the validation split; use --batch-size 4 or less" in one_line(
        capsys
    )

"""A run directory has one writer: real processes on one run, a kill before the first checkpoint,
the lock itself, and what readers say while a run trains."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from esdsnn.cli import main
from esdsnn.config import TrainConfig
from esdsnn.errors import RunInUse
from esdsnn.runs import evaluate
from esdsnn.runs.claim import remove_stale_temporaries
from esdsnn.runs.files import read_metrics, read_summary
from esdsnn.runs.lock import LOCK_FILE, RunLock, holder
from esdsnn.train import loop

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = ["--method", "bptt", "--T", "1", "--batch-size", "128", "--threads", "1", "--no-progress", "--no-report"]


def esdsnn_cmd(*args):
    return [sys.executable, "-m", "esdsnn", *map(str, args)]


def wait_for(condition, proc, what, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, (f"ended before {what}", proc.communicate())
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esdsnn: error: ") and "Traceback" not in err, err
    return lines[0]


PAUSE_AFTER_EPOCH_1 = textwrap.dedent("""
    import pathlib, sys, time
    from esdsnn.train.session import Session

    end_epoch = Session._end_epoch

    def pause_after_epoch_1(self, epoch, lr):  # a real run, held after epoch 1 until the test says go
        end_epoch(self, epoch, lr)
        if epoch == 1:
            print("paused", flush=True)
            while not pathlib.Path(sys.argv[1]).exists():
                time.sleep(0.05)

    Session._end_epoch = pause_after_epoch_1
    from esdsnn.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_a_second_writer_is_refused_and_the_first_run_stays_intact(tmp_path, capsys):
    run, go = tmp_path / "run", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSE_AFTER_EPOCH_1, str(go), "train", *TINY, "--epochs", "3", "--out", str(run)],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in first.stdout:  # epoch 1 is done and saved; the run holds its lock, paused
            if line.strip() == "paused":
                break
        assert holder(run).pid == first.pid

        # a reader works meanwhile and says what it read
        result = evaluate(run)
        assert result.epoch == 1 and result.still_training is not None and f"pid {first.pid}" in result.still_training
        said = capsys.readouterr().err
        assert (
            f"{run} is still training (pid {first.pid}" in said
            and "last.pt from the end of epoch 1, not the final" in said
        )

        # `train --resume` of the running run: one line naming the holder, exit 2, nothing written
        second = subprocess.run(
            esdsnn_cmd("train", "--resume", run, "--no-progress"),
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = one_error_line(second.stderr)
        assert second.returncode == 2 and f"run directory {run} is being written by another esdsnn process" in line
        assert f"(pid {first.pid}, since " in line and "a run has one writer" in line
        # a new run into the same folder, in this process: the same refusal
        assert main(["train", "--out", str(run), *TINY]) == 2
        assert f"pid {first.pid}" in one_error_line(capsys.readouterr().err)
        assert first.poll() is None
        go.touch()
        _out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == ["1", "2", "3"]  # whole, in order
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["epochs"] == 3
    assert holder(run) is None  # released when the writer ended


KILL_IN_FIRST_SAVE = textwrap.dedent("""
    import sys, time
    import esdsnn.runs.checkpoint as checkpoint

    def stall(data, fh):  # the first save starts writing, then hangs until the process is killed
        fh.write(b"half a checkpoint")
        fh.flush()
        print("saving", flush=True)
        time.sleep(600)

    checkpoint.torch.save = stall
    from esdsnn.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_run_killed_before_its_first_checkpoint_starts_afresh_in_place(tmp_path, capsys):
    """SIGKILL during the first save: a config.yaml, no checkpoint, a temporary file. --resume (and
    a new run into the folder) start it afresh in place with a notice; eval says what to do."""
    run = tmp_path / "run"
    victim = subprocess.Popen(
        [sys.executable, "-c", KILL_IN_FIRST_SAVE, "train", *TINY, "--epochs", "1", "--out", str(run)],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in victim.stdout:
            if line.strip() == "saving":
                break
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert (run / "config.yaml").is_file() and not list(run.glob("*.pt"))
    assert [p.name for p in run.glob(".last.pt.*.tmp")]  # the killed save's temporary file
    assert holder(run) is None  # the OS released the lock of the killed process

    assert main(["eval", "--run", str(run)]) == 2
    assert f"stopped before its first checkpoint: start it again with esdsnn train --resume {run}" in one_error_line(
        capsys.readouterr().err
    )

    fresh_copy = tmp_path / "copy"
    shutil.copytree(run, fresh_copy)
    done = subprocess.run(
        esdsnn_cmd("train", "--resume", run), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"{run} holds a run that stopped before its first checkpoint (during set-up): starting it afresh" in done.stderr
    )
    assert "removed 1 temporary file(s)" in done.stderr
    assert read_summary(run)["status"] == "completed" and not list(run.glob(".*.tmp"))

    notices = []  # a new run into the copy: the same fresh start, in place
    result = loop.train(
        TrainConfig.from_dict(
            dict(
                method="bptt",
                T=1,
                epochs=1,
                batch_size=128,
                threads=1,
                progress=False,
                report=False,
                out=str(fresh_copy),
            )
        ),
        warn=notices.append,
    )
    assert result.status == "completed" and result.run_dir == fresh_copy
    assert any("starting it afresh in place" in n for n in notices)
    assert [r["epoch"] for r in read_metrics(fresh_copy / "metrics.csv")] == ["1"]


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    lock = RunLock(tmp_path).acquire()
    try:
        assert holder(tmp_path).pid == os.getpid()  # another open of the file sees it held
        with pytest.raises(
            RunInUse,
            match=rf"{tmp_path} is being written by another esdsnn process "
            rf"\(pid {os.getpid()}, since .*\); a run has one writer: do this",
        ):
            RunLock(tmp_path).acquire(fix="do this")
    finally:
        lock.release()
    assert holder(tmp_path) is None and (tmp_path / LOCK_FILE).is_file()  # the file stays, unlocked
    with RunLock(tmp_path):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = f"from esdsnn.runs.lock import RunLock; RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); input()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert holder(tmp_path).pid == proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert holder(tmp_path) is None
    RunLock(tmp_path).acquire().release()


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".last.pt.abc123.tmp", ".metrics.csv.x.tmp"):
        (tmp_path / name).write_bytes(b"\0" * 1000)
    (tmp_path / "last.pt").write_bytes(b"keep")
    (tmp_path / "notes.tmp").write_text("not ours: no leading dot")
    assert remove_stale_temporaries(tmp_path) == (2, 2000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.tmp"]

"""Files esdsnn writes get the mode the user's umask asks for (as ``open()`` would give them), not
the 0600 of a temporary file."""

import os
import stat

import pytest
import torch

from esdsnn.atomic import atomic_write, current_umask, default_file_mode, write_json_atomic, write_text_atomic
from esdsnn.cli import main
from esdsnn.runs.checkpoint import save_checkpoint


@pytest.fixture
def umask():
    """Set the process umask for one test; the previous one is restored after it."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(mask: int) -> None:
        os.umask(mask)

    yield set_umask
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writers_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask and default_file_mode() == expected
    write_text_atomic(tmp_path / "report.md", "# hi\n")
    write_json_atomic(tmp_path / "summary.json", {"test_acc": 0.5})
    with atomic_write(tmp_path / "blob.bin", "wb") as fh:
        fh.write(b"\0")
    save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.zeros(2)}, "config": {}, "epoch": 1})
    save_checkpoint(
        tmp_path / "last.pt",
        {"model": {"w": torch.ones(2)}, "config": {}, "epoch": 2},
        keep_previous=tmp_path / "last.prev.pt",
    )
    for name in ("report.md", "summary.json", "blob.bin", "last.pt", "last.prev.pt"):
        assert _mode(tmp_path / name) == expected, name
    # the same as a plain open() under this umask
    (tmp_path / "plain.txt").write_text("x")
    assert _mode(tmp_path / "plain.txt") == expected
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_replacing_a_file_gives_the_umask_mode_again(tmp_path, umask):
    umask(0o077)
    write_text_atomic(tmp_path / "a.txt", "private")
    assert _mode(tmp_path / "a.txt") == 0o600
    umask(0o022)
    write_text_atomic(tmp_path / "a.txt", "shared")
    assert _mode(tmp_path / "a.txt") == 0o644 and (tmp_path / "a.txt").read_text() == "shared"


def test_umask_read_leaves_it_unchanged(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027  # reading it did not reset it


def test_a_trained_run_is_readable_by_others_under_umask_022(tmp_path, umask):
    umask(0o022)
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--T",
            "1",
            "--batch-size",
            "128",
            "--threads",
            "1",
            "--no-progress",
            "--report",
            "--out",
            str(run),
        ]
    )
    assert code == 0
    names = (
        "metrics.csv",
        "summary.json",
        "config.yaml",
        "last.pt",
        "best.pt",
        "report.md",
        "firing_rates.json",
        "firing_rates.png",
        "training_curves.png",
    )
    modes = {name: oct(_mode(run / name)) for name in names}
    assert modes == {name: oct(0o644) for name in names}

"""What a comparison writes, from known records (no training): the figure, the tables' units, the
seed folders, and an output folder that cannot be written."""

import csv
import json
import os

import pytest

from esdsnn.analysis.comparison import (
    COMPARE_CSV,
    COMPARE_JSON,
    COMPARE_MD,
    compare_figure,
    summarise,
    write_compare_files,
)
from esdsnn.cli import main
from esdsnn.compare.runner import base_config, plan_runs
from esdsnn.config import save_config

TINY = dict(epochs=1, T=1, batch_size=128, threads=1)


def _record(method, acc, epoch_s, seed, role="method"):
    return {
        "method": method,
        "role": role,
        "seed": seed,
        "status": "completed",
        "test_acc": acc,
        "epoch_s_mean": epoch_s,
        "peak_rss_bytes": 300 * 2**20,
        "avg_firing_rate": 0.1,
        "energy_mj_per_sample": 0.01,
        "test_total": 500,
    }


# bptt: two seeds, 0.90 and 0.92 (mean 91 %, sample std sqrt(2)·1 % = 1.414 %); esd: one seed, 80 %.
RECORDS = [_record("bptt", 0.90, 2.0, 60), _record("bptt", 0.92, 4.0, 61), _record("esd", 0.80, 3.0, 60)]


def _panels(fig):
    return {ax.get_label(): ax for ax in fig.axes}


def _bars(ax):
    from matplotlib.container import BarContainer

    return [c for c in ax.containers if isinstance(c, BarContainer)]


def test_figure_bars_from_zero_with_n_and_std_only_where_n_is_2_or_more():
    fig = compare_figure(summarise(RECORDS), "digits")
    acc, time = _panels(fig)["accuracy"], _panels(fig)["time"]
    bptt, esd = _bars(acc)
    assert [p.get_height() for p in bptt] == pytest.approx([91.0]) and [p.get_y() for p in bptt] == [0]
    assert [p.get_height() for p in esd] == pytest.approx([80.0])
    assert acc.get_ylim()[0] == 0 and time.get_ylim()[0] == 0  # no truncated axis
    assert esd.errorbar is None  # one seed: no error bar, no zero-width caps
    (segment,) = bptt.errorbar.lines[2][0].get_segments()
    std = 100 * 0.02 / 2**0.5  # sample std of 90 and 92
    assert [y for _, y in segment] == pytest.approx([91 - std, 91 + std])
    t_bptt, t_esd = _bars(time)
    assert t_bptt[0].get_height() == pytest.approx(3.0) and t_esd.errorbar is None
    (segment,) = t_bptt.errorbar.lines[2][0].get_segments()
    assert [y for _, y in segment] == pytest.approx([3 - 2**0.5, 3 + 2**0.5])
    labels = [t.get_text() for t in acc.get_xticklabels()]
    assert labels == ["bptt\nn = 2", "esd\nn = 1"]
    assert "std" in fig.get_suptitle() and "n = completed seeds" in fig.get_suptitle()
    assert "%" in acc.get_ylabel()
    seeds = [line for line in acc.lines if line.get_label() == "one seed"]
    assert len(seeds) == 1 and list(seeds[0].get_ydata()) == pytest.approx([90, 92])


def test_single_seed_figure_says_there_are_no_error_bars():
    fig = compare_figure(summarise([_record("bptt", 0.9, 1.0, 60), _record("esd", 0.8, 1.0, 60)]))
    assert all(c.errorbar is None for ax in fig.axes for c in _bars(ax))
    assert all(len(_bars(ax)) == 2 for ax in fig.axes)
    assert "no error bars" in fig.get_suptitle()


def test_files_hold_fractions_and_markdown_says_percent(tmp_path):
    _rows, _markdown = write_compare_files(tmp_path, RECORDS, None, "digits")
    with (tmp_path / COMPARE_CSV).open(newline="") as fh:
        table = {r["method"]: r for r in csv.DictReader(fh)}
    assert float(table["bptt"]["test_acc_mean"]) == pytest.approx(0.91)
    assert float(table["bptt"]["test_acc_std"]) == pytest.approx(0.01414, abs=1e-5)
    assert table["bptt"]["test_accs"] == "0.9;0.92" and float(table["esd"]["vs_best"]) == pytest.approx(-0.11)
    records = json.loads((tmp_path / COMPARE_JSON).read_text())["records"]
    assert [r["test_acc"] for r in records] == [0.90, 0.92, 0.80]
    md = (tmp_path / COMPARE_MD).read_text()
    assert "| method | n | test accuracy (%, mean ± std) | vs best (pp) |" in md
    assert "| bptt | 2 | 91.00 ± 1.41 | best |" in md and "| esd | 1 | 80.00 | -11.00 |" in md
    assert "(One test sample is 0.20 pp.)" in md


def test_seed_folders_are_named_by_seed_and_old_index_folders_still_found(tmp_path):
    base = base_config(None, dict(TINY, seed=60))
    old = tmp_path / "esd" / "seed1"  # an older comparison's folder of seed 61
    old.mkdir(parents=True)
    save_config(base.replace(method="esd", seed=61, out=str(old)), old / "config.yaml")
    other = tmp_path / "esd" / "seed0"  # an index folder holding another seed: not this run
    other.mkdir()
    save_config(base.replace(method="esd", seed=7, out=str(other)), other / "config.yaml")
    dirs = [p.run_dir.relative_to(tmp_path).as_posix() for p in plan_runs(base, ["bptt", "esd"], 2, tmp_path)]
    assert dirs == ["bptt/seed-60", "bptt/seed-61", "esd/seed-60", "esd/seed1"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file modes")
def test_unwritable_out_is_one_line_and_exit_2(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = main(
            [
                "compare",
                "--methods",
                "bptt",
                "--seeds",
                "1",
                "--out",
                str(locked / "cmp"),
                "--epochs",
                "1",
                "--T",
                "1",
                "--batch-size",
                "128",
                "--threads",
                "1",
            ]
        )
        captured = capsys.readouterr()
    finally:
        locked.chmod(0o700)
    assert code == 2
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith(f"esdsnn: error: cannot write to {locked / 'cmp'}: ")
    assert "Permission denied" in captured.err and captured.err.rstrip().endswith("choose another --out")
    assert "[Errno" not in captured.err
    assert not (locked / "cmp").exists()


def test_read_only_file_system_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    """The same under root, where modes do not stop writes: the file system refuses (EROFS)."""
    import errno
    from pathlib import Path

    out = tmp_path / "cmp"

    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    code = main(["compare", "--methods", "bptt", "--seeds", "1", "--out", str(out), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err == f"esdsnn: error: cannot write to {out}: Read-only file system; choose another --out\n"

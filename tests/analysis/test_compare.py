"""esdsnn compare: runs per method × seed in fresh processes, reuse and resume, the table, kd's teacher."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from esdsnn.analysis.comparison import (
    COMPARE_CSV,
    COMPARE_JSON,
    COMPARE_MD,
    COMPARE_PNG,
    CSV_COLUMNS,
    noise_note,
    summarise,
    tables_from_json,
)
from esdsnn.cli import main
from esdsnn.compare.runner import RUN_SIDECAR, base_config, plan_runs, run_comparison, run_state
from esdsnn.config import save_config
from esdsnn.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
# The smallest budget that still trains: digits, one epoch, T=1, few large batches, one thread.
TINY = dict(epochs=1, T=1, batch_size=128, threads=1)


def _mtimes(paths):
    return {str(p): p.stat().st_mtime_ns for p in paths}


def test_compare_writes_table_and_reuses_finished_runs(tmp_path):
    out = tmp_path / "cmp"
    lines = []
    result = run_comparison(base_config(None, TINY), ["bptt", "esd"], 2, out, echo=lines.append)

    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/seed*")) == [
        "bptt/seed-60",
        "bptt/seed-61",
        "esd/seed-60",
        "esd/seed-61",
    ]
    for name in (COMPARE_MD, COMPARE_CSV, COMPARE_PNG, COMPARE_JSON):
        assert (out / name).is_file()
    assert (out / COMPARE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(result.how.values()) == {"trained"}

    records = result.records
    assert [(r["method"], r["seed"]) for r in records] == [("bptt", 60), ("bptt", 61), ("esd", 60), ("esd", 61)]
    for r in records:
        assert r["status"] == "completed" and 0 <= r["test_acc"] <= 1
        assert r["epoch_s_mean"] > 0 and r["threads"] == 1 and r["T"] == 1
        assert r["peak_rss_bytes"] > 50 * 2**20  # the whole training process, torch included
        assert r["avg_firing_rate"] is not None

    with (out / COMPARE_CSV).open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [r["method"] for r in rows] == ["bptt", "esd"] and {r["n_seeds"] for r in rows} == {"2"}
    accs = [float(a) for a in rows[1]["test_accs"].split(";")]
    assert float(rows[1]["test_acc_mean"]) == pytest.approx(np.mean(accs), abs=1e-5)
    assert float(rows[1]["test_acc_std"]) == pytest.approx(np.std(accs, ddof=1), abs=1e-5)

    md = (out / COMPARE_MD).read_text()
    assert md == result.markdown
    assert (
        "| method | n | test accuracy (%, mean ± std) | vs best (pp) | time / epoch (s) | peak RSS (MiB) | avg firing rate |"
        in md
    )
    assert md.count("\n| bptt | 2 |") == 1 and md.count("\n| esd | 2 |") == 1
    assert "Noise:" in md and "1 thread(s)" in md and "T=1" in md

    # a second call trains nothing: same summaries, untouched files, "reused" said
    summaries = list(out.glob("*/seed*/summary.json"))
    before = _mtimes(summaries)
    lines.clear()
    again = run_comparison(base_config(None, TINY), "bptt,esd", 2, out, echo=lines.append)
    assert set(again.how.values()) == {"reused"}
    assert _mtimes(summaries) == before
    assert any("4 of 4 run(s) already finished" in line for line in lines)
    assert [r["test_acc"] for r in again.records] == [r["test_acc"] for r in records]
    assert [r["peak_rss_bytes"] for r in again.records] == [r["peak_rss_bytes"] for r in records]

    # the tables can be rebuilt from compare.json alone
    _rows2, md2 = tables_from_json(out)
    assert md2.splitlines()[:4] == md.splitlines()[:4]


def test_kd_trains_an_ann_teacher_per_seed_and_passes_it(tmp_path):
    out = tmp_path / "cmp"
    result = run_comparison(base_config(None, TINY), ["kd"], 1, out, echo=lambda line: None)
    assert [(r["method"], r["role"]) for r in result.records] == [("ann", "teacher"), ("kd", "method")]
    kd_config = yaml.safe_load((out / "kd/seed-60/config.yaml").read_text())
    assert kd_config["method"] == "kd" and Path(kd_config["teacher_run"]) == (out / "ann/seed-60").resolve()
    assert yaml.safe_load((out / "ann/seed-60/config.yaml").read_text())["method"] == "ann"
    assert [r["method"] for r in result.rows] == ["kd", "ann"]  # the teacher row last, outside the ranking
    assert result.rows[1]["vs_best"] is None and result.rows[0]["best"]
    assert "| ann (kd teacher) | 1 |" in result.markdown

    # the kd run is reused while its teacher is unchanged, retrained when the teacher was retrained
    plans = plan_runs(base_config(None, TINY), ["kd"], 1, out)
    kd = plans[1]
    assert run_state(kd) == ("done", "completed")
    summary = out / "ann/seed-60/summary.json"
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps({**data, "wall_s": data["wall_s"] + 1.0}))
    assert run_state(kd)[0] == "restart"


def test_interrupted_compare_resumes_the_incomplete_run(tmp_path):
    out = tmp_path / "cmp"
    cmd = [
        sys.executable,
        "-m",
        "esdsnn",
        "compare",
        "--methods",
        "bptt",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--epochs",
        "3",
        "--T",
        "1",
        "--batch-size",
        "128",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "epoch 1/3" in line:  # Ctrl-C to the whole process group, as a terminal would send it
            os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130, "".join(seen)
    assert "run the same command again to continue" in "".join(seen)
    summary = yaml.safe_load((out / "bptt/seed-60/summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs"] < 3

    result = run_comparison(base_config(None, dict(TINY, epochs=3)), ["bptt"], 1, out, echo=lambda line: None)
    assert list(result.how.values()) == ["resumed"]
    assert result.records[0]["status"] == "completed" and result.records[0]["epochs"] == 3
    sidecar = yaml.safe_load((out / "bptt/seed-60" / RUN_SIDECAR).read_text())
    assert sidecar["sessions"] == 2 and sidecar["peak_rss_bytes"] > 0


def test_runs_with_other_settings_are_an_error_before_anything_trains(tmp_path):
    out = tmp_path / "cmp"
    plans = plan_runs(base_config(None, TINY), ["bptt", "esd"], 1, out)
    esd_dir = plans[1].run_dir
    esd_dir.mkdir(parents=True)
    save_config(plans[1].config.replace(lr=0.05), esd_dir / "config.yaml")
    with pytest.raises(ConfigError, match=r"other settings \(lr: 0\.05 -> 0\.1\).*--overwrite"):
        run_comparison(base_config(None, TINY), ["bptt", "esd"], 1, out, echo=lambda line: None)
    assert not (out / "bptt").exists()


def test_plan_seeds_dirs_and_shared_teacher(tmp_path):
    plans = plan_runs(base_config(None, dict(TINY, seed=5)), ["ann", "kd", "bptt"], 2, tmp_path)
    assert [(p.method, p.seed, p.run_dir.relative_to(tmp_path).as_posix()) for p in plans] == [
        ("ann", 5, "ann/seed-5"),
        ("ann", 6, "ann/seed-6"),
        ("kd", 5, "kd/seed-5"),
        ("kd", 6, "kd/seed-6"),
        ("bptt", 5, "bptt/seed-5"),
        ("bptt", 6, "bptt/seed-6"),
    ]
    assert all(p.role == "method" for p in plans)  # ann compared in its own right, and teaching kd
    assert plans[2].teacher is plans[0] and plans[3].teacher is plans[1]
    with pytest.raises(ConfigError, match="seeds must be"):
        plan_runs(base_config(None, TINY), ["bptt"], 0, tmp_path)
    with pytest.raises(ConfigError, match="unknown method"):
        plan_runs(base_config(None, TINY), ["bptt", "nope"], 1, tmp_path)


def _record(method, acc, role="method"):
    return {
        "method": method,
        "role": role,
        "status": "completed",
        "test_acc": acc,
        "epoch_s_mean": 1.0,
        "peak_rss_bytes": 2**20,
        "avg_firing_rate": 0.1,
        "energy_mj_per_sample": 0.01,
    }


def test_noise_verdicts_by_hand():
    # means: esd .91 (std .01), ratebp .90 (std .01), sd .88 (std .0): combined std with esd is
    # sqrt(2)*.01 = .0141 for ratebp (diff .01: within) and .01 for sd (diff .03: beyond).
    records = (
        [_record("ratebp", a) for a in (0.89, 0.91)]
        + [_record("esd", a) for a in (0.90, 0.92)]
        + [_record("sd", a) for a in (0.88, 0.88)]
        + [_record("ann", a, "teacher") for a in (0.99, 0.99)]
    )
    rows = {r["method"]: r for r in summarise(records)}
    assert rows["esd"]["best"] and rows["esd"]["test_acc_std"] == pytest.approx(0.01 * 2**0.5)
    assert rows["ratebp"]["within_noise_of_best"] is True and rows["ratebp"]["vs_best"] == pytest.approx(-0.01)
    assert rows["sd"]["within_noise_of_best"] is False
    assert rows["ann"]["within_noise_of_best"] is None  # a teacher is not ranked, though its mean is higher
    note = noise_note(list(rows.values()))
    assert "best mean is esd (91.00 %)" in note
    assert "ratebp lies within one combined std" in note
    assert "sd (-3.00 pp" in note and "(beyond noise)" in note
    assert "esd − sd, the ablation): +3.00 pp" in note and "beyond one combined std" in note
    one_seed = summarise([_record("bptt", 0.9), _record("esd", 0.8)])
    assert "fewer than 2 completed seeds" in noise_note(one_seed)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "bptt,nope"], "unknown method(s) 'nope'"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--methods", ""], "--methods is empty"),
        (["--epochs", "0"], "epochs must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main(["compare", "--out", str(tmp_path / "c"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("esdsnn: error: ") and message in err
    assert not (tmp_path / "c").exists()


def test_shapes_npz_script_makes_a_loadable_data_set(tmp_path):
    spec = importlib.util.spec_from_file_location("make_shapes_npz", ROOT / "examples" / "make_shapes_npz.py")
    shapes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shapes)
    path = tmp_path / "shapes.npz"
    shapes.main(["--out", str(path), "--train", "60", "--test", "30", "--size", "16", "--seed", "3"])
    again = shapes.make_shapes(60, 30, 16, seed=3)
    with np.load(path) as data:
        assert data["x_train"].shape == (60, 16, 16, 3) and data["x_train"].dtype == np.uint8
        assert data["x_test"].shape == (30, 16, 16, 3) and data["y_test"].dtype == np.int64
        assert np.array_equal(data["x_train"], again["x_train"])  # seeded: same bytes again
        assert sorted(np.bincount(data["y_train"])) == [10] * 6
        assert data["x_train"].std() > 20  # not blank images
    from esdsnn.data.arrays import read_npz

    x_train, y_train, _x_test, _y_test = read_npz(path)
    assert x_train.shape == (60, 3, 16, 16) and int(y_train.max()) == 5

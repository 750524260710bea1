"""compare runs what it says: a reused run matches every result-changing setting (epochs too),
a finished shorter or re-planned run is refused with the fix, runs in training and a second
comparison are refused, options no compared method reads are refused, and the table and figure
state the settings read from the runs."""

import json

import pytest

from esdsnn.analysis.comparison import COMPARE_JSON, compare_figure, settings_title, summarise
from esdsnn.cli import main
from esdsnn.compare.runner import base_config, plan_runs, run_comparison, run_state
from esdsnn.config import save_config
from esdsnn.errors import ConfigError, RunInUse
from esdsnn.runs.lock import RunLock
from esdsnn.train import loop

TINY = dict(epochs=1, T=1, batch_size=128, threads=1)


def fake_finished(plan, **summary):
    """A finished run as compare finds it on disk (config.yaml and summary.json), without training."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    save_config(plan.config, plan.run_dir / "config.yaml")
    c = plan.config
    record = dict(
        status="completed",
        test_acc=0.5,
        test_total=360,
        epochs=c.optim.epochs,
        method=c.method,
        arch=c.arch or "digits_resnet",
        T=c.T,
        batch_size=c.optim.batch_size or 16,
        lr=c.optim.lr,
        dataset=c.dataset,
        seed=c.seed,
        torch="x",
        device="cpu",
        threads=1,
        cpu_count=2,
    )
    (plan.run_dir / "summary.json").write_text(json.dumps({**record, **summary}))
    (plan.run_dir / "metrics.csv").write_text("epoch,epoch_s\n1,1.0\n")


def test_a_finished_shorter_run_is_refused_not_reported_as_the_longer_one(tmp_path, capsys):
    out = tmp_path / "cmp"
    (plan,) = plan_runs(base_config(None, TINY), ["bptt"], 1, out)
    loop.train(plan.config)  # a real finished 1-epoch run where compare looks for it
    assert run_state(plan) == ("done", "completed")
    (longer,) = plan_runs(base_config(None, dict(TINY, epochs=2)), ["bptt"], 1, out)
    state, why = run_state(longer)
    assert state == "mismatch" and "epochs: 1 -> 2" in why and "a finished 1-epoch run is not extended" in why

    capsys.readouterr()
    argv = [
        "compare",
        "--methods",
        "bptt",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--T",
        "1",
        "--batch-size",
        "128",
        "--threads",
        "1",
    ]
    assert main(argv) == 2  # refused before anything trains, with the fix
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs: 1 -> 2" in err[0] and "use another --out, or --overwrite to retrain" in err[0]
    assert json.loads((plan.run_dir / "summary.json").read_text())["epochs"] == 1  # untouched


def test_a_run_whose_epochs_were_replanned_is_not_reused(tmp_path):
    (plan,) = plan_runs(base_config(None, dict(TINY, epochs=2)), ["bptt"], 1, tmp_path)
    fake_finished(plan, epochs_replanned=[{"from": 1, "to": 2, "after_epoch": 1}])
    state, why = run_state(plan)
    assert state == "mismatch" and "changed from 1 to 2 by --resume after epoch 1" in why


def test_a_run_in_training_and_a_second_comparison_are_refused(tmp_path):
    out = tmp_path / "cmp"
    plans = plan_runs(base_config(None, TINY), ["bptt", "esd"], 1, out)
    plans[1].run_dir.mkdir(parents=True)
    with RunLock(plans[1].run_dir):  # another process trains esd's run
        with pytest.raises(RunInUse, match=rf"{plans[1].run_dir} is being trained by another esdsnn process"):
            run_comparison(base_config(None, TINY), ["bptt", "esd"], 1, out, echo=lambda line: None)
    assert not (out / "bptt").exists()  # nothing trained
    with RunLock(out, what="comparison folder"):
        with pytest.raises(RunInUse, match=rf"comparison folder {out} is being written by another esdsnn process"):
            run_comparison(base_config(None, TINY), ["bptt"], 1, out, echo=lambda line: None)


def test_shared_options_act_only_where_a_method_reads_them(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"none of the compared methods \(bptt, ratebp\) reads alpha"):
        plan_runs(base_config(None, dict(TINY, alpha=2.0)), ["bptt", "ratebp"], 1, tmp_path)
    assert main(["compare", "--methods", "bptt", "--alpha", "2", "--out", str(tmp_path / "c")]) == 2
    assert "none of the compared methods (bptt) reads alpha" in capsys.readouterr().err
    plans = plan_runs(base_config(None, dict(TINY, alpha=2.0, teacher="main")), ["bptt", "esd", "sd"], 1, tmp_path)
    got = {p.method: (p.config.distill.alpha, p.config.distill.teacher) for p in plans}
    # bptt's config.yaml records no ESD option it never read; sd keeps the teacher it fixes
    assert got == {"bptt": (1.0, "reliable"), "esd": (2.0, "main"), "sd": (2.0, "all")}


def test_the_header_table_and_figure_state_the_settings_read_from_the_runs(tmp_path):
    out = tmp_path / "cmp"
    base = base_config(None, dict(epochs=1, T=1, threads=1, dataset="npz", data_path=str(tmp_path / "d.npz")))
    plans = plan_runs(base, ["bptt", "esd"], 2, out)
    for plan in plans:  # each run sized its arch and batch to the data (not in the request)
        fake_finished(plan, arch="compact_resnet", batch_size=16)
    lines = []
    result = run_comparison(base, ["bptt", "esd"], 2, out, echo=lines.append)
    assert set(result.how.values()) == {"reused"}
    assert "arch sized to the data" in lines[0] and "batch sized to the data" in lines[0] and "None" not in lines[0]
    title = json.loads((out / COMPARE_JSON).read_text())["title"]
    assert title == "npz: compact_resnet, T=1, 1 epochs, batch 16, 2 seed(s)"
    assert "Settings: npz, compact_resnet, T=1, 1 epochs, batch 16" in result.markdown
    fig = compare_figure(summarise(result.records), title)
    fig.canvas.draw()  # the title fits inside the figure: nothing clipped at its edges
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and title in fig._suptitle.get_text()


def test_the_title_says_where_runs_differ():
    records = [
        {
            "dataset": "digits",
            "arch": "a",
            "T": 4,
            "epochs": e,
            "batch_size": 64,
            "status": "completed",
            "role": "method",
            "seed": 60,
        }
        for e in (1, 2)
    ]
    assert settings_title(records) == "digits: a, T=4, 1/2 epochs, batch 64, 1 seed(s)"

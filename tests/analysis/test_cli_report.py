"""`esdsnn report` on a saved run, and bad input to `report`/`bench`."""

import json

from esdsnn.cli import main


def test_report_command_on_a_saved_digits_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(run), "--no-progress", "--no-report"]) == 0
    assert "avg_firing_rate" not in json.loads((run / "summary.json").read_text())
    assert main(["report", "--run", str(run)]) == 0
    assert "firing rate" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 < summary["avg_firing_rate"] < 1.0
    assert summary["energy_mj_per_sample"] > 0
    for name in ("report.md", "firing_rates.json", "firing_rates.png", "training_curves.png"):
        assert (run / name).is_file(), name
    assert "estimate" in (run / "report.md").read_text()


def test_report_and_bench_bad_input(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path / "missing")]) == 2
    assert main(["bench", "--methods", "magic", "--T", "1", "--no-loaders", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--threads", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("esdsnn: error:") for line in err)

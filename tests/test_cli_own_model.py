"""A researcher's own model named on the command line (--arch package.module:factory): train, eval,
report and resume rebuild it from config.yaml; a module that does not import is one error line."""

import json
import os
import subprocess
import sys
import textwrap

import yaml

FACTORY = textwrap.dedent("""
    import torch.nn as nn
    from esdsnn import layers as snn

    def csnn(num_classes, in_channels, **lif):
        return nn.Sequential(
            snn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), snn.LIF(**lif),
            snn.Conv2d(16, 32, 3, padding=1, stride=2, bias=False), snn.BatchNorm2d(32), snn.LIF(**lif),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))
""")


def run(args, cwd, pythonpath):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "esdsnn", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_own_factory_trains_evaluates_reports_and_resumes(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "mynets.py").write_text(FACTORY)
    out = tmp_path / "run"
    train = run(
        [
            "train",
            "--arch",
            "mynets:csnn",
            "--method",
            "esd",
            "--stages",
            "2",
            "--epochs",
            1,
            "--T",
            2,
            "--decay",
            0.3,
            "--threads",
            1,
            "--no-progress",
            "--out",
            out,
        ],
        tmp_path,
        tmp_path / "code",
    )
    assert train.returncode == 0, train.stderr
    assert "1: BatchNorm2d -> RateBatchNorm2d" in train.stderr  # the plain BatchNorm, converted with a notice
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["arch"] == "mynets:csnn" and saved["stages"] == ["2"] and saved["decay"] == 0.3
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["avg_firing_rate"] < 1 and (out / "report.md").is_file()
    evaluated = run(["eval", "--run", out, "--json"], tmp_path, tmp_path / "code")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["correct"] == summary["test_correct"]
    assert run(["report", "--run", out], tmp_path, tmp_path / "code").returncode == 0
    resumed = run(["train", "--resume", out], tmp_path, tmp_path / "code")
    assert resumed.returncode == 0 and "already complete" in resumed.stdout


def test_a_factory_that_does_not_import_or_fails_is_one_line(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "broken.py").write_text(
        "def net(num_classes, in_channels, **lif):\n    raise RuntimeError('no')\n"
    )
    for arch, fragment in (
        ("nothere:net", "cannot import nothere"),
        ("broken:missing", "has no function missing"),
        ("broken:net", "model factory broken:net failed: RuntimeError: no"),
    ):
        proc = run(
            ["train", "--arch", arch, "--epochs", 1, "--no-progress", "--out", tmp_path / arch.replace(":", "-")],
            tmp_path,
            tmp_path / "code",
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr


NOT_LOGITS = textwrap.dedent("""
    import torch.nn as nn
    from esdsnn import layers as snn

    def body(c):
        return [snn.Conv2d(c, 8, 3, padding=1, bias=False), snn.BatchNorm2d(8), snn.LIF(), nn.AvgPool2d(2)]

    class WithFeatures(nn.Module):
        def __init__(self, c, k):
            super().__init__()
            self.f, self.head = nn.Sequential(*body(c)), nn.Sequential(nn.Flatten(), nn.LazyLinear(k))
        def forward(self, x):
            f = self.f(x)
            return self.head(f), f

    class MeanOverTime(nn.Module):
        def __init__(self, c, k, T):
            super().__init__()
            self.T, self.f = T, nn.Sequential(*body(c), nn.Flatten(), nn.LazyLinear(k))
        def forward(self, x):
            out = self.f(x)
            return out.view(self.T, -1, out.shape[-1]).mean(0)

    def with_features(num_classes, in_channels, **lif):
        return WithFeatures(in_channels, num_classes)

    def feature_map(num_classes, in_channels, **lif):
        return nn.Sequential(*body(in_channels))

    def mean_over_time(num_classes, in_channels, **lif):
        return MeanOverTime(in_channels, num_classes, T=2)
""")


def test_a_model_that_does_not_return_logits_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    from esdsnn.cli import main

    (tmp_path / "notlogits.py").write_text(NOT_LOGITS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for factory, fragment in (
        ("with_features", "the model returns a tuple of 2 values; it must return one tensor"),
        ("feature_map", "the model returns a feature map, [8, 4, 4] per step and sample, not logits"),
        ("mean_over_time", "it averages over the time steps itself"),
    ):
        out = tmp_path / factory
        code = main(
            [
                "train",
                "--arch",
                f"notlogits:{factory}",
                "--method",
                "bptt",
                "--T",
                "2",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("esdsnn: error: ") and fragment in err[0], err
        assert "stages=" not in err[0] and "esdsnn.predict" not in err[0]  # no Python-API hint on the command line
        assert not out.exists()  # checked before anything is written

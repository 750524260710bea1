"""``esdsnn bench`` around the measurement: its output folder, the input shape, and one-line
errors for an unwritable folder and for running out of memory."""

import json
import re

import pytest

from esdsnn.analysis import bench
from esdsnn.analysis.bench_report import bench_markdown
from esdsnn.cli import main
from esdsnn.errors import ConfigError

TINY_ARGS = [
    "--arch",
    "digits_resnet",
    "--methods",
    "bptt",
    "--T",
    "1",
    "--batch",
    "2",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--no-progress",
]


def test_input_shape_follows_the_arch_or_the_data_set():
    assert bench.bench_inputs("digits_resnet") == ([1, 8, 8], 10, False)
    assert bench.bench_inputs("resnet18") == ([3, 32, 32], 10, False)
    assert bench.bench_inputs("resnet18", dataset="cifar100") == ([3, 32, 32], 100, False)
    assert bench.bench_inputs("vggsnn") == ([2, 48, 48], 10, True)
    assert bench.bench_inputs("resnet18", input_shape=[3, 16, 16], num_classes=5) == ([3, 16, 16], 5, False)
    with pytest.raises(ConfigError):
        bench.bench_inputs("resnet18", dataset="mnist")


def test_cli_bench_writes_a_timestamped_folder_with_the_arch_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *TINY_ARGS]) == 0
    assert main(["bench", *TINY_ARGS]) == 0  # a second run gets a folder of its own
    runs = sorted((tmp_path / "bench").iterdir())
    assert len(runs) == 2 and all(re.fullmatch(r"\d{8}-\d{6}(-\d+)?", p.name) for p in runs)
    for run in runs:
        (record,) = json.loads((run / "bench.json").read_text())
        assert "error" not in record, record["error"]
        assert record["input_shape"] == [1, 8, 8]  # digits_resnet's 8×8 digits, not CIFAR's 32×32
        assert not (run / "loaders.json").exists()  # the input pipelines only on request
    assert "results in bench/" in capsys.readouterr().out


def test_a_folder_holding_a_benchmark_is_refused_unless_overwritten(tmp_path, capsys):
    (tmp_path / "bench.json").write_text("[]")
    assert main(["bench", *TINY_ARGS, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a benchmark" in err and len(err.splitlines()) == 1
    assert main(["bench", *TINY_ARGS, "--out", str(tmp_path), "--overwrite"]) == 0
    assert len(json.loads((tmp_path / "bench.json").read_text())) == 1


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_output_folder_is_one_line_and_exit_2(tmp_path, capsys, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "bench"
    else:
        out = "/proc/esdsnn-bench-test"
    assert main(["bench", *TINY_ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("esdsnn: error: cannot write the benchmark to") and len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_out_of_memory_in_a_worker_is_one_line_with_the_fix(tmp_path):
    """A real allocation failure (an absurd batch) in a fresh worker, and the OS killing one."""
    cfg = dict(
        arch="digits_resnet",
        method="bptt",
        T=2,
        batch=2**40,
        threads=1,
        input_shape=[1, 8, 8],
        num_classes=10,
        repeats=1,
        warmup=0,
        device="cpu",
    )
    r = bench._run_worker(cfg, timeout_s=300)
    assert r["step_s"] is None and r["error"].startswith("out of memory")
    assert "--batch" in r["error"] and "--method esd" in r["error"] and "\n" not in r["error"]
    killed = bench.failure_reason(-9, "")
    assert killed.startswith("out of memory") and "signal 9" in killed and "--method esd" in killed
    row = bench_markdown([{**r, "T": 2}])
    assert "| bptt | 2 | failed: out of memory" in row


def test_compiled_neuron_rows_are_labelled_and_bad_choices_refused(tmp_path):
    rows = [
        {
            "method": "bptt",
            "T": 2,
            "step_s": 1.0,
            "peak_mem_bytes": 2**20,
            "limit_s": None,
            "neurons": n,
            "arch": "resnet18",
            "batch": 2,
            "device": "cpu",
            "threads": 1,
            "torch": "2",
        }
        for n in ("eager", "compiled")
    ]
    md = bench_markdown(rows)
    assert "| bptt | 2 |" in md and "| bptt (compiled) | 2 |" in md
    with pytest.raises(ConfigError, match="neurons"):
        bench.run_bench(methods=["bptt"], Ts=[1], neurons="jit", out_dir=tmp_path, progress=False)

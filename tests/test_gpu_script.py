"""benchmarks/gpu.sh, the prepared GPU run, exercised on the CPU for everything but CUDA: device
facts, the benchmark under two precisions with the SpikingJelly row, and the tables."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_script_runs_its_cpu_parts(tmp_path):
    pytest.importorskip("spikingjelly")
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "ARCH": "digits_resnet",
        "BATCH": "4",
        "TS": "1",
        "METHODS": "esd",
        "PRECISIONS": "32,bf16-mixed",
        "REPEATS": "1",
        "WARMUP": "0",
        "TESTS": "0",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    device = json.loads((tmp_path / "out" / "device.json").read_text())
    assert device["cuda_available"] in (True, False) and device["cpu_capability"]
    records = json.loads((tmp_path / "out" / "bench" / "bench.json").read_text())
    assert [(r["method"], r["precision"]) for r in records] == [
        ("esd", "32"),
        ("spikingjelly-bptt", "32"),
        ("esd", "bf16-mixed"),
        ("spikingjelly-bptt", "bf16-mixed"),
    ]
    assert all("error" not in r for r in records), [r.get("error") for r in records]
    md = (tmp_path / "out" / "bench" / "bench.md").read_text()
    assert "time / SJ BPTT" in md and "| esd [bf16-mixed] | 1 |" in md

"""Training-step benchmark: fresh-process workers, records, table and figure."""
import json
import math

import pytest

from esdsnn.analysis.bench import RECORD_KEYS, _run_worker, bench_markdown, measure_config, run_bench
from esdsnn.errors import ConfigError

SMALL = dict(arch="digits_resnet", batch=4, threads=1, input_shape=(1, 8, 8), num_classes=10, repeats=2, warmup=1, device="cpu")


def test_run_bench_end_to_end(tmp_path):
    records = run_bench(methods=["bptt", "esd"], Ts=[1, 2], out_dir=tmp_path, progress=False, **SMALL)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved == records
    assert [(r["method"], r["T"]) for r in saved] == [("bptt", 1), ("bptt", 2), ("esd", 1), ("esd", 2)]
    for r in saved:
        assert "error" not in r, r.get("error")
        assert set(RECORD_KEYS) <= set(r)
        assert r["step_s"] > 0 and math.isfinite(r["step_s"])
        assert isinstance(r["peak_mem_bytes"], int) and r["peak_mem_bytes"] >= 0
        assert (r["device"], r["threads"], r["batch"], r["arch"]) == ("cpu", 1, 4, "digits_resnet")
        assert r["torch"].startswith("2.")
        if r["method"] == "esd":  # the RateBP limit: T no-grad forwards + one step at T = 1
            assert r["limit_s"] == pytest.approx(r["T"] * r["limit_forward_s"] + r["limit_fwd_bwd_s"])
        else:
            assert r["limit_s"] is None
    md = (tmp_path / "bench.md").read_text()
    assert "| method | T | step (s) |" in md and md.count("\n| esd |") == 2 and "1 thread(s)" in md
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measure_config_in_process():
    r = measure_config(method="ratebp", T=3, **SMALL)
    assert r["method"] == "ratebp" and r["T"] == 3 and len(r["step_times_s"]) == 2
    assert r["limit_s"] > r["limit_fwd_bwd_s"] > 0
    assert r["first_steps_peak_mem_bytes"] >= r["peak_mem_bytes"] >= 0


def test_failed_worker_gives_error_record_and_table_row():
    cfg = dict(SMALL, method="bptt", T=1, arch="no_such_model", input_shape=[1, 8, 8])
    r = _run_worker(cfg, timeout_s=120)
    assert "error" in r and r["step_s"] is None and set(RECORD_KEYS) <= set(r)
    assert "failed" in bench_markdown([r])


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        run_bench(methods=["nope"], Ts=[1], out_dir=tmp_path, progress=False, **{k: v for k, v in SMALL.items()})
    with pytest.raises(ConfigError):
        run_bench(methods=["bptt"], Ts=[0], out_dir=tmp_path, progress=False, **SMALL)

"""Training-step benchmark: fresh-process workers, records, table and figure."""

import json
import math

import pytest
import torch

import esdsnn
from esdsnn.analysis.bench import RECORD_KEYS, _run_worker, measure_config, run_bench
from esdsnn.analysis.bench_report import bench_markdown
from esdsnn.errors import ConfigError

SMALL = dict(
    arch="digits_resnet", batch=4, threads=1, input_shape=(1, 8, 8), num_classes=10, repeats=2, warmup=1, device="cpu"
)


def test_run_bench_end_to_end(tmp_path):
    records = run_bench(methods=["bptt", "esd"], Ts=[1, 2], out_dir=tmp_path, progress=False, **SMALL)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved == records
    assert [(r["method"], r["T"]) for r in saved] == [("bptt", 1), ("bptt", 2), ("esd", 1), ("esd", 2)]
    for r in saved:
        assert "error" not in r, r.get("error")
        assert set(RECORD_KEYS) <= set(r)
        assert r["step_s"] > 0 and math.isfinite(r["step_s"])
        # a step allocates (activations, gradients): a positive peak, and plausible for 4 samples
        assert isinstance(r["peak_mem_bytes"], int) and 0 < r["peak_mem_bytes"] < 2**30
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
    assert r["first_steps_peak_mem_bytes"] >= r["peak_mem_bytes"] > 0


def saved_bytes_of_one_forward(method, T, batch, input_shape, arch="digits_resnet"):
    """Bytes autograd saves for the backward of one training forward (distinct storages): all of
    it is alive at once when the forward ends, so a step's peak memory is at least this much."""
    model = esdsnn.create_model(arch, num_classes=10, in_channels=input_shape[0])
    trainer = esdsnn.create_method(method, model, T=T).train()
    x, y = torch.randn(batch, *input_shape), torch.randint(10, (batch,))
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer(x, y)
    return sum(seen.values())


def test_peak_memory_covers_what_autograd_saves_and_grows_with_bptt_T():
    """``peak_mem_bytes`` against an independent figure: the bytes autograd saves in one forward
    (a lower bound on the step's peak); a plausible upper bound (measured ≈ 2.2× the saved bytes);
    BPTT at T = 6 (3× the saved activations of T = 2) reports a clearly larger peak."""
    cfg = dict(SMALL, method="bptt", batch=16, input_shape=(1, 16, 16), repeats=1, warmup=1)
    peaks = {}
    for T in (2, 6):
        r = measure_config(T=T, **cfg)
        if not r["mem_method"].startswith("VmHWM"):
            pytest.skip(f"in-process peak needs a resettable VmHWM (got {r['mem_method']!r})")
        saved = saved_bytes_of_one_forward("bptt", T, cfg["batch"], cfg["input_shape"])
        assert saved > 8 * 2**20  # big enough to stand out of the allocator's noise
        assert saved <= r["peak_mem_bytes"] <= 8 * saved + 64 * 2**20, (T, saved, r["peak_mem_bytes"])
        peaks[T] = r["peak_mem_bytes"]
    assert peaks[6] > 2 * peaks[2], peaks


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


def test_every_configuration_runs_under_each_precision_and_says_so(tmp_path):
    """--precision 32,bf16-mixed: one row per precision (bf16 is emulated on some CPUs: tiny shapes),
    each record naming its precision, whether the device runs it natively, and the CPU capability."""
    from esdsnn.runtime.precision import cpu_capability, native_bf16

    records = run_bench(
        methods=["esd"], Ts=[1], out_dir=tmp_path, progress=False, precisions=["32", "bf16-mixed"], **SMALL
    )
    assert [r["precision"] for r in records] == ["32", "bf16-mixed"]
    for r in records:
        assert "error" not in r, r.get("error")
        assert r["cpu_capability"] == cpu_capability() and r["step_min_s"] <= r["step_s"]
    assert records[0]["precision_native"] is True and records[1]["precision_native"] is native_bf16("cpu")
    md = (tmp_path / "bench.md").read_text()
    assert "| esd [32] | 1 |" in md and "| esd [bf16-mixed] | 1 |" in md and cpu_capability() in md
    with pytest.raises(ConfigError, match="16-mixed needs a CUDA device"):
        run_bench(methods=["esd"], Ts=[1], out_dir=tmp_path / "x", progress=False, precisions=["16-mixed"], **SMALL)


def test_a_bf16_mixed_step_runs_its_spike_stage_in_bf16(monkeypatch):
    """The worker's step sets the spike stage's type of the precision: the convolutions on spikes
    see bfloat16 under bf16-mixed and float32 under 32."""
    from esdsnn.layers import conv

    seen = set()
    real = conv.Conv2d._conv

    def spy(self, x, low=None, keep=False):
        seen.add(low)
        return real(self, x, low, keep)

    monkeypatch.setattr(conv.Conv2d, "_conv", spy)
    measure_config(method="esd", T=2, precision="32", **dict(SMALL, repeats=1, warmup=0))
    assert seen == {None}
    seen.clear()
    measure_config(method="esd", T=2, precision="bf16-mixed", **dict(SMALL, repeats=1, warmup=0))
    assert torch.bfloat16 in seen

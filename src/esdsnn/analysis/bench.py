"""Training cost against T: time and peak memory of one training step, per method (SPEC §9).

One *step* = forward + backward + SGD step on random data. Every (method, T) configuration runs in
a fresh process (``python -m esdsnn.analysis.bench --worker ...``), which prints one JSON line; the
parent collects the records, writes ``bench.json`` after each configuration, and at the end
``bench.md`` and ``bench.png``, all built from the saved records.

What a worker measures, after building the model, the method, the optimiser and the batch:

- **time**: ``warmup`` steps, then ``repeats`` timed steps (``time.perf_counter``, CUDA
  synchronised around each step); the median is ``step_s``.
- **peak memory** (``peak_mem_bytes``) of the timed steps above the baseline taken after the
  warm-up (model, optimiser state and batch resident, lazy library initialisation done; the
  gradients are freed between steps, so they count in the peak):
  CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory).
  CPU (Linux): the peak resident set size ``VmHWM`` of ``/proc/self/status``, reset to the current
  RSS by writing ``5`` to ``/proc/self/clear_refs`` at the baseline (after ``malloc_trim(0)``
  returns freed heap memory to the OS), minus the RSS then — a true
  high-water mark of the steps (gradients, activations, temporaries, allocator slack). Where the
  reset is not permitted: ``ru_maxrss`` minus the baseline RSS (exact as long as nothing before
  peaked higher). ``mem_method`` records which was used. ``first_steps_peak_mem_bytes`` is the
  peak of all steps above the baseline taken right after set-up, before the first step: it adds
  the optimiser's momentum buffers and, on CPU, one-time costs such as library code paged in.
- **RateBP limit** (RateBP-based methods only; ``null`` for BPTT-based ones): the time of T no-grad
  spike passes at T = 1 plus one training step of the same model (and branches) at T = 1 with
  autograd — the cost a RateBP step would have if its spike stage cost no more than T plain
  forwards. Both parts are medians over ``repeats`` after ``warmup``. Measured after the memory
  reading, so it does not touch ``peak_mem_bytes``.

The thread count is set with ``torch.set_num_threads`` in the worker (and ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` in its environment) and recorded with each result, with the device and the
torch version.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from esdsnn.atomic import write_json_atomic, write_text_atomic

DEFAULT_METHODS = ("bptt", "ratebp", "esd", "esd-bptt")
DEFAULT_TS = (1, 2, 4, 6, 8)
DEFAULT_ARCH = "resnet18"
DEFAULT_INPUT_SHAPE = (3, 32, 32)
BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
BENCH_PNG = "bench.png"
RECORD_KEYS = ("method", "T", "step_s", "peak_mem_bytes", "limit_s", "device", "threads", "batch", "arch", "torch")


# ----------------------------------------------------------------------------- worker side


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _malloc_trim() -> None:
    """Hand memory that glibc's malloc holds but no tensor uses back to the OS (glibc only), so
    that freed warm-up memory does not hide inside the baseline RSS."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _PeakMemory:
    """Peak memory above a baseline taken at construction (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.method = "cuda max_memory_allocated"
            self.baseline = torch.cuda.memory_allocated(device)
            return
        _malloc_trim()
        rss = _proc_status_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
            reset = _proc_status_kib("VmHWM") is not None and rss is not None
        except OSError:
            reset = False
        if reset:
            self.method = "VmHWM (reset via /proc/self/clear_refs) - RSS at baseline"
            self.baseline = _proc_status_kib("VmRSS") * 1024
        else:
            self.method = "ru_maxrss - RSS at baseline"
            self.baseline = rss * 1024 if rss is not None else self._maxrss()
        self._reset = reset

    @staticmethod
    def _maxrss() -> int:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux

    def peak_above_baseline(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device) - self.baseline)
        peak = _proc_status_kib("VmHWM") * 1024 if self._reset else self._maxrss()
        return int(max(peak - self.baseline, 0))


def _timed(fn: Callable[[], None], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Wall times of ``repeats`` calls after ``warmup`` calls (CUDA synchronised)."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _train_step(method: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        method(x, y).loss.backward()
        opt.step()

    return step


def measure_config(
    *,
    arch: str,
    method: str,
    T: int,
    batch: int,
    threads: int,
    input_shape: Sequence[int],
    num_classes: int,
    repeats: int,
    warmup: int,
    device: str,
    seed: int = 0,
) -> dict:
    """Measure one configuration in this process (what a worker runs); returns its record."""
    from esdsnn import create_method, create_model
    from esdsnn.methods import BPTT, RateBP
    from esdsnn.passes.spike import run_spike

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=num_classes, in_channels=int(input_shape[0])).to(dev)
    trainer = create_method(method, model, T=T).to(dev).train()
    x = torch.randn(batch, *input_shape, device=dev)
    y = torch.randint(num_classes, (batch,), device=dev)
    step = _train_step(trainer, x, y)

    setup = _PeakMemory(dev)  # baseline: model, optimiser and batch allocated, nothing run yet
    _timed(step, 0, warmup, dev)
    first_peak = setup.peak_above_baseline()
    steady = _PeakMemory(dev) if warmup else setup  # baseline after warm-up: state resident, lazy init done
    times = _timed(step, repeats, 0, dev)
    peak = steady.peak_above_baseline()
    first_peak = max(first_peak, peak + steady.baseline - setup.baseline)

    limit = forward_s = fwd_bwd_s = None
    if isinstance(trainer, RateBP):
        twin = BPTT(model, 1, loss_scale=trainer.loss_scale, distill=trainer.distill).to(dev).train()
        twin_step = _train_step(twin, x, y)
        forward_s = statistics.median(_timed(lambda: run_spike(model, x, 1), repeats, warmup, dev))
        fwd_bwd_s = statistics.median(_timed(twin_step, repeats, warmup, dev))
        limit = T * forward_s + fwd_bwd_s

    return {
        "method": method,
        "T": T,
        "step_s": statistics.median(times),
        "peak_mem_bytes": peak,
        "limit_s": limit,
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "batch": batch,
        "arch": arch,
        "torch": torch.__version__,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "repeats": repeats,
        "warmup": warmup,
        "step_times_s": times,
        "limit_forward_s": forward_s,
        "limit_fwd_bwd_s": fwd_bwd_s,
        "first_steps_peak_mem_bytes": first_peak,
        "mem_method": steady.method,
        "params": sum(p.numel() for p in trainer.parameters()),
    }


# ----------------------------------------------------------------------------- parent side


def _worker_command(cfg: dict) -> list[str]:
    return [
        sys.executable, "-m", "esdsnn.analysis.bench", "--worker",
        "--arch", cfg["arch"], "--method", cfg["method"], "--T", str(cfg["T"]), "--batch", str(cfg["batch"]),
        "--threads", str(cfg["threads"]), "--input-shape", ",".join(map(str, cfg["input_shape"])),
        "--num-classes", str(cfg["num_classes"]), "--repeats", str(cfg["repeats"]), "--warmup", str(cfg["warmup"]),
        "--device", cfg["device"],
    ]


def _run_worker(cfg: dict, timeout_s: Optional[float]) -> dict:
    """Run one configuration in a fresh interpreter and parse its JSON line."""
    import esdsnn

    env = dict(os.environ)
    threads = str(cfg["threads"])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    src = str(Path(esdsnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    failed = {k: cfg.get(k) for k in RECORD_KEYS}
    failed.update(step_s=None, peak_mem_bytes=None, limit_s=None, torch=torch.__version__)
    try:
        proc = subprocess.run(_worker_command(cfg), capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**failed, "error": f"timed out after {timeout_s} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    if proc.returncode < 0:
        why = f"worker killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
    else:
        tail = [l for l in proc.stderr.strip().splitlines() if l.strip()]
        why = f"worker exited with code {proc.returncode}: {tail[-1] if tail else 'no output'}"
    return {**failed, "error": why}


def _mib(b: Optional[float]) -> str:
    return "—" if b is None else f"{b / 2**20:.1f}"


def _secs(s: Optional[float]) -> str:
    return "—" if s is None else f"{s:.4f}" if s < 1 else f"{s:.3f}"


def bench_markdown(records: Sequence[dict]) -> str:
    """The Markdown table of ``bench.md``, from saved records only."""
    if not records:
        return "# Training-step benchmark\n\nno records\n"
    r0 = next((r for r in records if "error" not in r), records[0])
    shape = "×".join(str(s) for s in r0.get("input_shape") or [])
    lines = [
        "# Training-step benchmark",
        "",
        f"`{r0['arch']}`, input {shape}, {r0.get('num_classes')} classes, batch {r0['batch']}, device {r0['device']} ({r0.get('device_name')}), "
        f"{r0['threads']} thread(s), torch {r0['torch']}. One step = forward + backward + SGD step on random data; "
        f"time = median of {r0.get('repeats')} step(s) after {r0.get('warmup')} warm-up step(s). Peak memory: each "
        f"configuration in a fresh process, peak of the timed steps above the baseline after warm-up "
        f"({r0.get('mem_method')}). RateBP limit = T no-grad forwards at T = 1 + one training step at T = 1 "
        "(RateBP-based methods).",
        "",
        "| method | T | step (s) | RateBP limit (s) | step / limit | peak memory (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['T']} | failed: {r['error']} | | | |")
            continue
        ratio = "—" if not r.get("limit_s") else f"{r['step_s'] / r['limit_s']:.2f}"
        lines.append(
            f"| {r['method']} | {r['T']} | {_secs(r['step_s'])} | {_secs(r.get('limit_s'))} | {ratio} | {_mib(r['peak_mem_bytes'])} |"
        )
    return "\n".join(lines) + "\n"


def run_bench(
    *,
    arch: str = DEFAULT_ARCH,
    methods: Sequence[str] = DEFAULT_METHODS,
    Ts: Sequence[int] = DEFAULT_TS,
    batch: Optional[int] = None,
    threads: Optional[int] = None,
    input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE,
    num_classes: int = 10,
    repeats: int = 5,
    warmup: int = 2,
    device: Optional[str] = None,
    out_dir: str | Path = "bench",
    progress: bool = True,
    timeout_s: Optional[float] = None,
) -> list[dict]:
    """Benchmark one training step for every method × T, each in a fresh process.

    Defaults: ``device`` CUDA when available, else CPU; ``batch`` 128 on CUDA, 32 on CPU;
    ``threads`` this process's torch thread count. Writes ``bench.json`` (a list of records with
    ``method, T, step_s, peak_mem_bytes, limit_s, device, threads, batch, arch, torch`` and details),
    ``bench.md`` and ``bench.png`` into ``out_dir``; returns the records. A configuration whose
    worker fails (e.g. out of memory) gets a record with ``error`` and ``None`` figures.
    """
    from tqdm.auto import tqdm

    from esdsnn import list_methods, list_models
    from esdsnn.errors import ConfigError

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available")
    if arch not in list_models():
        raise ConfigError(f"unknown arch {arch!r}: choose one of {', '.join(list_models())}")
    bad = [m for m in methods if m not in list_methods()]
    if bad or not methods:
        raise ConfigError(f"unknown method(s) {bad}: choose from {', '.join(list_methods())}")
    if not Ts or any(not isinstance(T, int) or T < 1 for T in Ts):
        raise ConfigError(f"T values must be integers >= 1, got {list(Ts)}")
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ConfigError(f"input_shape must be C,H,W, got {tuple(input_shape)}")
    batch = batch or (128 if device.startswith("cuda") else 32)
    threads = threads or torch.get_num_threads()
    if batch < 1 or threads < 1 or repeats < 1 or warmup < 0:
        raise ConfigError("batch, threads and repeats must be >= 1, warmup >= 0")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    configs = [
        dict(arch=arch, method=m, T=int(T), batch=batch, threads=threads, input_shape=[int(s) for s in input_shape],
             num_classes=num_classes, repeats=repeats, warmup=warmup, device=device)
        for m in methods for T in Ts
    ]
    records: list[dict] = []
    bar = tqdm(configs, desc="bench", unit="config", disable=not progress)
    for cfg in bar:
        bar.set_postfix_str(f"{cfg['method']} T={cfg['T']}")
        records.append(_run_worker(cfg, timeout_s))
        write_json_atomic(out / BENCH_JSON, records)
    bar.close()
    write_bench_files(records, out)
    return records


def write_bench_files(records: Optional[Sequence[dict]], out_dir: str | Path) -> list[dict]:
    """Write ``bench.md`` and ``bench.png`` into ``out_dir`` from ``records`` (``None``: read the
    saved ``bench.json`` there); returns the records."""
    from .plots import plot_bench

    out = Path(out_dir)
    if records is None:
        records = json.loads((out / BENCH_JSON).read_text())
    records = list(records)
    write_text_atomic(out / BENCH_MD, bench_markdown(records))
    plot_bench(records, out / BENCH_PNG)
    return records


# ----------------------------------------------------------------------------- entry point


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m esdsnn.analysis.bench`` (a whole benchmark) or ``... --worker`` (one configuration)."""
    p = argparse.ArgumentParser(prog="python -m esdsnn.analysis.bench", description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help="measure one configuration and print one JSON line")
    p.add_argument("--arch", default=DEFAULT_ARCH)
    p.add_argument("--method", default=None, help="(worker) the method")
    p.add_argument("--T", type=int, default=None, help="(worker) the number of time steps")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--Ts", type=_ints, default=list(DEFAULT_TS))
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--input-shape", type=_shape, default=DEFAULT_INPUT_SHAPE)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="bench")
    args = p.parse_args(argv)
    if args.worker:
        if args.method is None or args.T is None:
            p.error("--worker needs --method and --T")
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        record = measure_config(
            arch=args.arch, method=args.method, T=args.T, batch=args.batch or (128 if device.startswith("cuda") else 32),
            threads=args.threads or torch.get_num_threads(), input_shape=args.input_shape, num_classes=args.num_classes,
            repeats=args.repeats, warmup=args.warmup, device=device,
        )
        print(json.dumps(record), flush=True)
        return 0
    records = run_bench(
        arch=args.arch, methods=[m for m in args.methods.split(",") if m], Ts=args.Ts, batch=args.batch,
        threads=args.threads, input_shape=args.input_shape, num_classes=args.num_classes, repeats=args.repeats,
        warmup=args.warmup, device=args.device, out_dir=args.out,
    )
    print(bench_markdown(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())

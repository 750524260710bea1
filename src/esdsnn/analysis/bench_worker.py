"""The worker side of ``esdsnn bench``: one configuration measured in this (fresh) process.

How time and peak memory are measured is described in :mod:`esdsnn.analysis.bench`; this module
holds the measurement itself (:func:`measure_step`), esdsnn's training step
(:func:`measure_config`), and dispatches the SpikingJelly baseline
(:mod:`esdsnn.analysis.bench_baseline`) so both are timed by the same code.
"""

from __future__ import annotations

import gc
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import torch

BASELINE_METHODS = ("spikingjelly-bptt",)
OUT_OF_MEMORY_FIX = "use a smaller --batch, or --method esd, which keeps memory flat in T"


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _proc_status_bytes(field: str) -> int:
    """A field of /proc/self/status that was read before (:class:`_PeakMemory` checks), in bytes."""
    kib = _proc_status_kib(field)
    if kib is None:
        raise RuntimeError(f"/proc/self/status has no {field} line")
    return kib * 1024


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
            self.baseline = _proc_status_bytes("VmRSS")
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
        peak = _proc_status_bytes("VmHWM") if self._reset else self._maxrss()
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


def _train_step(method: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "32") -> Callable[[], None]:
    """One training step as ``esdsnn train`` takes it under ``precision``: the forward (and for
    RateBP its spike stage) under the precision's autocast and spike-stage type, the backward
    outside it, a gradient scaler where the precision needs one, an SGD step."""
    from esdsnn.runtime.precision import autocast_for, precision_spec, use_precision

    opt = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(x.device.type, enabled=precision_spec(precision).grad_scaler)

    def step() -> None:
        with use_precision(precision):
            opt.zero_grad(set_to_none=True)
            with autocast_for(precision, x.device):
                loss = method(x, y).loss
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    return step


def measure_step(step: Callable[[], None], dev: torch.device, repeats: int, warmup: int) -> dict:
    """Times and peak memory of ``step`` (see the module notes of :mod:`esdsnn.analysis.bench`)."""
    setup = _PeakMemory(dev)  # baseline: model, optimiser and batch allocated, nothing run yet
    _timed(step, 0, warmup, dev)
    first_peak = setup.peak_above_baseline()
    steady = _PeakMemory(dev) if warmup else setup  # baseline after warm-up: state resident, lazy init done
    times = _timed(step, repeats, 0, dev)
    peak = steady.peak_above_baseline()
    return {
        "step_s": statistics.median(times),
        "step_min_s": min(times),
        "peak_mem_bytes": peak,
        "step_times_s": times,
        "first_steps_peak_mem_bytes": max(first_peak, peak + steady.baseline - setup.baseline),
        "mem_method": steady.method,
    }


def environment(dev: torch.device, precision: str = "32") -> dict:
    """What every record says about where it ran: the device (and the CPU's capability), the
    threads, torch, and the precision with whether the device runs it natively."""
    from esdsnn.runtime.precision import cpu_capability, precision_native

    return {
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "cpu_capability": cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": precision,
        "precision_native": precision_native(precision, dev),
    }


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_batch(
    batch: int, input_shape: Sequence[int], num_classes: int, dev: torch.device, T: int, event: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs: images ``[B, C, H, W]``, or event frames ``[T, B, C, H, W]``, and labels."""
    shape = (T, batch, *input_shape) if event else (batch, *input_shape)
    return torch.randn(*shape, device=dev), torch.randint(num_classes, (batch,), device=dev)


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
    event: bool = False,
    neurons: str = "eager",
    precision: str = "32",
) -> dict:
    """Measure one configuration in this process (what a worker runs); returns its record.
    ``neurons="compiled"``: esdsnn's neuron loops through ``torch.compile`` (``--compile`` in
    training; the warm-up steps compile). ``precision``: as ``esdsnn train --precision``."""
    from esdsnn import create_method, create_model
    from esdsnn.methods import BPTT, RateBP
    from esdsnn.passes.spike import run_spike
    from esdsnn.runtime.precision import autocast_for, use_precision

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=num_classes, in_channels=int(input_shape[0])).to(dev)
    x, y = bench_batch(batch, input_shape, num_classes, dev, T, event)
    common = {
        "method": method,
        "T": T,
        "batch": batch,
        "arch": arch,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "repeats": repeats,
        "warmup": warmup,
        "event": event,
        "neurons": "spikingjelly" if method in BASELINE_METHODS else neurons,
    }
    env = environment(dev, precision)
    if method in BASELINE_METHODS:
        from .bench_baseline import spikingjelly_training_step

        step, extra = spikingjelly_training_step(model, x, y, T, precision)
        return {
            **common,
            **measure_step(step, dev, repeats, warmup),
            "limit_s": None,
            **env,
            "params": sum(p.numel() for p in model.parameters()),
            **extra,
        }

    if neurons == "compiled":
        from esdsnn.neurons.lif import compile_neurons_

        compile_neurons_(model)
    trainer = create_method(method, model, T=T).to(dev).train()
    measured = measure_step(_train_step(trainer, x, y, precision), dev, repeats, warmup)
    limit = forward_s = fwd_bwd_s = None
    if isinstance(trainer, RateBP):
        # measured after the memory reading, so it does not touch peak_mem_bytes
        twin = BPTT(model, 1, loss_scale=trainer.loss_scale, distill=trainer.distill).to(dev).train()
        twin_step = _train_step(twin, x, y, precision)

        def forward() -> None:
            with use_precision(precision), autocast_for(precision, dev):
                run_spike(model, x, 1)

        forward_s = statistics.median(_timed(forward, repeats, warmup, dev))
        fwd_bwd_s = statistics.median(_timed(twin_step, repeats, warmup, dev))
        limit = T * forward_s + fwd_bwd_s
    return {
        **common,
        **measured,
        "limit_s": limit,
        **env,
        "limit_forward_s": forward_s,
        "limit_fwd_bwd_s": fwd_bwd_s,
        "params": sum(p.numel() for p in trainer.parameters()),
    }


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA or CPU allocator, or Python's)."""
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def out_of_memory_message(detail: str = "") -> str:
    """The one line a bench row says when a configuration runs out of memory."""
    return f"out of memory{f' ({detail})' if detail else ''}: {OUT_OF_MEMORY_FIX}"

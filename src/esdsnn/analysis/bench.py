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

- **baseline** (``--baseline spikingjelly``): SpikingJelly's BPTT step on the same network
  (:mod:`esdsnn.analysis.bench_baseline`), timed and measured by the same code in its own fresh
  process; records with method ``spikingjelly-bptt`` and the version that ran (``baseline``).

Each benchmark writes into a folder of its own (``bench/<UTC time>`` by default; a given folder
that already holds a benchmark is refused unless overwritten), so two runs' files never mix. The
input follows the data set (``dataset``) or the arch (8×8 digits for ``digits_resnet``, CIFAR
3×32×32 for the CIFAR ResNets, 2×48×48 event frames for ``vggsnn``, 224² ImageNet images for
``preact_resnet34``).

The thread count is set with ``torch.set_num_threads`` in the worker (and ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` in its environment) and recorded with each result, with the device and the
torch version.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch

from esdsnn.atomic import write_json_atomic

from .bench_report import BENCH_JSON, write_bench_files
from .bench_worker import BASELINE_METHODS, is_out_of_memory, measure_config, out_of_memory_message

DEFAULT_METHODS = ("bptt", "ratebp", "esd", "esd-bptt")
DEFAULT_TS = (1, 2, 4, 6, 8)
DEFAULT_ARCH = "resnet18"
DEFAULT_INPUT_SHAPE = (3, 32, 32)
DEFAULT_OUT_ROOT = "bench"
#: (input shape C,H,W, classes, event frames) of the data sets, and the data set each arch is for.
DATASET_INPUTS: dict[str, tuple[tuple[int, int, int], int, bool]] = {
    "digits": ((1, 8, 8), 10, False),
    "cifar10": ((3, 32, 32), 10, False),
    "cifar100": ((3, 32, 32), 100, False),
    "cifar10-dvs": ((2, 48, 48), 10, True),
    "imagenet": ((3, 224, 224), 1000, False),
}
ARCH_DATASETS = {"digits_resnet": "digits", "vggsnn": "cifar10-dvs", "preact_resnet34": "imagenet"}
BASELINES = {"spikingjelly": "spikingjelly-bptt"}
SPIKINGJELLY_PATH_ENV = "ESDSNN_SPIKINGJELLY_PATH"
NEURON_LOOPS = {"eager": ("eager",), "compiled": ("compiled",), "both": ("eager", "compiled")}
BENCH_FILES = ("bench.json", "bench.md", "bench.png", "loaders.json")
RECORD_KEYS = (
    "method",
    "T",
    "precision",
    "step_s",
    "peak_mem_bytes",
    "limit_s",
    "device",
    "threads",
    "batch",
    "arch",
    "torch",
)
DEFAULT_PRECISIONS = ("32",)


# ----------------------------------------------------------------------------- parent side


def bench_inputs(
    arch: str,
    dataset: Optional[str] = None,
    input_shape: Optional[Sequence[int]] = None,
    num_classes: Optional[int] = None,
) -> tuple[list[int], int, bool]:
    """``(input_shape, num_classes, event)`` of a benchmark: given ones win, then the data set's,
    then those of the data set the arch is built for (CIFAR for the others)."""
    from esdsnn.errors import ConfigError

    name = dataset or ARCH_DATASETS.get(arch, "cifar10")
    if name not in DATASET_INPUTS:
        raise ConfigError(
            f"unknown dataset {name!r} for bench: choose one of {', '.join(DATASET_INPUTS)} "
            "(or give --input-shape and --num-classes)"
        )
    shape, classes, event = DATASET_INPUTS[name]
    return [int(v) for v in (input_shape or shape)], int(num_classes or classes), event


def precision_spec_needs_cuda(precision: str) -> bool:
    """Whether ``precision`` runs only on CUDA (float16 with a gradient scaler)."""
    return precision == "16-mixed"


def timestamped_dir(root: str | Path = DEFAULT_OUT_ROOT) -> Path:
    """A new folder ``root/<UTC time>`` (a suffix if two runs start in the same second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out, k = Path(root) / stamp, 1
    while out.exists():
        out, k = Path(root) / f"{stamp}-{k}", k + 1
    return out


def prepare_out_dir(out_dir: Optional[str | Path], overwrite: bool = False) -> Path:
    """The folder a benchmark writes into, created and checked writable: a fresh timestamped one
    by default; a given one must not already hold another run's files unless ``overwrite`` (which
    removes them first), so two runs' files never mix. Problems are one-line ConfigErrors."""
    from esdsnn.errors import ConfigError

    out = timestamped_dir() if out_dir is None else Path(out_dir)
    old = [out / n for n in BENCH_FILES if (out / n).exists()]
    if old and not overwrite:
        raise ConfigError(
            f"{out} already holds a benchmark ({', '.join(p.name for p in old)}): choose a new --out, "
            "leave --out out for a timestamped folder, or pass --overwrite"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for p in old:
            p.unlink()
        probe = out / ".bench-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write the benchmark to {out}: {exc.strerror or exc}") from None
    return out


def _worker_command(cfg: dict) -> list[str]:
    return [
        sys.executable,
        "-m",
        "esdsnn.analysis.bench",
        "--worker",
        "--arch",
        cfg["arch"],
        "--method",
        cfg["method"],
        "--T",
        str(cfg["T"]),
        "--batch",
        str(cfg["batch"]),
        "--threads",
        str(cfg["threads"]),
        "--input-shape",
        ",".join(map(str, cfg["input_shape"])),
        "--num-classes",
        str(cfg["num_classes"]),
        "--repeats",
        str(cfg["repeats"]),
        "--warmup",
        str(cfg["warmup"]),
        "--device",
        cfg["device"],
        "--neurons",
        cfg.get("neurons", "eager"),
        "--precision",
        cfg.get("precision", "32"),
        *(["--event"] if cfg.get("event") else []),
    ]


def _worker_env(cfg: dict) -> dict:
    """The worker's environment: thread counts, this esdsnn first on the path, and for the
    SpikingJelly baseline the directory in ``ESDSNN_SPIKINGJELLY_PATH`` (e.g. a ``pip --target``
    install of SpikingJelly 2.0.0) before the environment's own."""
    import esdsnn

    env = dict(os.environ)
    threads = str(cfg["threads"])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    paths = [str(Path(esdsnn.__file__).resolve().parents[1])]
    if cfg["method"] in BASELINE_METHODS and env.get(SPIKINGJELLY_PATH_ENV):
        paths.append(env[SPIKINGJELLY_PATH_ENV])
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def failure_reason(returncode: int, stderr: str) -> str:
    """One line on why a worker gave no record: out of memory (killed by the OS, or an allocation
    that failed) with the fix, else the last line it wrote."""
    if returncode == -9:
        return out_of_memory_message("the worker was killed by the OS, signal 9")
    if returncode < 0:
        return f"worker killed by signal {-returncode}"
    tail = [line for line in stderr.strip().splitlines() if line.strip()]
    last = tail[-1] if tail else "no output"
    if "can't allocate memory" in last or "out of memory" in last.lower():
        return out_of_memory_message(last.strip()[:160])
    return f"worker exited with code {returncode}: {last}"


def _run_worker(cfg: dict, timeout_s: Optional[float]) -> dict:
    """Run one configuration in a fresh interpreter and parse its JSON line."""
    failed = {k: cfg.get(k) for k in RECORD_KEYS}
    failed.update(step_s=None, peak_mem_bytes=None, limit_s=None, torch=torch.__version__)
    try:
        proc = subprocess.run(
            _worker_command(cfg), capture_output=True, text=True, env=_worker_env(cfg), timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {**failed, "error": f"timed out after {timeout_s} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                break
            return {**failed, **record} if "error" in record else record
    return {**failed, "error": failure_reason(proc.returncode, proc.stderr)}


def run_bench(
    *,
    arch: str = DEFAULT_ARCH,
    methods: Sequence[str] = DEFAULT_METHODS,
    Ts: Sequence[int] = DEFAULT_TS,
    batch: Optional[int] = None,
    threads: Optional[int] = None,
    input_shape: Optional[Sequence[int]] = None,
    num_classes: Optional[int] = None,
    dataset: Optional[str] = None,
    baseline: Optional[str] = None,
    neurons: str = "eager",
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    repeats: int = 5,
    warmup: int = 2,
    device: Optional[str] = None,
    out_dir: Optional[str | Path] = None,
    overwrite: bool = False,
    progress: bool = True,
    timeout_s: Optional[float] = None,
) -> list[dict]:
    """Benchmark one training step for every method × T, each in a fresh process.

    Defaults: ``device`` CUDA when available, else CPU; ``batch`` 128 on CUDA, 32 on CPU;
    ``threads`` this process's torch thread count; input shape and classes from ``dataset``, else
    from the data set ``arch`` is built for (:func:`bench_inputs`); ``out_dir`` a new
    ``bench/<UTC time>`` folder (:func:`prepare_out_dir`). ``baseline="spikingjelly"`` adds
    SpikingJelly's BPTT on the same network (method ``spikingjelly-bptt``) at every T.
    ``neurons``: esdsnn's neuron loops ``eager``, ``compiled`` (torch.compile) or ``both``.
    ``precisions``: each configuration under each of these (``esdsnn train --precision``; the
    baseline under the same autocast). Writes
    ``bench.json`` (a list of records with ``method, T, step_s, peak_mem_bytes, limit_s, device,
    threads, batch, arch, torch`` and details), ``bench.md`` and ``bench.png`` into the folder
    (the caller that needs the folder's name prepares it: ``run_bench(out_dir=prepare_out_dir())``);
    returns the records. A configuration whose worker fails (e.g. out of memory) gets a record with ``error``
    (one line, with the fix for out of memory) and ``None`` figures.
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
    if baseline is not None and baseline not in BASELINES:
        raise ConfigError(f"unknown baseline {baseline!r}: choose one of {', '.join(BASELINES)}")
    if neurons not in NEURON_LOOPS:
        raise ConfigError(f"neurons must be one of {', '.join(NEURON_LOOPS)}, got {neurons!r}")
    from esdsnn.runtime.precision import PRECISIONS

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ConfigError(f"unknown precision(s) {bad}: choose from {', '.join(PRECISIONS)}")
    if any(precision_spec_needs_cuda(p) for p in precisions) and not device.startswith("cuda"):
        raise ConfigError("precision 16-mixed needs a CUDA device; on the CPU use 32 or bf16-mixed")
    if not Ts or any(not isinstance(T, int) or T < 1 for T in Ts):
        raise ConfigError(f"T values must be integers >= 1, got {list(Ts)}")
    input_shape, num_classes, event = bench_inputs(arch, dataset, input_shape, num_classes)
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ConfigError(f"input_shape must be C,H,W, got {tuple(input_shape)}")
    batch = batch or (128 if device.startswith("cuda") else 32)
    threads = threads or torch.get_num_threads()
    if batch < 1 or threads < 1 or repeats < 1 or warmup < 0:
        raise ConfigError("batch, threads and repeats must be >= 1, warmup >= 0")

    out = prepare_out_dir(out_dir, overwrite)
    runs = [(m, loops) for m in methods for loops in NEURON_LOOPS[neurons]]
    runs += [(BASELINES[baseline], "eager")] if baseline else []
    configs = [
        dict(
            arch=arch,
            method=m,
            T=int(T),
            batch=batch,
            threads=threads,
            input_shape=input_shape,
            num_classes=num_classes,
            repeats=repeats,
            warmup=warmup,
            device=device,
            event=event,
            neurons=loops,
            precision=str(p),
        )
        for p in precisions
        for m, loops in runs
        for T in Ts
    ]
    records: list[dict] = []
    bar = tqdm(configs, desc="bench", unit="config", disable=not progress)
    for cfg in bar:
        bar.set_postfix_str(f"{cfg['method']} T={cfg['T']} {cfg['precision']}")
        records.append(_run_worker(cfg, timeout_s))
        write_json_atomic(out / BENCH_JSON, records)
    bar.close()
    write_bench_files(records, out)
    return records


# ----------------------------------------------------------------------------- entry point


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W, got {text!r}") from None


def _worker_main(args: argparse.Namespace) -> int:
    """Measure one configuration and print its record as one JSON line; running out of memory is
    a record with a one-line ``error`` (and exit code 3), not a traceback."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        record = measure_config(
            arch=args.arch,
            method=args.method,
            T=args.T,
            batch=args.batch or (128 if device.startswith("cuda") else 32),
            threads=args.threads or torch.get_num_threads(),
            input_shape=args.input_shape or DEFAULT_INPUT_SHAPE,
            num_classes=args.num_classes or 10,
            repeats=args.repeats,
            warmup=args.warmup,
            device=device,
            event=args.event,
            neurons=args.neurons,
            precision=args.precision,
        )
    except Exception as exc:
        from esdsnn.errors import EsdsnnError

        if not (is_out_of_memory(exc) or isinstance(exc, EsdsnnError)):
            raise
        why = out_of_memory_message(type(exc).__name__) if is_out_of_memory(exc) else str(exc).splitlines()[0]
        print(json.dumps({"method": args.method, "T": args.T, "error": why}), flush=True)
        print(f"bench worker: {why}", file=sys.stderr, flush=True)
        return 3
    print(json.dumps(record), flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m esdsnn.analysis.bench --worker ...``: measure one configuration in this fresh
    process (what ``esdsnn bench`` starts for each; the benchmark itself is ``esdsnn bench``)."""
    p = argparse.ArgumentParser(prog="python -m esdsnn.analysis.bench", description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help="measure one configuration and print one JSON line")
    p.add_argument("--arch", default=DEFAULT_ARCH)
    p.add_argument("--method", required=True)
    p.add_argument("--T", type=int, required=True, help="the number of time steps")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--input-shape", type=_shape, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--event", action="store_true", help="event frames [T, B, C, H, W] as input")
    p.add_argument("--neurons", default="eager", choices=list(NEURON_LOOPS))
    p.add_argument("--precision", default="32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    if not args.worker:
        p.error("this entry point measures one configuration (--worker); run the benchmark with `esdsnn bench`")
    return _worker_main(args)


if __name__ == "__main__":
    sys.exit(main())

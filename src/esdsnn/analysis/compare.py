"""Methods side by side: every method × seed trained as a normal run, then one table and one figure.

``run_comparison(base, methods, seeds, out)`` trains ``out/<method>/seed<k>/`` for k = 0..seeds−1
with seed ``base.seed + k`` (all other settings from ``base``), one run after the other, each in
its own process (``python -m esdsnn train``). ``kd`` first gets an ANN teacher per seed, trained
(or reused) in ``out/ann/seed<k>/`` with the same settings, and passed as ``teacher_run``.

**Resumable.** Before training, each run directory is checked:

- a run whose ``summary.json`` says ``completed`` (or ``diverged``) and whose saved ``config.yaml``
  equals the one requested (ignoring :func:`ignored_fields`, which do not change what is computed)
  is *reused*, not retrained; a kd run is retrained when its teacher run has changed since;
- a run with the same settings but no final summary is *resumed* from its last checkpoint (or
  restarted when there is none, or when resuming fails);
- a run with other settings is an error unless ``overwrite=True`` (then it is deleted and
  retrained), so that a typo in a flag never silently throws away finished runs.

**Peak memory.** Each training process is waited for with ``os.wait4``, which gives that one
child's resource usage; its ``ru_maxrss`` is the peak resident set size of the whole training
process (Python, torch, data, model, optimiser, activations and allocator slack; the kd teacher
included), saved per run in ``compare_run.json``. A resumed run keeps the larger of its sessions.
For scale, the peak of a process that only imports torch and esdsnn is measured once per call and
printed under the table. (``RUSAGE_CHILDREN`` deltas would not work: it reports the maximum over
all children ever waited for, not per child.) Where ``os.wait4`` does not exist, peaks are not
recorded.

**Tables.** Everything is built from the saved run files (``summary.json``, ``metrics.csv``,
``compare_run.json``) and written as ``compare.json`` (all per-run records), ``compare.csv`` and
``compare.md`` (one row per method) and ``compare.png``. Accuracy is the final test accuracy
(spike pass), mean ± sample std (ddof = 1) over seeds; time per epoch is the mean of
``metrics.csv``'s ``epoch_s`` (training plus that epoch's test pass); peak memory and firing rate
are means over seeds. The noise note marks every method whose mean lies within one combined std
``sqrt(s_best² + s_m²)`` of the best method's mean; with ``sd`` and ``esd`` both present it also
states whether the reliability filter's gain (esd − sd) exceeds that noise.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from esdsnn.errors import CheckpointError, ConfigError, EsdsnnError

DEFAULT_METHODS = ("bptt", "ratebp", "esd", "esd-bptt", "sd", "kd")
DEFAULT_SEEDS = 3
TEACHER_METHOD = "ann"
COMPARE_JSON = "compare.json"
COMPARE_CSV = "compare.csv"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"
RUN_SIDECAR = "compare_run.json"
# Config fields that may differ between a saved run and the request without making it another run:
# the run directory, the data workers, and whatever train's --resume may change (RESUMABLE_FIELDS
# of esdsnn.train.loop: progress, threads, device, eval_every), none of which changes the maths.
EXTRA_IGNORED_FIELDS = ("out", "workers")
CSV_COLUMNS = (
    "method", "role", "n_seeds", "n_diverged", "test_acc_mean", "test_acc_std", "test_accs",
    "epoch_s_mean", "epoch_s_std", "peak_rss_mib", "avg_firing_rate", "energy_mj_per_sample",
    "vs_best", "within_noise_of_best",
)
Echo = Callable[[str], None]


# ---- input -----------------------------------------------------------------------------------
def parse_methods(methods: Union[str, Sequence[str]]) -> list[str]:
    """Method names from ``"bptt,esd"`` or a list: known, non-empty, duplicates dropped."""
    import esdsnn

    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    names = list(dict.fromkeys(m for m in names if m))
    if not names:
        raise ConfigError("--methods is empty; give a comma-separated list, e.g. bptt,esd")
    known = list(esdsnn.list_methods())
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(map(repr, unknown))} in --methods; choose from {', '.join(known)}")
    return names


def base_config(path: Optional[Union[str, Path]] = None, overrides: Optional[Mapping[str, Any]] = None):
    """The settings every run shares: defaults, then the YAML file, then ``overrides``. The keys
    ``method``, ``teacher_run`` and ``out`` are set per run, so a value for them is ignored."""
    from esdsnn.train.config import TrainConfig, read_yaml

    values: dict[str, Any] = {}
    if path is not None:
        values.update(TrainConfig.coerce_values(read_yaml(path), source=str(path)))
    values.update(TrainConfig.coerce_values(dict(overrides or {}), source="the command line"))
    values.update(method="bptt", teacher_run=None, out=None, progress=False)  # placeholders
    return TrainConfig(**values).resolved()


# ---- plan --------------------------------------------------------------------------------------
@dataclass
class RunPlan:
    """One run of the comparison: where it lives and the exact config it must have."""

    method: str
    seed_index: int
    run_dir: Path
    config: Any  # TrainConfig, resolved, with absolute paths
    role: str = "method"  # "method", or "teacher" (an ann run trained only to teach kd)
    teacher: Optional["RunPlan"] = None

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    @property
    def label(self) -> str:
        return f"{self.method} seed {self.seed}"


def plan_runs(base, methods: Sequence[str], seeds: int, out: Union[str, Path]) -> list[RunPlan]:
    """The runs in training order: method by method, seed by seed; a kd run's ann teacher comes
    right before it (once per seed, shared with an ``ann`` row if ``ann`` is itself compared)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be an integer >= 1, got {seeds!r}")
    methods = parse_methods(methods)
    out = Path(out).expanduser().resolve()
    base = base.resolved()
    if base.data_path is not None:
        base = base.replace(data_path=str(Path(base.data_path).expanduser().resolve()))

    def make(method: str, k: int, role: str, teacher: Optional[RunPlan] = None) -> RunPlan:
        run_dir = out / method / f"seed{k}"
        config = base.replace(method=method, seed=base.seed + k, out=str(run_dir),
                              teacher_run=str(teacher.run_dir) if teacher else None)
        return RunPlan(method, k, run_dir, config, role, teacher)

    teachers: dict[int, RunPlan] = {}
    plans: list[RunPlan] = []
    for method in methods:
        for k in range(seeds):
            if method == "kd":
                if k not in teachers:
                    teachers[k] = make(TEACHER_METHOD, k, "method" if TEACHER_METHOD in methods else "teacher")
                    plans.append(teachers[k])
                plans.append(make(method, k, "method", teachers[k]))
            elif method == TEACHER_METHOD and k in teachers:
                continue  # already planned as a teacher
            else:
                plan = make(method, k, "method")
                if method == TEACHER_METHOD:
                    teachers[k] = plan
                plans.append(plan)
    return plans


# ---- state of a run directory -------------------------------------------------------------------
def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def ignored_fields() -> tuple[str, ...]:
    """Config fields a reused run may differ in (see :data:`EXTRA_IGNORED_FIELDS`)."""
    from esdsnn.train.loop import RESUMABLE_FIELDS

    return tuple(dict.fromkeys((*EXTRA_IGNORED_FIELDS, *RESUMABLE_FIELDS)))


def config_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``key: saved -> wanted`` for every field that differs (ignoring :func:`ignored_fields`)."""
    ignored = ignored_fields()
    keys = [k for k in wanted if k not in ignored]
    return [f"{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in keys if saved.get(k) != wanted[k]]


def _teacher_fingerprint(teacher_dir: Path) -> Optional[dict[str, Any]]:
    summary = _read_json(teacher_dir / "summary.json")
    if summary is None:
        return None
    return {"run": str(teacher_dir), **{k: summary.get(k) for k in ("status", "test_acc", "wall_s", "epochs")}}


def run_state(plan: RunPlan) -> tuple[str, str]:
    """``(state, why)``: ``new``, ``done``, ``resume``, ``restart`` or ``mismatch``."""
    from esdsnn.train.config import TrainConfig, read_yaml

    run_dir = plan.run_dir
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        if run_dir.is_dir() and any(run_dir.glob("*.pt")):
            return "restart", "checkpoints without a config.yaml"
        return "new", ""
    try:
        saved = TrainConfig.from_dict(read_yaml(config_file), source=str(config_file)).to_dict()
    except ConfigError as exc:
        return "mismatch", f"its config.yaml cannot be read ({exc})"
    diffs = config_differences(saved, plan.config.to_dict())
    if diffs:
        return "mismatch", "; ".join(diffs)
    summary = _read_json(run_dir / "summary.json") or {}
    if summary.get("status") in ("completed", "diverged"):
        if plan.teacher is not None:
            used = (_read_json(run_dir / RUN_SIDECAR) or {}).get("teacher")
            if used is not None and used != _teacher_fingerprint(plan.teacher.run_dir):
                return "restart", "its ann teacher has been retrained since"
        if summary["status"] == "diverged" or summary.get("epochs") == plan.config.epochs:
            return "done", summary["status"]
    if (run_dir / "last.pt").is_file():
        return "resume", "incomplete"
    return "restart", "incomplete, no checkpoint"


# ---- running -----------------------------------------------------------------------------------
@dataclass
class ChildResult:
    returncode: int
    peak_rss_bytes: Optional[int]
    last_lines: list[str] = field(default_factory=list)
    interrupted: bool = False  # a Ctrl-C reached us while the child ran

    @property
    def stopped(self) -> bool:
        return self.interrupted or self.returncode == 130


def _maxrss_bytes(rusage: Any) -> int:
    peak = int(rusage.ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class _DeferredInterrupt:
    """While installed (main thread only), Ctrl-C just sets ``hit`` instead of raising, so that we
    keep reading the child's output and reap it however the signal lands."""

    def __init__(self) -> None:
        self.hit = False

    @contextlib.contextmanager
    def installed(self) -> Iterator["_DeferredInterrupt"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, frame: Any) -> None:
            self.hit = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def run_child(command: Sequence[str], echo: Echo, prefix: str = "    ") -> ChildResult:
    """Run ``command``, echoing its output lines; return its exit code and peak RSS (``wait4``).

    A Ctrl-C reaches the child too (same process group): training saves a checkpoint and exits.
    Here it only marks the result ``interrupted`` once the child has ended (the caller decides).
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail: list[str] = []
    peak: Optional[int] = None
    with _DeferredInterrupt().installed() as interrupt:
        proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, env=env)
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail = (tail + [line])[-20:]
                echo(prefix + line)
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            peak = _maxrss_bytes(usage)
        else:  # pragma: no cover - no wait4 (Windows): no per-child peak
            proc.wait()
    return ChildResult(int(proc.returncode), peak, tail, interrupt.hit)


def import_baseline_bytes(python: str = sys.executable) -> Optional[int]:
    """Peak RSS of a process that only imports torch and the esdsnn training code."""
    if not hasattr(os, "wait4"):  # pragma: no cover
        return None
    result = run_child([python, "-c", "import torch, esdsnn, esdsnn.train.loop"], echo=lambda line: None)
    return result.peak_rss_bytes if result.returncode == 0 else None


def _error_line(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        if "error" in line.lower():
            return line.strip()
    return lines[-1].strip() if lines else "no output"


def _train_command(plan: RunPlan, request: Path, python: str, resume: bool) -> list[str]:
    cmd = [python, "-m", "esdsnn", "train"]
    if resume:
        cmd += ["--resume", str(plan.run_dir), "--no-progress"]
        if plan.config.threads is not None:
            cmd += ["--threads", str(plan.config.threads)]
        return cmd
    from esdsnn.train.config import save_config

    save_config(plan.config, request)
    return cmd + ["--config", str(request)]


def _train(plan: RunPlan, resume: bool, python: str, echo: Echo) -> ChildResult:
    with tempfile.TemporaryDirectory(prefix="esdsnn-compare-") as tmp:
        return run_child(_train_command(plan, Path(tmp) / "config.yaml", python, resume), echo)


def _record_session(plan: RunPlan, result: ChildResult, resumed: bool) -> None:
    """Merge this training session's peak into the run's ``compare_run.json``."""
    path = plan.run_dir / RUN_SIDECAR
    data = (_read_json(path) or {}) if resumed else {}
    peaks = [p for p in (data.get("peak_rss_bytes"), result.peak_rss_bytes) if p is not None]
    data.update(
        peak_rss_bytes=max(peaks) if peaks else None,
        peak_rss_method="ru_maxrss of the training process (os.wait4)" if peaks else None,
        sessions=int(data.get("sessions", 0)) + 1,
    )
    if plan.teacher is not None:
        data["teacher"] = _teacher_fingerprint(plan.teacher.run_dir)
    if plan.run_dir.is_dir():
        _write_json(path, data)


def ensure_run(plan: RunPlan, *, python: str = sys.executable, echo: Echo = print,
               overwrite: bool = False) -> str:
    """Make the run in ``plan.run_dir`` complete; return how: ``reused``, ``trained``, ``resumed``
    (or ``diverged``). Raises :class:`EsdsnnError` when training fails."""
    state, why = run_state(plan)
    if state == "mismatch":
        if not overwrite:
            raise ConfigError(
                f"{plan.run_dir} holds a {plan.method} run with other settings ({why}); use another --out, "
                f"or --overwrite to retrain it"
            )
        echo(f"    other settings ({why}): retraining")
        state = "restart"
    if state == "done":
        return "reused" if why == "completed" else "diverged"
    if state == "restart":
        if why:
            echo(f"    {why}: restarting")
        shutil.rmtree(plan.run_dir)
    if plan.teacher is not None:
        teacher = _read_json(plan.teacher.run_dir / "summary.json") or {}
        if teacher.get("status") != "completed":
            raise EsdsnnError(f"kd needs a trained teacher, but {plan.teacher.run_dir} is {teacher.get('status', 'missing')}")
    plan.run_dir.parent.mkdir(parents=True, exist_ok=True)

    resumed = state == "resume"
    result = _train(plan, resumed, python, echo)
    if result.returncode != 0 and not result.stopped and resumed:
        summary = _read_json(plan.run_dir / "summary.json") or {}
        if summary.get("status") != "diverged":
            echo(f"    resuming failed ({_error_line(result.last_lines)}): restarting")
            shutil.rmtree(plan.run_dir)
            resumed = False
            result = _train(plan, False, python, echo)
    _record_session(plan, result, resumed)
    if result.stopped:
        raise KeyboardInterrupt
    summary = _read_json(plan.run_dir / "summary.json") or {}
    if result.returncode != 0:
        if summary.get("status") == "diverged":
            return "diverged"
        raise EsdsnnError(f"{plan.label} failed in {plan.run_dir}: {_error_line(result.last_lines)}")
    if summary.get("status") != "completed":
        raise EsdsnnError(f"{plan.label} ended without a completed summary in {plan.run_dir}")
    return "resumed" if resumed else "trained"


# ---- records and tables -------------------------------------------------------------------------
def _epoch_seconds(run_dir: Path) -> list[float]:
    try:
        with (run_dir / "metrics.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return []
    values = []
    for row in rows:
        try:
            values.append(float(row.get("epoch_s") or "nan"))
        except ValueError:
            continue
    return [v for v in values if math.isfinite(v)]


def collect_record(plan: RunPlan, how: str = "") -> dict[str, Any]:
    """One run's figures, read from its files."""
    summary = _read_json(plan.run_dir / "summary.json") or {}
    sidecar = _read_json(plan.run_dir / RUN_SIDECAR) or {}
    epoch_s = _epoch_seconds(plan.run_dir)
    return {
        "method": plan.method,
        "role": plan.role,
        "seed_index": plan.seed_index,
        "seed": plan.seed,
        "run_dir": str(plan.run_dir),
        "how": how,
        "status": summary.get("status"),
        "test_acc": summary.get("test_acc"),
        "test_total": summary.get("test_total"),
        "epochs": summary.get("epochs"),
        "epoch_s_mean": statistics.fmean(epoch_s) if epoch_s else None,
        "wall_s": summary.get("wall_s"),
        "peak_rss_bytes": sidecar.get("peak_rss_bytes"),
        "avg_firing_rate": summary.get("avg_firing_rate"),
        "energy_mj_per_sample": summary.get("energy_mj_per_sample"),
        **{k: summary.get(k) for k in ("dataset", "arch", "T", "batch_size", "lr", "torch", "device", "threads", "cpu_count")},
    }


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _std(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None]
    return statistics.stdev(vals) if len(vals) >= 2 else None


def summarise(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per method (in the order first seen) with the noise verdict against the best."""
    rows = []
    methods = list(dict.fromkeys(r["method"] for r in records))
    teachers = [m for m in methods if all(r["role"] == "teacher" for r in records if r["method"] == m)]
    for method in [m for m in methods if m not in teachers] + teachers:  # kd teachers last
        runs = [r for r in records if r["method"] == method]
        ok = [r for r in runs if r.get("status") == "completed" and r.get("test_acc") is not None]
        accs = [float(r["test_acc"]) for r in ok]
        peaks = [r["peak_rss_bytes"] for r in ok if r.get("peak_rss_bytes") is not None]
        epoch_s = [r["epoch_s_mean"] for r in ok]
        rows.append({
            "method": method,
            "role": runs[0]["role"],
            "n_seeds": len(ok),
            "n_diverged": sum(r.get("status") == "diverged" for r in runs),
            "test_acc_mean": _mean(accs),
            "test_acc_std": _std(accs),
            "test_accs": accs,
            "epoch_s_mean": _mean(epoch_s),
            "epoch_s_std": _std(epoch_s),
            "peak_rss_mib": _mean([p / 2**20 for p in peaks]),
            "avg_firing_rate": _mean([r.get("avg_firing_rate") for r in ok]),
            "energy_mj_per_sample": _mean([r.get("energy_mj_per_sample") for r in ok]),
        })
    _mark_noise(rows)
    return rows


def _combined_std(a: Mapping[str, Any], b: Mapping[str, Any]) -> Optional[float]:
    if a["test_acc_std"] is None or b["test_acc_std"] is None:
        return None
    return math.hypot(a["test_acc_std"], b["test_acc_std"])


def _mark_noise(rows: list[dict[str, Any]]) -> None:
    """``vs_best`` (difference to the best compared method, in accuracy fraction) and
    ``within_noise_of_best`` (True/False, None when there is no std to judge by)."""
    compared = [r for r in rows if r["role"] == "method" and r["test_acc_mean"] is not None]
    best = max(compared, key=lambda r: r["test_acc_mean"], default=None)
    for r in rows:
        r["best"] = r is best
        r["vs_best"] = None
        r["within_noise_of_best"] = None
        if best is None or r["test_acc_mean"] is None or r["role"] != "method":
            continue
        r["vs_best"] = r["test_acc_mean"] - best["test_acc_mean"]
        noise = _combined_std(r, best)
        if r is best:
            r["within_noise_of_best"] = True
        elif noise is not None:
            r["within_noise_of_best"] = abs(r["vs_best"]) <= noise


def noise_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line saying which differences are within noise."""
    compared = [r for r in rows if r["role"] == "method" and r["test_acc_mean"] is not None]
    best = next((r for r in compared if r.get("best")), None)
    if best is None:
        return "Noise: no completed runs to compare."
    if len(compared) == 1:
        return "Noise: only one method, nothing to compare."
    if best["test_acc_std"] is None or any(r["test_acc_std"] is None for r in compared):
        return ("Noise: at least one method has fewer than 2 completed seeds, so there is no std to judge "
                "differences by; treat them all as unresolved.")
    near = [r["method"] for r in compared if r is not best and r["within_noise_of_best"]]
    far = [f"{r['method']} ({r['vs_best'] * 100:+.2f} pp, {abs(r['vs_best']) / _combined_std(r, best):.1f}x its combined std)"
           if _combined_std(r, best) else r["method"]
           for r in compared if r is not best and not r["within_noise_of_best"]]
    text = (f"Noise: best mean is {best['method']} ({_pct(best['test_acc_mean'])}); "
            + (f"{', '.join(near)} {_verb(near)} within one combined std (sqrt(s_best² + s_m²)) of it (marked ≈): "
               f"those differences are within noise" if near else "no other method lies within one combined std of it")
            + (f"; {', '.join(far)} {_verb(far)} further below (beyond noise)." if far else "."))
    by = {r["method"]: r for r in compared}
    if "esd" in by and "sd" in by:
        gain = by["esd"]["test_acc_mean"] - by["sd"]["test_acc_mean"]
        noise = _combined_std(by["esd"], by["sd"])
        verdict = "within noise" if abs(gain) <= noise else "beyond one combined std"
        text += (f" Reliability filter (esd − sd, the ablation): {gain * 100:+.2f} pp, combined std "
                 f"{noise * 100:.2f} pp: {verdict}.")
    return text


def _verb(names: Sequence[str]) -> str:
    return "lies" if len(names) == 1 else "lie"


def _pct(v: Optional[float], std: Optional[float] = None) -> str:
    if v is None:
        return "—"
    return f"{v * 100:.2f} ± {std * 100:.2f} %" if std is not None else f"{v * 100:.2f} %"


def _num(v: Optional[float], fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def compare_markdown(rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                     baseline_bytes: Optional[int] = None) -> str:
    """The table, the noise note and the settings and environment it was measured with."""
    lines = [
        "| method | n | test acc (mean ± std) | vs best | time / epoch (s) | peak RSS (MiB) | avg firing rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["method"] + (" (kd teacher)" if r["role"] == "teacher" else "")
        n = str(r["n_seeds"]) + (f" (+{r['n_diverged']} diverged)" if r["n_diverged"] else "")
        if r.get("best"):
            vs = "best"
        elif r["vs_best"] is None:
            vs = "—"
        else:
            vs = f"{r['vs_best'] * 100:+.2f} pp" + (" ≈" if r["within_noise_of_best"] else "")
        time_cell = _num(r["epoch_s_mean"], ".2f") + (f" ± {r['epoch_s_std']:.2f}" if r["epoch_s_std"] is not None else "")
        lines.append(
            f"| {name} | {n} | {_pct(r['test_acc_mean'], r['test_acc_std'])} | {vs} | {time_cell} | "
            f"{_num(r['peak_rss_mib'], '.0f')} | {_num(r['avg_firing_rate'], '.4f')} |"
        )
    note = noise_note(rows)
    totals = {r.get("test_total") for r in records if r.get("test_total")}
    if len(totals) == 1:
        note += f" (One test sample is {100 / totals.pop():.2f} pp.)"
    lines += ["", note, ""]
    done = [r for r in records if r.get("status") == "completed"] or list(records)
    if done:
        r0 = done[0]
        seeds = sorted({r["seed"] for r in records})

        def values(key: str) -> str:
            return "/".join(str(v) for v in dict.fromkeys(r.get(key) for r in done))

        lines.append(
            f"Settings: {values('dataset')}, {values('arch')}, T={values('T')}, {values('epochs')} epochs, "
            f"batch {values('batch_size')}, lr {values('lr')}; seeds {', '.join(map(str, seeds))}. "
            f"Environment: torch {r0.get('torch')}, {values('device')}, {values('threads')} thread(s), "
            f"{r0.get('cpu_count')} CPUs."
        )
    base = f" (a process that only imports torch and esdsnn peaks at {baseline_bytes / 2**20:.0f} MiB)" if baseline_bytes else ""
    lines.append(
        "Test acc: final epoch, spike pass, mean ± sample std over seeds. Time / epoch: metrics.csv epoch_s "
        "(training + that epoch's test pass), mean over epochs, then mean ± std over seeds; measured on a "
        "shared machine. Peak RSS: whole training process, ru_maxrss via os.wait4" + base + "; kd includes its "
        "frozen teacher, and its time excludes training the teacher."
    )
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            cells = {k: r.get(k) for k in CSV_COLUMNS}
            cells["test_accs"] = ";".join(f"{a:.6g}" for a in r["test_accs"])
            for k, v in cells.items():
                if v is None:
                    cells[k] = ""
                elif isinstance(v, float):
                    cells[k] = f"{v:.6g}"
            writer.writerow(cells)


def plot_compare(rows: Sequence[Mapping[str, Any]], path: Path, title: Optional[str] = None) -> Path:
    """Two panels, one bar per method: test accuracy (std error bars, seeds as dots) and time per
    epoch (std error bars). The kd teacher's bar is hatched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(8.0, 1.3 * len(rows) + 3.0), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax_acc, ax_time = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    xs = range(len(rows))
    names = [r["method"] + ("\n(teacher)" if r["role"] == "teacher" else "") for r in rows]
    colors = ["0.7" if r["role"] == "teacher" else f"C{i}" for i, r in enumerate(rows)]
    hatch = ["//" if r["role"] == "teacher" else None for r in rows]

    def bars(ax, key: str, scale: float) -> None:
        heights = [(r[f"{key}_mean"] or 0.0) * scale for r in rows]
        errors = [(r[f"{key}_std"] or 0.0) * scale for r in rows]
        for x, h, e, c, hh in zip(xs, heights, errors, colors, hatch):
            ax.bar(x, h, yerr=e, color=c, hatch=hh, capsize=4, edgecolor="0.3", linewidth=0.5)

    bars(ax_acc, "test_acc", 100.0)
    for x, r in zip(xs, rows):
        if r["test_accs"]:
            ax_acc.plot([x] * len(r["test_accs"]), [a * 100 for a in r["test_accs"]], "k.", markersize=4)
    accs = [a * 100 for r in rows for a in r["test_accs"]]
    if accs:
        spread = max(accs) - min(accs)
        ax_acc.set_ylim(max(0.0, min(accs) - max(2.0, spread)), min(100.0, max(accs) + max(1.0, 0.3 * spread)))
    ax_acc.set_ylabel("test accuracy (%), mean ± std")
    bars(ax_time, "epoch_s", 1.0)
    ax_time.set_ylabel("time per epoch (s), mean ± std")
    for ax in (ax_acc, ax_time):
        ax.set_xticks(list(xs), names, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    n = max((r["n_seeds"] for r in rows), default=0)
    fig.suptitle(title or f"methods compared ({n} seed(s) each)")
    fig.savefig(path, dpi=120)
    return path


def write_compare_files(out: Union[str, Path], records: Sequence[Mapping[str, Any]],
                        baseline_bytes: Optional[int] = None, title: Optional[str] = None) -> tuple[list[dict[str, Any]], str]:
    """``compare.json`` (records), ``compare.csv``, ``compare.md``, ``compare.png`` in ``out``;
    returns the rows and the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / COMPARE_JSON, {"title": title, "import_baseline_rss_bytes": baseline_bytes, "records": list(records)})
    rows = summarise(records)
    markdown = compare_markdown(rows, records, baseline_bytes)
    write_csv(rows, out / COMPARE_CSV)
    (out / COMPARE_MD).write_text(markdown, encoding="utf-8")
    plot_compare(rows, out / COMPARE_PNG, title)
    return rows, markdown


def tables_from_json(out: Union[str, Path]) -> tuple[list[dict[str, Any]], str]:
    """Rebuild the table files from a saved ``compare.json``."""
    data = _read_json(Path(out) / COMPARE_JSON)
    if data is None:
        raise CheckpointError(f"{Path(out) / COMPARE_JSON} not found or unreadable")
    return write_compare_files(out, data["records"], data.get("import_baseline_rss_bytes"), data.get("title"))


# ---- the whole comparison ------------------------------------------------------------------------
@dataclass
class CompareResult:
    out: Path
    records: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    markdown: str
    how: dict[str, str]  # run_dir -> reused / trained / resumed / diverged

    @property
    def files(self) -> dict[str, Path]:
        return {name: self.out / name for name in (COMPARE_MD, COMPARE_CSV, COMPARE_PNG, COMPARE_JSON)}


def run_comparison(base, methods: Union[str, Sequence[str]] = DEFAULT_METHODS, seeds: int = DEFAULT_SEEDS,
                   out: Union[str, Path] = "runs/compare", *, echo: Echo = print, overwrite: bool = False,
                   python: str = sys.executable) -> CompareResult:
    """Train (or reuse) every method × seed, then write and return the table (see the module doc)."""
    plans = plan_runs(base, methods, seeds, out)
    out = Path(out).expanduser().resolve()
    c = plans[0].config
    teachers = sum(p.role == "teacher" for p in plans)
    names = list(dict.fromkeys(p.method for p in plans if p.role == "method"))
    echo(
        f"compare {len(names)} method(s) x {seeds} seed(s) on {c.dataset} ({c.arch}, T={c.T}, {c.epochs} epochs, "
        f"batch {c.batch_size}, lr {c.lr:g}) -> {out}" + (f"; plus {teachers} ann teacher run(s) for kd" if teachers else "")
    )
    states = [(plan, *run_state(plan)) for plan in plans]
    clashes = [(plan, why) for plan, state, why in states if state == "mismatch"]
    if clashes and not overwrite:  # before training anything: never hours later
        plan, why = clashes[0]
        more = f" (and {len(clashes) - 1} more run(s))" if len(clashes) > 1 else ""
        raise ConfigError(
            f"{plan.run_dir} holds a {plan.method} run with other settings ({why}){more}; use another --out, "
            f"or --overwrite to retrain"
        )
    finished = sum(state == "done" for _, state, _ in states)
    if finished:
        echo(f"{finished} of {len(plans)} run(s) already finished: reused, not retrained")
    how: dict[str, str] = {}
    records = []
    for i, plan in enumerate(plans, 1):
        role = " (kd teacher)" if plan.role == "teacher" else ""
        echo(f"[{i}/{len(plans)}] {plan.label}{role}: {plan.run_dir}")
        try:
            done = ensure_run(plan, python=python, echo=echo, overwrite=overwrite)
        except KeyboardInterrupt:
            echo(f"interrupted in {plan.run_dir}; run the same command again to continue (finished runs are "
                 f"reused, this one resumes from its checkpoint)")
            raise
        how[str(plan.run_dir)] = done
        record = collect_record(plan, done)
        records.append(record)
        acc = "—" if record["test_acc"] is None else f"{record['test_acc']:.2%}"
        peak = "" if record["peak_rss_bytes"] is None else f", peak RSS {record['peak_rss_bytes'] / 2**20:.0f} MiB"
        epoch = "" if record["epoch_s_mean"] is None else f", {record['epoch_s_mean']:.1f} s/epoch"
        echo(f"    {done}: test {acc}{epoch}{peak}")
    baseline = import_baseline_bytes(python)
    title = f"{c.dataset}: {c.arch}, T={c.T}, {c.epochs} epochs, {seeds} seed(s)"
    rows, markdown = write_compare_files(out, records, baseline, title)
    return CompareResult(out, records, rows, markdown, how)


__all__ = [
    "COMPARE_CSV", "COMPARE_JSON", "COMPARE_MD", "COMPARE_PNG", "CompareResult", "DEFAULT_METHODS", "RunPlan",
    "base_config", "compare_markdown", "ensure_run", "noise_note", "parse_methods", "plan_runs", "run_comparison",
    "run_state", "summarise", "tables_from_json", "write_compare_files",
]

"""Methods side by side: every method × seed trained as a normal run, then one table and one figure.

``run_comparison(base, methods, seeds, out)`` trains ``out/<method>/seed-<seed>/`` with seed
``base.seed + k`` for k = 0..seeds−1 (all other settings from ``base``), one run after the other,
each in its own process (``python -m esdsnn train``); the folder is named by the seed itself, so
it says which seed it holds. A method that distils from a teacher run (``kd``: from an ``ann``
run, as its spec declares) first gets a teacher per seed, trained (or reused) in
``out/<teacher method>/seed-<seed>/`` with the same settings, and passed as ``teacher_run``.
Comparisons written before, with folders ``seed<k>`` named by index, are still found: such a
folder is used when its saved config has the wanted seed and no ``seed-<seed>`` folder exists.

**Resumable.** Before training, each run directory is checked:

- a run whose ``summary.json`` says ``completed`` (or ``diverged``) and whose saved ``config.yaml``
  equals the one requested (ignoring :func:`ignored_fields`, which do not change what is computed;
  the epochs count) is *reused*, not retrained; a kd run is retrained when its teacher run has
  changed since. A finished shorter run is not extended (``--resume --epochs`` restarts its cosine,
  which is not a run planned for more epochs), nor is a run extended that way reused: both are a
  mismatch;
- a run with the same settings but no final summary is *resumed* from its last checkpoint (or
  restarted when there is none, or when resuming fails);
- a run with other settings is an error unless ``overwrite=True`` (then it is deleted and
  retrained), so that a typo in a flag never silently throws away finished runs;
- a run that another process is training is an error before anything trains, and is never
  deleted; the comparison folder itself has one writer (its own lock).

**Peak memory.** Each training process is waited for with ``os.wait4``, which gives that one
child's resource usage; its ``ru_maxrss`` is the peak resident set size of the whole training
process (Python, torch, data, model, optimiser, activations and allocator slack; the kd teacher
included), saved per run in ``compare_run.json``. A resumed run keeps the larger of its sessions.
For scale, the peak of a process that only imports torch and esdsnn is measured once per call and
printed under the table. (``RUSAGE_CHILDREN`` deltas would not work: it reports the maximum over
all children ever waited for, not per child.) Where ``os.wait4`` does not exist, peaks are not
recorded.

**Tables** are built from the saved run files by :mod:`esdsnn.analysis.comparison`.
"""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from esdsnn.analysis.comparison import (
    COMPARE_CSV,
    COMPARE_JSON,
    COMPARE_MD,
    COMPARE_PNG,
    settings_title,
    write_compare_files,
)
from esdsnn.compare.plan import RunPlan, base_config, method_config, parse_methods, plan_runs, seed_run_dir
from esdsnn.compare.processes import ChildResult, import_baseline_bytes, run_child
from esdsnn.config import SAME_RESULT_FIELDS, TrainConfig, read_yaml, save_config
from esdsnn.defaults import DATA_DEPENDENT
from esdsnn.errors import ConfigError, EsdsnnError, RunInUse, brief
from esdsnn.runs.claim import resumable
from esdsnn.runs.files import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_json, read_metrics, write_json
from esdsnn.runs.lock import RunLock, holder

DEFAULT_METHODS = ("bptt", "ratebp", "esd", "esd-bptt", "sd", "kd")
DEFAULT_SEEDS = 3
RUN_SIDECAR = "compare_run.json"
# Config fields that may differ between a saved run and the request without making it another run:
# the run directory, and the settings that never change a run's results (SAME_RESULT_FIELDS:
# progress, threads, device, eval_every, workers, ...). The epochs are not among them.
EXTRA_IGNORED_FIELDS = ("out",)
Echo = Callable[[str], None]


# ---- state of a run directory -------------------------------------------------------------------
def ignored_fields() -> tuple[str, ...]:
    """Config fields a reused run may differ in (see :data:`EXTRA_IGNORED_FIELDS`)."""
    return tuple(dict.fromkeys((*EXTRA_IGNORED_FIELDS, *SAME_RESULT_FIELDS)))


def config_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``key: saved -> wanted`` for every field that differs (ignoring :func:`ignored_fields`, and
    data-dependent settings left unset in ``wanted``: each run sizes them to its data)."""
    ignored = ignored_fields()
    keys = [k for k in wanted if k not in ignored and not (wanted[k] is None and k in DATA_DEPENDENT)]
    return [f"{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in keys if saved.get(k) != wanted[k]]


def _teacher_fingerprint(teacher_dir: Path) -> Optional[dict[str, Any]]:
    summary = read_json(teacher_dir / SUMMARY_FILE)
    if summary is None:
        return None
    return {"run": str(teacher_dir), **{k: summary.get(k) for k in ("status", "test_acc", "wall_s", "epochs")}}


def run_state(plan: RunPlan) -> tuple[str, str]:
    """``(state, why)``: ``new``, ``done``, ``resume``, ``restart`` or ``mismatch``."""
    run_dir = plan.run_dir
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        if run_dir.is_dir() and any(run_dir.glob("*.pt")):
            return "restart", "checkpoints without a config.yaml"
        return "new", ""
    try:
        saved = TrainConfig.from_saved(read_yaml(config_file), source=str(config_file)).to_dict()
    except ConfigError as exc:
        return "mismatch", f"its config.yaml cannot be read ({exc})"
    diffs = config_differences(saved, plan.config.to_dict())
    summary = read_json(run_dir / SUMMARY_FILE) or {}
    if diffs:
        if summary.get("status") == "completed" and saved.get("epochs") != plan.config.optim.epochs:
            diffs.append(
                f"a finished {saved.get('epochs')}-epoch run is not extended: --resume --epochs would "
                f"restart its cosine, which is not a {plan.config.optim.epochs}-epoch run"
            )
        return "mismatch", "; ".join(diffs)
    replanned = summary.get("epochs_replanned")
    if replanned:
        first = replanned[0]
        return "mismatch", (
            f"its epochs were changed from {first.get('from')} to {first.get('to')} by --resume after "
            f"epoch {first.get('after_epoch')}, not planned from the start"
        )
    if summary.get("status") in ("completed", "diverged"):
        if plan.teacher is not None:
            used = (read_json(run_dir / RUN_SIDECAR) or {}).get("teacher")
            if used is not None and used != _teacher_fingerprint(plan.teacher.run_dir):
                return "restart", "its ann teacher has been retrained since"
        if summary["status"] == "diverged" or summary.get("epochs") == plan.config.optim.epochs:
            return "done", summary["status"]
    if resumable(run_dir):
        return "resume", "incomplete"
    return "restart", "incomplete, no checkpoint"


def check_out_writable(out: Path) -> None:
    """Create ``out`` and write a probe file in it, before anything trains: a folder that cannot be
    written is a :class:`ConfigError` naming it and the reason, not a traceback hours later."""
    probe = out / ".esdsnn-write-probe"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as exc:
        raise unwritable(out, exc) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def unwritable(folder: Path, exc: OSError) -> ConfigError:
    """The one-line error for an output folder that refused a write."""
    return ConfigError(f"cannot write to {folder}: {exc.strerror or brief(exc)}; choose another --out")


# ---- running -----------------------------------------------------------------------------------
def _error_line(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        if "error" in line.lower():
            return line.strip()
    return lines[-1].strip() if lines else "no output"


def _train_command(plan: RunPlan, request: Path, python: str, resume: bool) -> list[str]:
    cmd = [python, "-m", "esdsnn", "train"]
    if resume:
        cmd += ["--resume", str(plan.run_dir), "--no-progress"]
        if plan.config.run.threads is not None:
            cmd += ["--threads", str(plan.config.run.threads)]
        return cmd
    save_config(plan.config, request)
    return [*cmd, "--config", str(request)]


def _train(plan: RunPlan, resume: bool, python: str, echo: Echo) -> ChildResult:
    with tempfile.TemporaryDirectory(prefix="esdsnn-compare-") as tmp:
        return run_child(_train_command(plan, Path(tmp) / CONFIG_FILE, python, resume), echo)


def _record_session(plan: RunPlan, result: ChildResult, resumed: bool) -> None:
    """Merge this training session's peak into the run's ``compare_run.json``."""
    path = plan.run_dir / RUN_SIDECAR
    data = (read_json(path) or {}) if resumed else {}
    peaks = [p for p in (data.get("peak_rss_bytes"), result.peak_rss_bytes) if p is not None]
    data.update(
        peak_rss_bytes=max(peaks) if peaks else None,
        peak_rss_method="ru_maxrss of the training process (os.wait4)" if peaks else None,
        sessions=int(data.get("sessions", 0)) + 1,
    )
    if plan.teacher is not None:
        data["teacher"] = _teacher_fingerprint(plan.teacher.run_dir)
    if plan.run_dir.is_dir():
        write_json(path, data)


def _remove_run(run_dir: Path) -> None:
    """Delete a run directory to retrain it, holding its lock meanwhile: a run that another
    process is writing is never deleted (:class:`RunInUse` instead)."""
    lock = RunLock(run_dir).acquire(fix="wait for it to finish, then run the comparison again")
    try:
        shutil.rmtree(run_dir)
    finally:
        lock.release()


def busy_runs(plans: Sequence[RunPlan]) -> None:
    """Refuse, before anything trains, runs that another process is writing now."""
    for plan in plans:
        who = holder(plan.run_dir) if plan.run_dir.is_dir() else None
        if who is not None:
            raise RunInUse(
                f"{plan.run_dir} is being trained by another esdsnn process ({who.describe()}); a run has "
                f"one writer: wait for it to finish, then run the comparison again"
            )


def ensure_run(plan: RunPlan, *, python: str = sys.executable, echo: Echo = print, overwrite: bool = False) -> str:
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
        _remove_run(plan.run_dir)
    if plan.teacher is not None:
        teacher = read_json(plan.teacher.run_dir / SUMMARY_FILE) or {}
        if teacher.get("status") != "completed":
            raise EsdsnnError(
                f"kd needs a trained teacher, but {plan.teacher.run_dir} is {teacher.get('status', 'missing')}"
            )
    plan.run_dir.parent.mkdir(parents=True, exist_ok=True)

    resumed = state == "resume"
    result = _train(plan, resumed, python, echo)
    if result.returncode != 0 and not result.stopped and resumed:
        summary = read_json(plan.run_dir / SUMMARY_FILE) or {}
        if summary.get("status") != "diverged":
            echo(f"    resuming failed ({_error_line(result.last_lines)}): restarting")
            _remove_run(plan.run_dir)
            resumed = False
            result = _train(plan, False, python, echo)
    _record_session(plan, result, resumed)
    if result.stopped:
        raise KeyboardInterrupt
    summary = read_json(plan.run_dir / SUMMARY_FILE) or {}
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
        rows = read_metrics(run_dir / METRICS_FILE)
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
    summary = read_json(plan.run_dir / SUMMARY_FILE) or {}
    sidecar = read_json(plan.run_dir / RUN_SIDECAR) or {}
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
        **{
            k: summary.get(k)
            for k in ("dataset", "arch", "T", "batch_size", "lr", "torch", "device", "threads", "cpu_count")
        },
    }


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


def run_comparison(
    base,
    methods: Union[str, Sequence[str]] = DEFAULT_METHODS,
    seeds: int = DEFAULT_SEEDS,
    out: Union[str, Path] = "runs/compare",
    *,
    echo: Echo = print,
    overwrite: bool = False,
    python: str = sys.executable,
) -> CompareResult:
    """Train (or reuse) every method × seed, then write and return the table (see the module doc).
    The comparison folder has one writer too: a second comparison into ``out`` is refused while
    this one runs, and so is a run that another process is training."""
    plans = plan_runs(base, methods, seeds, out)
    out = Path(out).expanduser().resolve()
    check_out_writable(out)
    lock = RunLock(out, what="comparison folder").acquire(fix="wait for it to finish, or choose another --out")
    try:
        busy_runs(plans)
        return _compare(plans, seeds, out, echo, overwrite, python)
    finally:
        lock.release()


def _unset(value: Any, unit: str = "") -> str:
    return (
        "sized to the data" if value is None else f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"
    )


def _compare(plans: list[RunPlan], seeds: int, out: Path, echo: Echo, overwrite: bool, python: str) -> CompareResult:
    c = plans[0].config
    teachers = sum(p.role == "teacher" for p in plans)
    names = list(dict.fromkeys(p.method for p in plans if p.role == "method"))
    echo(
        f"compare {len(names)} method(s) x {seeds} seed(s) on {c.dataset} (arch {_unset(c.arch)}, T={c.T}, "
        f"{c.optim.epochs} epochs, batch {_unset(c.optim.batch_size)}, lr {_unset(c.optim.lr)}) -> {out}"
        + (f"; plus {teachers} teacher run(s) for the distilling methods" if teachers else "")
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
            echo(
                f"interrupted in {plan.run_dir}; run the same command again to continue (finished runs are "
                f"reused, this one resumes from its checkpoint)"
            )
            raise
        how[str(plan.run_dir)] = done
        record = collect_record(plan, done)
        records.append(record)
        acc = "—" if record["test_acc"] is None else f"{record['test_acc']:.2%}"
        peak = "" if record["peak_rss_bytes"] is None else f", peak RSS {record['peak_rss_bytes'] / 2**20:.0f} MiB"
        epoch = "" if record["epoch_s_mean"] is None else f", {record['epoch_s_mean']:.1f} s/epoch"
        echo(f"    {done}: test {acc}{epoch}{peak}")
    baseline = import_baseline_bytes(python)
    title = settings_title(records, seeds)  # what ran, read from the runs
    try:
        rows, markdown = write_compare_files(out, records, baseline, title)
    except OSError as exc:  # the folder took the runs but not the tables (e.g. now full or read-only)
        raise unwritable(out, exc) from None
    return CompareResult(out, records, rows, markdown, how)


__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_SEEDS",
    "CompareResult",
    "RunPlan",
    "base_config",
    "busy_runs",
    "ensure_run",
    "method_config",
    "parse_methods",
    "plan_runs",
    "run_comparison",
    "run_state",
    "seed_run_dir",
]

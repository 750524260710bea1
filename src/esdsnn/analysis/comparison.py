"""Tables of a comparison of methods: one row per method from per-run records, with the noise
verdict, as Markdown, CSV and a figure (the runs themselves are trained by :mod:`esdsnn.compare`).

Accuracy is the final test accuracy (spike pass), mean ± sample std (ddof = 1) over seeds: a
fraction (0..1) in ``compare.json`` and ``compare.csv`` (``vs_best`` too), a percentage in
``compare.md`` and the figure, labelled (%) or pp (percentage points); time
per epoch is the mean of ``metrics.csv``'s ``epoch_s`` (training plus that epoch's test pass);
peak memory and firing rate are means over seeds. The noise note marks every method whose mean
lies within one combined std ``sqrt(s_best² + s_m²)`` of the best method's mean; for a method
that declares itself the ablation of another (``sd`` of ``esd``: the reliability filter) it also
states whether the difference exceeds that noise.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from esdsnn.atomic import write_text_atomic
from esdsnn.errors import CheckpointError
from esdsnn.methods import list_methods, method_spec
from esdsnn.runs.files import read_json, write_json

COMPARE_JSON = "compare.json"
COMPARE_CSV = "compare.csv"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"
CSV_COLUMNS = (
    "method",
    "role",
    "n_seeds",
    "n_diverged",
    "test_acc_mean",
    "test_acc_std",
    "test_accs",
    "epoch_s_mean",
    "epoch_s_std",
    "peak_rss_mib",
    "avg_firing_rate",
    "energy_mj_per_sample",
    "vs_best",
    "within_noise_of_best",
)


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
        rows.append(
            {
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
            }
        )
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
        return (
            "Noise: at least one method has fewer than 2 completed seeds, so there is no std to judge "
            "differences by; treat them all as unresolved."
        )
    near = [r["method"] for r in compared if r is not best and r["within_noise_of_best"]]
    far = [
        f"{r['method']} ({r['vs_best'] * 100:+.2f} pp, {abs(r['vs_best']) / _combined_std(r, best):.1f}x its combined std)"
        if _combined_std(r, best)
        else r["method"]
        for r in compared
        if r is not best and not r["within_noise_of_best"]
    ]
    text = (
        f"Noise: best mean is {best['method']} ({_pct(best['test_acc_mean'])}); "
        + (
            f"{', '.join(near)} {_verb(near)} within one combined std (sqrt(s_best² + s_m²)) of it (marked ≈): "
            f"those differences are within noise"
            if near
            else "no other method lies within one combined std of it"
        )
        + (f"; {', '.join(far)} {_verb(far)} further below (beyond noise)." if far else ".")
    )
    by = {r["method"]: r for r in compared}
    for name, row in by.items():  # what each ablation measures, as its method declares
        ablation = method_spec(name).ablation_of if name in list_methods() else None
        if ablation is None or ablation[0] not in by:
            continue
        base, what = ablation
        gain = by[base]["test_acc_mean"] - row["test_acc_mean"]
        noise = _combined_std(by[base], row)
        assert noise is not None  # every compared method has a std (returned above otherwise)
        verdict = "within noise" if abs(gain) <= noise else "beyond one combined std"
        text += (
            f" {what[0].upper() + what[1:]} ({base} − {name}, the ablation): {gain * 100:+.2f} pp, combined std "
            f"{noise * 100:.2f} pp: {verdict}."
        )
    return text


def _verb(names: Sequence[str]) -> str:
    return "lies" if len(names) == 1 else "lie"


def _pct(v: Optional[float], std: Optional[float] = None, unit: str = " %") -> str:
    """A fraction as a percentage for people; ``unit=""`` in a table whose header says (%)."""
    if v is None:
        return "—"
    return f"{v * 100:.2f} ± {std * 100:.2f}{unit}" if std is not None else f"{v * 100:.2f}{unit}"


def _num(v: Optional[float], fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def compare_markdown(
    rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]], baseline_bytes: Optional[int] = None
) -> str:
    """The table, the noise note and the settings and environment it was measured with."""
    lines = [
        "| method | n | test accuracy (%, mean ± std) | vs best (pp) | time / epoch (s) | peak RSS (MiB) | avg firing rate |",
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
            vs = f"{r['vs_best'] * 100:+.2f}" + (" ≈" if r["within_noise_of_best"] else "")
        time_cell = _num(r["epoch_s_mean"], ".2f") + (
            f" ± {r['epoch_s_std']:.2f}" if r["epoch_s_std"] is not None else ""
        )
        lines.append(
            f"| {name} | {n} | {_pct(r['test_acc_mean'], r['test_acc_std'], unit='')} | {vs} | {time_cell} | "
            f"{_num(r['peak_rss_mib'], '.0f')} | {_num(r['avg_firing_rate'], '.4f')} |"
        )
    note = noise_note(rows)
    totals = {r["test_total"] for r in records if r.get("test_total")}
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
    base = (
        f" (a process that only imports torch and esdsnn peaks at {baseline_bytes / 2**20:.0f} MiB)"
        if baseline_bytes
        else ""
    )
    lines.append(
        "Test accuracy: final epoch, spike pass, in percent, mean ± sample std over seeds (compare.csv and "
        "compare.json hold the same figures as fractions, 0-1; vs best: percentage points). Time / epoch: metrics.csv epoch_s "
        "(training + that epoch's test pass), mean over epochs, then mean ± std over seeds; measured on a "
        "shared machine. Peak RSS: whole training process, ru_maxrss via os.wait4" + base + "; kd includes its "
        "frozen teacher, and its time excludes training the teacher."
    )
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
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
    write_text_atomic(path, buffer.getvalue())


def _ran(records: Sequence[Mapping[str, Any]], key: str) -> str:
    """The values of ``key`` the runs recorded (their summary.json), ``a/b`` where they differ."""
    done = [r for r in records if r.get("status") == "completed"] or list(records)
    values = [v for v in dict.fromkeys(r.get(key) for r in done) if v is not None]
    return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) or "?"


def settings_title(records: Sequence[Mapping[str, Any]], seeds: Optional[int] = None) -> str:
    """The settings that ran, read from the runs' records (never from the request): data set,
    model, T, epochs, batch and seeds."""
    n = seeds if seeds is not None else len({r.get("seed") for r in records if r.get("role") == "method"})
    return (
        f"{_ran(records, 'dataset')}: {_ran(records, 'arch')}, T={_ran(records, 'T')}, "
        f"{_ran(records, 'epochs')} epochs, batch {_ran(records, 'batch_size')}, {n} seed(s)"
    )


def _bar_label(row: Mapping[str, Any]) -> str:
    return row["method"] + ("\n(teacher)" if row["role"] == "teacher" else "") + f"\nn = {row['n_seeds']}"


def compare_figure(rows: Sequence[Mapping[str, Any]], title: Optional[str] = None):
    """The figure of :func:`plot_compare`: two panels, one bar per method, each labelled with its
    number of completed seeds n: test accuracy (%, mean over seeds, seeds as dots) and time per
    epoch (s). Bars start at 0. Error bars are the sample std over seeds, drawn only where n ≥ 2
    (one seed has no spread to show). The kd teacher's bar is hatched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(8.0, 1.3 * len(rows) + 3.0), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_acc, ax_time = fig.add_subplot(1, 2, 1, label="accuracy"), fig.add_subplot(1, 2, 2, label="time")
    xs = list(range(len(rows)))
    colors = ["0.7" if r["role"] == "teacher" else f"C{i}" for i, r in enumerate(rows)]
    hatch = ["//" if r["role"] == "teacher" else None for r in rows]

    def bars(ax, key: str, scale: float) -> None:
        for x, r, c, hh in zip(xs, rows, colors, hatch):
            std = r[f"{key}_std"] if r["n_seeds"] >= 2 else None
            ax.bar(
                x,
                (r[f"{key}_mean"] or 0.0) * scale,
                yerr=None if std is None else std * scale,
                color=c,
                hatch=hh,
                capsize=4,
                edgecolor="0.3",
                linewidth=0.5,
            )

    bars(ax_acc, "test_acc", 100.0)
    dot_label: Optional[str] = "one seed"  # in the legend once
    for x, r in zip(xs, rows):
        if r["test_accs"]:
            ax_acc.plot(
                [x] * len(r["test_accs"]), [a * 100 for a in r["test_accs"]], "k.", markersize=4, label=dot_label
            )
            dot_label = None
    ax_acc.set_ylim(0, 100)
    ax_acc.set_ylabel("test accuracy (%), mean over seeds")
    bars(ax_time, "epoch_s", 1.0)
    ax_time.set_ylim(bottom=0)
    ax_time.set_ylabel("time per epoch (s), mean over seeds")
    for ax in (ax_acc, ax_time):
        ax.set_xticks(xs, [_bar_label(r) for r in rows], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if ax_acc.lines:
        ax_acc.legend(loc="lower right", fontsize=7)
    spread = (
        "error bars: sample std over seeds (where n ≥ 2)"
        if any(r["n_seeds"] >= 2 for r in rows)
        else "one seed each: no error bars"
    )
    # two lines, so that a long title is never clipped at the figure's edge
    fig.suptitle(f"{title or 'methods compared'}\nn = completed seeds per bar; {spread}", fontsize=10)
    return fig


def plot_compare(rows: Sequence[Mapping[str, Any]], path: Path, title: Optional[str] = None) -> Path:
    """Write :func:`compare_figure` of ``rows`` (from :func:`summarise`) to ``path`` as PNG."""
    from esdsnn.analysis.plots import save_figure

    return save_figure(compare_figure(rows, title), path)


def write_compare_files(
    out: Union[str, Path],
    records: Sequence[Mapping[str, Any]],
    baseline_bytes: Optional[int] = None,
    title: Optional[str] = None,
) -> tuple[list[dict[str, Any]], str]:
    """``compare.json`` (records), ``compare.csv``, ``compare.md``, ``compare.png`` in ``out``;
    returns the rows and the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / COMPARE_JSON, {"title": title, "import_baseline_rss_bytes": baseline_bytes, "records": list(records)}
    )
    rows = summarise(records)
    markdown = compare_markdown(rows, records, baseline_bytes)
    write_csv(rows, out / COMPARE_CSV)
    write_text_atomic(out / COMPARE_MD, markdown)
    plot_compare(rows, out / COMPARE_PNG, title)
    return rows, markdown


def tables_from_json(out: Union[str, Path]) -> tuple[list[dict[str, Any]], str]:
    """Rebuild the table files from a saved ``compare.json``."""
    data = read_json(Path(out) / COMPARE_JSON)
    if data is None:
        raise CheckpointError(f"{Path(out) / COMPARE_JSON} not found or unreadable")
    return write_compare_files(out, data["records"], data.get("import_baseline_rss_bytes"), data.get("title"))


__all__ = [
    "COMPARE_CSV",
    "COMPARE_JSON",
    "COMPARE_MD",
    "COMPARE_PNG",
    "compare_figure",
    "compare_markdown",
    "noise_note",
    "plot_compare",
    "summarise",
    "tables_from_json",
    "write_compare_files",
    "write_csv",
]

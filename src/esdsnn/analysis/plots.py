"""Figures built from saved records: firing rates, training curves, the training-cost benchmark.

Figures are drawn on ``matplotlib.figure.Figure`` objects and written with the Agg renderer, so
nothing here touches pyplot's global state or the user's chosen backend; matplotlib is imported
only when a figure is drawn.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union


def _figure(width: float, height: float, panels: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    return fig, axes


def plot_firing_rates(report, path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Bar plot of each LIF layer's mean firing rate, the network average as a dashed line.

    ``report`` is a :class:`~esdsnn.analysis.firing.FiringReport` or its ``to_dict()``.
    """
    d = report if isinstance(report, Mapping) else report.to_dict()
    names = [layer["name"] for layer in d["layers"]]
    rates = [layer["rate"] for layer in d["layers"]]
    fig, (ax,) = _figure(max(6.0, 0.35 * len(names) + 2.0), 4.0)
    ax.bar(range(len(names)), rates, color="tab:blue")
    ax.axhline(d["avg_rate"], color="tab:red", linestyle="--", label=f"average {d['avg_rate']:.4f} (by neurons)")
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    ax.set_ylim(0, max([*rates, d["avg_rate"], 1e-3]) * 1.15)
    ax.set_title(title or f"firing rate per LIF layer (T = {d['T']}, {d['samples']} samples)")
    ax.legend(loc="upper right")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def read_numeric_csv(path: Union[str, Path]) -> dict[str, list[float]]:
    """The numeric columns of a CSV file as lists of floats (empty or non-numeric cells: NaN).

    A column with no numeric cell at all is left out.
    """
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns: dict[str, list[float]] = {}
    for name in rows[0].keys() if rows else ():
        values = []
        for row in rows:
            try:
                values.append(float(row.get(name) or "nan"))
            except ValueError:
                values.append(math.nan)
        if any(not math.isnan(v) for v in values):
            columns[name] = values
    return columns


def _is_loss(name: str) -> bool:
    n = name.lower()
    return "loss" in n or n.startswith(("ce", "kd", "samd", "nld"))


def plot_training_curves(metrics: Union[str, Path, Mapping[str, Sequence[float]]], path: Union[str, Path], title: Optional[str] = None) -> Optional[Path]:
    """Loss and accuracy (and the learning rate, when logged) against epoch from ``metrics.csv``.

    Reads whatever numeric columns exist: losses (``loss``, ``train_loss``, ``ce_*``, ``kd``...) in
    the first panel, accuracies (names containing ``acc``) in the second, ``lr`` in a third.
    Returns ``None`` (and writes nothing) when there is no row to plot.
    """
    cols = read_numeric_csv(metrics) if isinstance(metrics, (str, Path)) else {k: list(v) for k, v in metrics.items()}
    if not cols or not any(len(v) for v in cols.values()):
        return None
    n = max(len(v) for v in cols.values())
    epoch = cols.pop("epoch", [float(i + 1) for i in range(n)])
    losses = {k: v for k, v in cols.items() if _is_loss(k)}
    accs = {k: v for k, v in cols.items() if "acc" in k.lower()}
    lr = cols.get("lr")
    panels = [("loss", losses), ("accuracy", accs)] + ([("learning rate", {"lr": lr})] if lr else [])
    fig, axes = _figure(4.2 * len(panels), 3.6, len(panels))
    for ax, (label, series) in zip(axes, panels):
        for name, values in series.items():
            points = [(e, v) for e, v in zip(epoch, values) if not math.isnan(v)]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if series and ax.lines:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "training curves")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_bench(records: Iterable[Mapping], path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Two panels against T, one line per method: step time (with the RateBP limit dashed) and
    peak memory. ``records`` are the entries of ``bench.json``."""
    records = list(records)
    methods = list(dict.fromkeys(r["method"] for r in records))
    fig, (ax_t, ax_m) = _figure(10.0, 4.0, 2)
    for i, method in enumerate(methods):
        color = f"C{i}"
        rows = sorted((r for r in records if r["method"] == method), key=lambda r: r["T"])
        t = [(r["T"], r["step_s"]) for r in rows if r.get("step_s") is not None]
        if t:
            ax_t.plot(*zip(*t), marker="o", color=color, label=method)
        lim = [(r["T"], r["limit_s"]) for r in rows if r.get("limit_s") is not None]
        if lim:
            ax_t.plot(*zip(*lim), linestyle="--", color=color, alpha=0.7, label=f"{method} limit")
        m = [(r["T"], r["peak_mem_bytes"] / 2**20) for r in rows if r.get("peak_mem_bytes") is not None]
        if m:
            ax_m.plot(*zip(*m), marker="o", color=color, label=method)
    ax_t.set_ylabel("time per training step (s, median)")
    ax_m.set_ylabel("peak memory of a step (MiB)")
    for ax in (ax_t, ax_m):
        ax.set_xlabel("time steps T")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        if ax.lines:
            ax.legend(fontsize=8)
    if records:
        r0 = records[0]
        fig.suptitle(
            title or f"{r0.get('arch')} batch {r0.get('batch')} on {r0.get('device')} "
            f"({r0.get('threads')} thread(s), torch {r0.get('torch')})"
        )
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


__all__ = ["plot_bench", "plot_firing_rates", "plot_training_curves", "read_numeric_csv"]

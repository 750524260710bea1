"""Figures built from saved records: firing rates, training curves, the training-cost benchmark.

Figures are drawn on ``matplotlib.figure.Figure`` objects and written with the Agg renderer, so
nothing here touches pyplot's global state or the user's chosen backend; matplotlib is imported
only when a figure is drawn.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Optional, Union


def _figure(width: float, height: float, panels: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]  # panels = 0: the caller lays them out
    return fig, axes


def firing_rates_figure(report, title: Optional[str] = None):
    """The figure of :func:`plot_firing_rates`: one bar per LIF layer's mean firing rate, the
    network average as a dashed line; dead and saturated layers orange and labelled so.

    ``report`` is a :class:`~esdsnn.analysis.firing.FiringReport` or its ``to_dict()``.
    """
    d = report if isinstance(report, Mapping) else report.to_dict()
    names = [layer["name"] for layer in d["layers"]]
    rates = [layer["rate"] for layer in d["layers"]]
    flags = [layer.get("flag") for layer in d["layers"]]  # older firing_rates.json: no flags
    fig, (ax,) = _figure(max(6.0, 0.35 * len(names) + 2.0), 4.0)
    ax.set_label("firing rates")
    ax.bar(range(len(names)), rates, color=["tab:orange" if flag else "tab:blue" for flag in flags])
    for x, (rate, flag) in enumerate(zip(rates, flags)):  # a dead bar has no height to see: say it in words
        if flag:
            ax.annotate(
                flag,
                (x, rate),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                color="tab:orange",
                rotation=90,
            )
    ax.axhline(d["avg_rate"], color="tab:red", linestyle="--", label=f"average {d['avg_rate']:.4f} (by neurons)")
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    ax.set_ylim(0, max([*rates, d["avg_rate"], 1e-3]) * (1.3 if any(flags) else 1.15))
    ax.set_title(title or f"firing rate per LIF layer (T = {d['T']}, {d['samples']} samples)")
    ax.legend(loc="upper right")
    return fig


def plot_firing_rates(report, path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Write :func:`firing_rates_figure` of ``report`` to ``path`` as PNG."""
    return save_figure(firing_rates_figure(report, title), path)


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


# Training curves: what each panel shows, by metrics.csv column. Accuracy columns hold fractions
# (0..1); the figure shows them in percent, for people. The loss panel compares one quantity on
# every split, the main head's cross-entropy: ``ce_main`` (training pass), ``val_loss`` and
# ``test_loss`` (spike pass); the training objective (``loss``: with ESD, the CE of every head
# plus the KD terms) has its own panel with its terms, so train and validation never cross only
# because they measure different things.
ACCURACY_SPLITS = (("train_acc", "train"), ("val_acc", "validation"), ("test_acc", "test"))
LOSS_SPLITS = (("ce_main", "train"), ("val_loss", "validation"), ("test_loss", "test"))
OBJECTIVE = ("loss", "train_loss")  # the total minimised (train_loss: metrics.csv of older versions)
_SPLIT_STYLE = {
    "train": dict(color="C0", linestyle="-"),
    "validation": dict(color="C1", linestyle="--"),
    "test": dict(color="C2", linestyle=":"),
}
_SPLIT_MARKER = {"train": "o", "validation": "^", "test": "s"}


def _is_loss_part(name: str) -> bool:
    """A term of the training objective (``ce_main``, ``ce_branches``, ``kd``...), not a total."""
    n = name.lower()
    if n in OBJECTIVE or n in ("val_loss", "test_loss"):
        return False
    return "loss" in n or n.startswith(("ce", "kd", "samd", "nld"))


def _head_label(name: str) -> str:
    rest = name[len("acc_") :]
    if rest == "main":
        return "main head"
    return "head " + rest[len("head") :] if rest.startswith("head") else rest


def _present(epoch: Sequence[float], values: Sequence[float], scale: float = 1.0) -> list[tuple[float, float]]:
    return [(e, v * scale) for e, v in zip(epoch, values) if not math.isnan(v)]


def _draw(ax, epoch: Sequence[float], values: Sequence[float], label: str, scale: float = 1.0, **style) -> None:
    """One labelled line over the epochs that have a value. A column with empty cells (e.g. a test
    pass only every few epochs, or only at the end) gets markers so a single point still shows."""
    points = _present(epoch, values, scale)
    if not points:
        return
    xs, ys = zip(*points)
    marker = style.pop("marker", "o")
    if len(points) == len(values) and len(points) >= 30:
        marker = None  # a long unbroken line needs no markers
    ax.plot(xs, ys, marker=marker, markersize=4 if len(points) == len(values) else 7, label=label, **style)


def _finish_axes(ax, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)


def training_curves_figure(metrics: Union[str, Path, Mapping[str, Sequence[float]]], title: Optional[str] = None):
    """The figure of :func:`plot_training_curves` (a ``matplotlib.figure.Figure``), or ``None``
    when there is nothing to plot.

    Panels, each only when its columns have values: **accuracy (%)** with train (``train_acc``),
    validation (``val_acc``) and test (``test_acc``) as distinct lines; **main-head cross-entropy**
    with train (``ce_main``), validation (``val_loss``) and test (``test_loss``) — the same quantity
    on each split; **per-head training accuracy (%)** (``acc_main``, ``acc_head<k>``) when the
    method has heads besides the main one (``acc_main`` alone is ``train_acc`` again, so it is not
    drawn); **training objective**: the total minimised (``loss``) with its unweighted terms
    (``ce_main``, ``ce_branches``, ``kd``...), when it is more than the main head's CE;
    **learning rate**. A file without ``ce_main`` (older versions) draws its total as the train
    line only when it has no other terms, i.e. when the total is the main head's CE.
    """
    cols = (
        read_numeric_csv(metrics)
        if isinstance(metrics, (str, Path))
        else {k: list(map(float, v)) for k, v in metrics.items()}
    )
    if not cols or not any(len(v) for v in cols.values()):
        return None
    n = max(len(v) for v in cols.values())
    epoch = cols.pop("epoch", [float(i + 1) for i in range(n)])
    total = next((c for c in OBJECTIVE if c in cols), None)
    terms = [c for c in cols if _is_loss_part(c)]
    accuracy = [(cols[c], label) for c, label in ACCURACY_SPLITS if c in cols]
    loss = [(cols[c], label) for c, label in LOSS_SPLITS if c in cols]
    if "ce_main" not in cols and total is not None and not terms:  # the total is the main head's CE
        loss.insert(0, (cols[total], "train"))
    heads = [(cols[c], _head_label(c)) for c in cols if c.startswith("acc_")]
    if len(heads) < 2:
        heads = []
    objective = []
    if terms != ["ce_main"] and (terms or total is None):  # more than the main head's CE
        objective = ([(cols[total], "total (minimised)")] if total else []) + [(cols[c], c) for c in terms]
    lr = [(cols["lr"], "lr")] if "lr" in cols else []
    panels = [
        (name, series, ylabel, scale)
        for name, series, ylabel, scale in (
            ("accuracy", accuracy, "accuracy (%)", 100.0),
            ("loss", loss, "main-head cross-entropy", 1.0),
            ("heads", heads, "training accuracy per head (%)", 100.0),
            ("objective", objective, "training objective and its terms (unweighted)", 1.0),
            ("lr", lr, "learning rate", 1.0),
        )
        if series
    ]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, _ = _figure(4.2 * ncols, 3.4 * nrows, 0)
    for i, (name, series, ylabel, scale) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_label(name)
        for values, label in series:
            style = (
                dict(_SPLIT_STYLE.get(label, {}), marker=_SPLIT_MARKER.get(label, "o"))
                if name in ("accuracy", "loss")
                else {}
            )
            _draw(ax, epoch, values, label, scale, **style)
        if scale == 100.0:
            ax.set_ylim(0, 100)
        _finish_axes(ax, ylabel)
    fig.suptitle(title or "training curves")
    return fig


def save_figure(fig, path: Union[str, Path], dpi: int = 120) -> Path:
    """Write ``fig`` as PNG atomically (readers never see half an image)."""
    from esdsnn.atomic import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    return path


def plot_training_curves(
    metrics: Union[str, Path, Mapping[str, Sequence[float]]], path: Union[str, Path], title: Optional[str] = None
) -> Optional[Path]:
    """Write :func:`training_curves_figure` of ``metrics.csv`` (or its columns) to ``path``.
    Returns ``None`` (and writes nothing) when there is nothing to plot."""
    fig = training_curves_figure(metrics, title)
    return None if fig is None else save_figure(fig, path)


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
            title
            or f"{r0.get('arch')} batch {r0.get('batch')} on {r0.get('device')} "
            f"({r0.get('threads')} thread(s), torch {r0.get('torch')})"
        )
    return save_figure(fig, path)


__all__ = [
    "firing_rates_figure",
    "plot_bench",
    "plot_firing_rates",
    "plot_training_curves",
    "read_numeric_csv",
    "save_figure",
    "training_curves_figure",
]

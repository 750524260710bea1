"""The report of a run directory: firing rates, operations, energy estimate, training curves.

:func:`write_report` writes into the run directory

- ``report.md``: the firing-rate table (rows = LIF layers, columns = time steps + mean), the
  network average, the MAC/SOP table and the energy estimate (labelled as an estimate);
- ``firing_rates.json``: everything measured (:meth:`FiringReport.to_dict`);
- ``firing_rates.png``: mean firing rate per layer;
- ``training_curves.png``: loss and accuracy against epoch from ``metrics.csv`` (when present).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
from torch import nn

from ..train.logging import write_text_atomic
from .firing import FiringReport, measure_firing
from .plots import plot_firing_rates, plot_training_curves

REPORT_FILE = "report.md"
FIRING_JSON = "firing_rates.json"
FIRING_PNG = "firing_rates.png"
CURVES_PNG = "training_curves.png"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"

_SUMMARY_FIELDS = ("method", "arch", "dataset", "T", "epochs", "test_acc", "wall_s")


def render_report(firing: FiringReport, *, title: str, summary: Optional[dict] = None, curves: bool = False) -> str:
    """The Markdown text of ``report.md``."""
    lines = [f"# Report: {title}", ""]
    if summary:
        known = [(k, summary[k]) for k in _SUMMARY_FIELDS if k in summary]
        if known:
            lines += ["| " + " | ".join(k for k, _ in known) + " |", "|" + "---|" * len(known)]
            lines += ["| " + " | ".join(_cell(v) for _, v in known) + " |", ""]
    lines += [
        f"## Firing rates (spike pass on the test data, T = {firing.T})",
        "",
        "Firing rate = spikes / (neurons × samples) per step; *mean* = spikes / (neurons × T). The last "
        "row is the network average, weighted by neuron count.",
        "",
        firing.markdown(),
        "",
        "![firing rate per layer](" + FIRING_PNG + ")",
        "",
        "## Synaptic operations and energy (estimate)",
        "",
        "Per sample. A layer with spike (binary) input performs SOPs = input firing rate × T × MACs of a "
        "step; a layer with real-valued input (the first layer; a layer after average pooling) is "
        "charged MACs, once when its input is the same at every step (direct encoding), else T times.",
        "",
        firing.ops_markdown(),
        "",
        *firing.summary_lines(),
        "",
        f"The energy figure is an **estimate** from operation counts, E = {firing.e_mac_pj} pJ × MACs + "
        f"{firing.e_ac_pj} pJ × SOPs (45 nm CMOS), not a measurement on hardware.",
        "",
    ]
    if curves:
        lines += ["## Training curves", "", "![training curves](" + CURVES_PNG + ")", ""]
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(
    run_dir: Union[str, Path],
    model: nn.Module,
    test_source: Iterable,
    T: int,
    *,
    device: torch.device | str | None = None,
    max_batches: Optional[int] = None,
) -> dict:
    """Measure ``model`` on ``test_source`` at ``T`` steps and write the report files into ``run_dir``.

    Returns ``{"avg_firing_rate": ..., "energy_mj_per_sample": ...}`` for ``summary.json``.
    ``max_batches`` limits the measurement to the first batches of the test data.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    firing = measure_firing(model, test_source, T, device=device, max_batches=max_batches)
    write_text_atomic(run_dir / FIRING_JSON, json.dumps(firing.to_dict(), indent=2) + "\n")
    plot_firing_rates(firing, run_dir / FIRING_PNG)
    curves = False
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        curves = plot_training_curves(metrics, run_dir / CURVES_PNG) is not None
    summary = None
    if (run_dir / SUMMARY_FILE).is_file():
        try:
            summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            summary = None
    title = run_dir.resolve().name
    write_text_atomic(run_dir / REPORT_FILE, render_report(firing, title=title, summary=summary, curves=curves))
    return {"avg_firing_rate": firing.avg_rate, "energy_mj_per_sample": firing.energy_mj_per_sample}


__all__ = ["render_report", "write_report"]


def report_run(run_dir: Union[str, os.PathLike], *, checkpoint: str = "last", device: Optional[str] = None,
               threads: Optional[int] = None) -> dict:
    """Rebuild a saved run's model and test data, write its report, merge the figures into summary.json."""
    from ..errors import ConfigError
    from ..train import logging as runlog
    from ..train.loop import load_run

    run = load_run(run_dir, checkpoint=checkpoint, device=device, threads=threads)
    if run.config.method == "ann":
        raise ConfigError("firing rates and energy need a spiking model; this run trained the ANN twin (--method ann)")
    folder = runlog.existing_run_dir(run_dir)
    extra = write_report(folder, run.model, run.bundle.test, run.steps, device=run.device)
    summary_path = folder / runlog.SUMMARY_FILE
    if summary_path.is_file():
        summary = {**json.loads(summary_path.read_text()), **extra}
        runlog.write_json(summary_path, summary)
    return extra

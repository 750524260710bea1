"""The report of a run directory: firing rates, operations, energy estimate, training curves.

:func:`write_report` writes into the run directory

- ``report.md``: the firing-rate table (rows = LIF layers, columns = time steps + mean), the
  network average, the dead and saturated layers with what to try (:func:`~.firing.firing_flag`),
  the MAC/SOP table and the energy estimate (labelled as an estimate); accuracy in percent;
- ``firing_rates.json``: everything measured (:meth:`FiringReport.to_dict`);
- ``firing_rates.png``: mean firing rate per layer;
- ``training_curves.png``: loss and accuracy against epoch from ``metrics.csv`` (when present).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..atomic import write_text_atomic
from ..errors import ConfigError, brief
from ..runs import files as runfiles
from ..runs.checkpoint import describe
from ..runs.files import CURVES_PNG, FIRING_JSON, FIRING_PNG, METRICS_FILE, REPORT_FILE, SUMMARY_FILE
from ..runs.load import TrainedModel, load_run
from .firing import DEAD_RATE, SATURATED_RATE, FiringReport, measure_firing
from .plots import plot_firing_rates, plot_training_curves

_SUMMARY_FIELDS = ("method", "arch", "dataset", "T", "epochs", "test_acc", "wall_s")
# summary.json holds accuracy as a fraction; report.md shows it to people in percent, labelled.
_SUMMARY_HEADERS = {"test_acc": "test accuracy (%)", "wall_s": "wall time (s)"}


def render_report(firing: FiringReport, *, title: str, summary: Optional[dict] = None, curves: bool = False) -> str:
    """The Markdown text of ``report.md``."""
    lines = [f"# Report: {title}", ""]
    if summary:
        known = [(k, summary[k]) for k in _SUMMARY_FIELDS if k in summary]
        if known:
            lines += ["| " + " | ".join(_SUMMARY_HEADERS.get(k, k) for k, _ in known) + " |", "|" + "---|" * len(known)]
            lines += ["| " + " | ".join(_cell(v, percent=k == "test_acc") for k, v in known) + " |", ""]
        lines += _selection_lines(summary)
    lines += [
        f"## Firing rates (spike pass on the test data, T = {firing.T})",
        "",
        "Firing rate = spikes / (neurons × samples) per step; *mean* = spikes / (neurons × T). The last "
        "row is the network average, weighted by neuron count.",
        "",
        firing.markdown(),
        "",
        *_flag_section(firing),
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


def _selection_lines(summary: dict) -> list[str]:
    """How the best epoch was chosen, in plain words (``selected_on`` in summary.json)."""
    on, epoch, best = summary.get("selected_on"), summary.get("best_epoch"), summary.get("best_test_acc")
    if on is None or epoch is None:
        return []
    test = f"; its test accuracy is {best * 100:.2f} %" if isinstance(best, (int, float)) else ""
    if on == "val":
        val = summary.get("best_val_acc")
        val_text = f" ({val * 100:.2f} % validation accuracy)" if isinstance(val, (int, float)) else ""
        return [
            f"selected_on: val — the best epoch, {epoch}, was selected on the validation split{val_text}{test}. "
            f"The test set was measured only after the last epoch, for the final and the best weights.",
            "",
        ]
    return [
        f"selected_on: test — the best epoch, {epoch}, was selected on the test set itself, as the paper's "
        f"recipes do{test}; that figure is not an unbiased estimate. The test accuracy in the table is "
        f"the final epoch's.",
        "",
    ]


def _flag_section(firing: FiringReport) -> list[str]:
    """Dead and saturated layers, one line each with what to try, or one line saying there are none."""
    rule = f"dead: mean rate < {DEAD_RATE:g} spikes / neuron / step; saturated: mean rate ≥ {SATURATED_RATE:g}"
    flagged = firing.flag_lines()
    if not flagged:
        return [f"No dead or saturated layer ({rule}).", ""]
    return [f"**Layers to check** ({rule}):", "", *flagged, ""]


def _cell(v, percent: bool = False) -> str:
    if percent and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v * 100:.2f}"
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
    title: Optional[str] = None,
) -> dict:
    """Measure ``model`` on ``test_source`` at ``T`` steps and write the report files into ``run_dir``.

    Returns ``{"avg_firing_rate": ..., "energy_mj_per_sample": ...}`` for ``summary.json``.
    ``max_batches`` limits the measurement to the first batches of the test data.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    firing = measure_firing(model, test_source, T, device=device, max_batches=max_batches)
    runfiles.write_json(run_dir / FIRING_JSON, firing.to_dict())
    plot_firing_rates(firing, run_dir / FIRING_PNG)
    curves = False
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        curves = plot_training_curves(metrics, run_dir / CURVES_PNG) is not None
    summary = runfiles.read_json(run_dir / SUMMARY_FILE)
    title = title or run_dir.resolve().name
    write_text_atomic(run_dir / REPORT_FILE, render_report(firing, title=title, summary=summary, curves=curves))
    return {"avg_firing_rate": firing.avg_rate, "energy_mj_per_sample": firing.energy_mj_per_sample}


def report_after_training(trained: TrainedModel, echo: Callable[[str], None]) -> Optional[dict]:
    """The after-training step of ``esdsnn train``: the report of the model just trained (its
    figures go into summary.json). A non-spiking model (the ANN twin) gets none; a report that
    fails costs a warning naming the command that retries it, never the run."""
    if not trained.spec.spiking:
        return None
    try:
        extra = write_report(trained.run_dir, trained.model, trained.test, trained.steps, device=trained.device)
    except Exception as exc:
        echo(
            f"warning: the report could not be written ({brief(exc, 300)}); run `esdsnn report --run {trained.run_dir}`"
        )
        return None
    echo(
        f"average firing rate {extra['avg_firing_rate']:.4f}; energy estimate {extra['energy_mj_per_sample']:.4g} "
        f"mJ/sample; report in {trained.run_dir / REPORT_FILE}"
    )
    flagged = flagged_layers(trained.run_dir)
    if flagged:
        echo(f"warning: {flagged}; see {trained.run_dir / REPORT_FILE}")
    return extra


def flagged_layers(run_dir: Union[str, Path]) -> str:
    """``"dead layer(s) a, b; saturated layer(s) c"`` from a run's ``firing_rates.json``
    (empty when none is flagged or the file is missing)."""
    data = runfiles.read_json(Path(run_dir) / FIRING_JSON) or {}
    parts = [
        f"{kind} layer(s) {', '.join(names)}"
        for kind, names in (("dead", data.get("dead_layers") or []), ("saturated", data.get("saturated_layers") or []))
        if names
    ]
    return "; ".join(parts)


def report_run(
    run_dir: Union[str, os.PathLike],
    *,
    checkpoint: str = "last",
    device: Optional[str] = None,
    threads: Optional[int] = None,
) -> dict:
    """Rebuild a saved run's model and test data, write its report, merge the figures into
    summary.json. A run that is still training is reported from its latest checkpoint (the
    report's title says which); its summary.json is left to the training process, its one writer."""
    run = load_run(run_dir, checkpoint=checkpoint, device=device, threads=threads)
    if not run.spec.spiking:
        raise ConfigError(
            f"firing rates and energy need a spiking model; this run trained with --method "
            f"{run.config.method} ({run.spec.description})"
        )
    title = None
    if run.still_training:
        title = f"{run.run_dir.resolve().name} ({run.checkpoint.name} from {describe(run.ckpt)}; the run was still training)"
    extra = write_report(run.run_dir, run.model, run.test, run.steps, device=run.device, title=title)
    summary = runfiles.read_json(run.run_dir / SUMMARY_FILE)
    if summary is not None and not run.still_training:
        runfiles.write_json(run.run_dir / SUMMARY_FILE, {**summary, **extra})
    return extra


__all__ = ["flagged_layers", "render_report", "report_after_training", "report_run", "write_report"]

"""Measurements of trained models and of training cost.

- :func:`measure_firing`: firing rates per layer and step, MACs/SOPs, the energy estimate.
- :func:`write_report`: ``report.md``, ``firing_rates.json`` and figures in a run directory.
- :func:`run_bench`: time and peak memory of a training step against T, per method.
- :mod:`.comparison`: the tables of a comparison of methods (trained by :mod:`esdsnn.compare`).
"""

from __future__ import annotations

from .firing import FiringReport, LayerFiring, LayerOps, measure_firing

_LAZY = {
    "run_bench": ".bench",
    "bench_markdown": ".bench",
    "write_bench_files": ".bench",
    "write_report": ".report",
    "report_run": ".report",
    "plot_bench": ".plots",
    "plot_firing_rates": ".plots",
    "plot_training_curves": ".plots",
}


def __getattr__(name: str):
    # bench runs as ``python -m esdsnn.analysis.bench``: importing it here eagerly would make runpy
    # warn; report/plots pull in matplotlib only when used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FiringReport", "LayerFiring", "LayerOps", "measure_firing", *_LAZY]

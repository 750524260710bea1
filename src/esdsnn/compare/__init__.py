"""Comparing methods: every method × seed trained as a normal run (reused, resumed or retrained),
then the tables of :mod:`esdsnn.analysis.comparison`."""

from .runner import DEFAULT_METHODS, DEFAULT_SEEDS, CompareResult, base_config, parse_methods, plan_runs, run_comparison

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_SEEDS",
    "CompareResult",
    "base_config",
    "parse_methods",
    "plan_runs",
    "run_comparison",
]

"""Runs on disk, below training and analysis: file names and atomic writes
(:mod:`.files`, :mod:`.checkpoint`), rebuilding what a config describes (:mod:`.build`) and
reloading a trained run (:mod:`.load`)."""

from .load import EvalResult, LoadedRun, TrainedModel, evaluate, load_run, test_accuracy

__all__ = ["EvalResult", "LoadedRun", "TrainedModel", "evaluate", "load_run", "test_accuracy"]

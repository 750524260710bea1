"""Shared test set-up: one torch thread (two busy cores make two threads far slower); a separate
SpikingJelly install first on the path where ``ESDSNN_SPIKINGJELLY_PATH`` names one."""

import os
import signal
import sys

import pytest
import torch

torch.set_num_threads(1)

# SpikingJelly 0.0.0.0.14 (site-packages) and 2.0.0 cannot share one site-packages: CI runs the
# interop tests a second time with 2.0.0 installed apart (pip install --target .venv/sj2) and named
# here, before any test imports spikingjelly (as `esdsnn bench --baseline` does for its workers).
if os.environ.get("ESDSNN_SPIKINGJELLY_PATH"):
    sys.path.insert(0, os.environ["ESDSNN_SPIKINGJELLY_PATH"])

# A shell that starts the suite in the background makes SIGINT ignored, and the training
# subprocesses the tests interrupt would inherit that; restore the default so they behave as
# under a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one; `pytest -m cuda` runs them)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def report(record_property):
    """Record a measured figure; the session summary prints them all (also under pytest-xdist)."""
    return lambda line: record_property("figure", line)


def pytest_terminal_summary(terminalreporter):
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for rep in reports
        for key, value in getattr(rep, "user_properties", ())
        if key == "figure" and getattr(rep, "when", "call") == "call"
    ]
    if lines:
        terminalreporter.section("measured figures")
        for line in sorted(set(lines)):
            terminalreporter.write_line(line)

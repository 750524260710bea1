"""Helpers of the CIFAR10-DVS tests: AEDAT 2.0 files written as jAER writes them, a one-event-at-a-time
frame reference, SpikingJelly's own reader run from its source, one-line error checks."""

import ast
import importlib.util
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from esdsnn.data.dvs import CLASSES
from esdsnn.errors import DataError

# The header of a CIFAR10-DVS file as jAER writes it (CRLF line ends), then the events.
HEADER = (
    b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
    b"# Timestamps tick is 1 us\r\n# created Mon Apr 03 10:41:17 CST 2017\r\n"
)


def dvs128_address(x_raw, y_raw, p_raw):
    """A DVS128 address word from its fields, as SPEC §7 describes the recordings:
    polarity in bit 0, x in bits 1-7, y in bits 8-14."""
    x_raw, y_raw, p_raw = (np.asarray(v, dtype=np.uint32) for v in (x_raw, y_raw, p_raw))
    return (y_raw << 8) | (x_raw << 1) | p_raw


def write_raw(path, addresses, t=None):
    """An AEDAT 2.0 file of (address, timestamp) big-endian uint32 pairs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    addresses = np.asarray(addresses, dtype=np.uint32)
    t = np.arange(len(addresses)) * 10 if t is None else t
    words = np.stack([addresses, np.asarray(t, dtype=np.uint32)], axis=1).astype(">u4")
    path.write_bytes(HEADER + words.tobytes())
    return path


def write_aedat(path, x, y, p, t=None):
    """A file whose events decode to image coordinates (x, y) and polarity p: the raw fields
    are ``x_raw = 127 − y``, ``y_raw = 127 − x``, ``p_raw = 1 − p`` (SPEC §7)."""
    x, y, p = (np.asarray(v) for v in (x, y, p))
    return write_raw(path, dvs128_address(127 - y, 127 - x, 1 - p), t)


def random_events(rng, n):
    return rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)


def write_dataset(root, per_class=3, n_events=40, seed=0):
    rng = np.random.default_rng(seed)
    events = {}
    for cls in CLASSES:
        for i in range(per_class):
            rel = f"{cls}/cifar10_{cls}_{i}.aedat"
            events[rel] = random_events(rng, n_events + i)
            write_aedat(root / rel, *events[rel])
    return events


def frames_by_loop(x, y, p, T):
    """The frame definition, one event at a time."""
    n = len(x)
    q = n // T
    out = np.zeros((T, 2, 128, 128), np.int64)
    for i in range(n):
        j = min(i // q, T - 1) if q else T - 1
        out[j, p[i], y[i], x[i]] += 1
    return out


def spikingjelly_functions(module: str, names: set, methods: tuple = ()) -> dict:
    """Functions of SpikingJelly's ``datasets`` package, run from its source: the package imports
    torchvision, which does not import here, so the module's constants (the bit masks) and the named functions
    (and static methods ``(class, name)``) are compiled alone. One shim: NumPy 2 removed the
    binary ``np.fromstring`` that the reader calls; it is ``np.frombuffer`` (same bytes, dtype)."""
    spec = importlib.util.find_spec("spikingjelly")
    if spec is None:
        pytest.skip("spikingjelly is not installed")
    source = Path(spec.origin).parent / "datasets" / module
    with warnings.catch_warnings():  # its docstrings hold LaTeX escapes
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        tree = ast.parse(source.read_text())
    body = [
        n
        for n in tree.body
        if (isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant))
        or (isinstance(n, ast.FunctionDef) and n.name in names)
    ]
    for cls_name, name in methods:
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
        method = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name)
        method.decorator_list = []
        body.append(method)
    numpy_shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    numpy_shim.fromstring = np.frombuffer
    namespace = {"np": numpy_shim, "Dict": dict}
    exec(compile(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[])), str(source), "exec"), namespace)
    return namespace


def spikingjelly_reader():
    """SpikingJelly's ``CIFAR10DVS.load_origin_data``, the reader behind the official ESD code."""
    names = {"read_bits", "skip_header", "load_raw_events", "parse_raw_address", "load_events"}
    return spikingjelly_functions("cifar10_dvs.py", names, (("CIFAR10DVS", "load_origin_data"),))["load_origin_data"]


def check_one_line_error(fn, *parts):
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for part in parts:
        assert str(part) in msg, msg
    return msg

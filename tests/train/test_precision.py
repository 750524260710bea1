"""One precision setting (--precision 32 | bf16-mixed | 16-mixed): float32 by default on every
device, the old --amp/--spike-dtype flags read with a notice, and every record says what ran."""

import json

import pytest
import torch

from esdsnn.cli import main
from esdsnn.config import TrainConfig, load_config
from esdsnn.errors import ConfigError
from esdsnn.runtime import precision
from esdsnn.runtime.precision import precision_native, spike_dtype_for, use_precision
from esdsnn.train import loop
from esdsnn.train import session as session_module


class _StopAfter:
    def __init__(self, n):
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0


def _config(tmp_path, **changes):
    values = dict(
        method="esd", T=1, epochs=1, batch_size=64, progress=False, threads=1, report=False, out=str(tmp_path / "run")
    )
    values.update(changes)
    return TrainConfig.from_dict(values)


def test_the_default_is_float32_and_every_record_says_so(tmp_path):
    run = loop.train(_config(tmp_path), stop=_StopAfter(0))
    summary = json.loads((run.run_dir / "summary.json").read_text())
    env = json.loads((run.run_dir / "env.json").read_text())
    config = (run.run_dir / "config.yaml").read_text()
    assert summary["precision"] == env["precision"] == "32" and "precision: '32'" in config
    assert summary["precision_native"] is env["precision_native"] is True
    assert "amp" not in summary and "spike_dtype" not in env


def test_precision_sets_the_spike_stage_type():
    for name, expected in (("32", None), ("bf16-mixed", torch.bfloat16), ("16-mixed", None)):
        with use_precision(name):
            assert spike_dtype_for("cpu") == expected, name
    assert spike_dtype_for("cpu") is None  # outside: float32


def test_native_support_per_precision(monkeypatch):
    for native in (False, True):
        monkeypatch.setattr(precision, "native_bf16", lambda device, native=native: native)
        assert precision_native("32", "cpu") is True
        assert precision_native("bf16-mixed", "cpu") is native
        assert precision_native("16-mixed", "cpu") is False


@pytest.mark.parametrize(
    "old, value, expected",
    [
        ("amp", "bf16", "bf16-mixed"),
        ("amp", "fp16", "16-mixed"),
        ("amp", "none", "32"),
        ("spike_dtype", "bf16", "bf16-mixed"),
        ("spike_dtype", "float32", "32"),
        ("spike_dtype", "auto", "32"),
    ],
)
def test_the_old_flags_are_read_with_a_notice(tmp_path, capsys, old, value, expected):
    path = tmp_path / "old.yaml"
    path.write_text(f"{old}: {value}\n")
    assert load_config(path).run.precision == expected
    err = capsys.readouterr().err
    assert f"'{old}'" in err and "'precision'" in err and len(err.strip().splitlines()) == 1


def test_a_yaml_number_32_is_the_choice_and_a_contradiction_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("precision: 32\n")
    assert load_config(path).run.precision == "32"
    with pytest.raises(ConfigError, match="sets both amp and precision"):
        load_config(None, {"amp": "fp16", "precision": "bf16-mixed"})
    with pytest.raises(ConfigError, match="precision must be one of 32, bf16-mixed, 16-mixed"):
        load_config(None, {"precision": "64"})


def test_the_command_line_reads_the_old_flag(tmp_path, capsys):
    code = main(
        ["train", "--amp", "fp16", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "read as precision 16-mixed" in err
    assert "--precision 16-mixed needs a CUDA device" in err.splitlines()[-1]


def test_bf16_where_it_is_emulated_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "precision_native", lambda p, device: p == "32")
    warnings = []
    loop.train(_config(tmp_path, precision="bf16-mixed"), stop=_StopAfter(0), warn=warnings.append)
    assert any("emulated" in w and "--precision bf16-mixed" in w for w in warnings)


def test_precision_32_switches_tensorfloat32_off_inside_and_restores_it():
    backends = torch.backends
    before = (backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
    backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = True
    try:
        with use_precision("32"):
            assert not backends.cudnn.allow_tf32 and not backends.cuda.matmul.allow_tf32
        assert backends.cudnn.allow_tf32 and backends.cuda.matmul.allow_tf32
    finally:
        backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = before

"""Mixed precision, channels-last, torch.compile, the NaN guard, run-directory checks, logs."""

import json
import os

import pytest
import torch

import esdsnn
from esdsnn.cli import main
from esdsnn.config import TrainConfig
from esdsnn.errors import ConfigError, TrainingDiverged
from esdsnn.neurons.lif import EAGER_KERNELS, LIF, compile_neurons_, compiled_kernels
from esdsnn.passes.ratebp import run_spike_stage
from esdsnn.runs import evaluate
from esdsnn.runs import files as runfiles
from esdsnn.runs.checkpoint import LAST, load_checkpoint
from esdsnn.runs.files import read_metrics
from esdsnn.train import logging as trainlog
from esdsnn.train import loop
from esdsnn.train.state import all_finite

needs_cuda = pytest.mark.cuda


class _StopAfter:
    def __init__(self, n):
        self.n = n

    def is_set(self):
        self.n -= 1
        return self.n < 0


def _config(tmp_path, name="run", **changes):
    values = dict(
        method="esd", T=2, epochs=1, batch_size=64, progress=False, threads=1, report=False, out=str(tmp_path / name)
    )
    values.update(changes)
    return TrainConfig.from_dict(values)


def _first_step_loss(run_dir):
    ckpt = load_checkpoint(run_dir / LAST)
    assert ckpt["step"] == 1
    progress = ckpt["progress"]
    return progress["part_sums"]["loss"] / progress["seen"]


def _batch():
    from esdsnn.data import load_dataset

    return next(iter(load_dataset("digits", batch_size=32, seed=60).train))


# ---- mixed precision --------------------------------------------------------------------------
def test_bf16_autocast_keeps_membranes_and_records_in_float32():
    x, _y = _batch()
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, trace = run_spike_stage(model, x, 4)
    assert trace.neurons and all(
        r.rate.dtype == torch.float32 and r.eligibility.dtype == torch.float32 for r in trace.neurons.values()
    )
    assert all(r.mean.dtype == torch.float32 and r.var.dtype == torch.float32 for r in trace.norms.values())
    # BPTT: the membrane of the LIF step is float32 even for bfloat16 input currents
    lif = LIF()
    from esdsnn.runtime.context import PassState, use_pass

    current = torch.full((4 * 2, 3), 0.3, dtype=torch.bfloat16, requires_grad=True)
    with use_pass(PassState("bptt", 4)):
        spikes = lif(current)
    assert spikes.dtype == torch.bfloat16
    # 0.3·(1 + 0.2 + 0.04 + ...) crosses 1.0 at no step in exact arithmetic; nor here
    assert spikes.sum() == 0
    spikes.sum().backward()
    assert torch.isfinite(current.grad.float()).all()


def test_bf16_training_steps_on_cpu(tmp_path):
    full = loop.train(_config(tmp_path, "fp32"), stop=_StopAfter(0))
    amp = loop.train(_config(tmp_path, "bf16", precision="bf16-mixed"), stop=_StopAfter(1))
    assert amp.status == "interrupted" and amp.step == 2
    ckpt = load_checkpoint(amp.run_dir / LAST)
    assert all_finite(ckpt["model"].values()) and all_finite(ckpt["extra"].values())
    loss32 = _first_step_loss(full.run_dir)
    progress = ckpt["progress"]
    loss16 = progress["part_sums"]["loss"] / progress["seen"]
    assert abs(loss16 - loss32) < 0.1 * loss32  # two bf16 steps stay near the float32 first step
    assert ckpt["config"]["precision"] == "bf16-mixed" and ckpt["scaler"] == {}


def test_fp16_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: see test_fp16_with_grad_scaler_on_cuda")
    with pytest.raises(ConfigError, match="--precision 16-mixed needs a CUDA device"):
        loop.train(_config(tmp_path, precision="16-mixed", device="cpu"))


@needs_cuda
def test_fp16_with_grad_scaler_on_cuda(tmp_path):
    run = loop.train(_config(tmp_path, precision="16-mixed", device="cuda", channels_last=True), stop=_StopAfter(2))
    ckpt = load_checkpoint(run.run_dir / LAST)
    assert ckpt["scaler"]["scale"] > 0 and all_finite(ckpt["model"].values())


@needs_cuda
def test_bf16_compile_on_cuda(tmp_path):
    run = loop.train(_config(tmp_path, precision="bf16-mixed", device="cuda", compile=True), stop=_StopAfter(1))
    assert all_finite(load_checkpoint(run.run_dir / LAST)["model"].values())


def test_channels_last_matches_the_default_layout(tmp_path):
    # Spiking layers: other conv kernels sum in another order, and the odd neuron sitting at the
    # threshold flips (then its successors do): the loss agrees closely, the weights only roughly.
    plain = loop.train(_config(tmp_path, "plain", method="bptt"), stop=_StopAfter(0))
    last = loop.train(_config(tmp_path, "cl", method="bptt", channels_last=True), stop=_StopAfter(0))
    assert _first_step_loss(plain.run_dir) == pytest.approx(_first_step_loss(last.run_dir), rel=1e-3)
    assert all_finite(load_checkpoint(last.run_dir / LAST)["model"].values())
    # The ReLU twin has no thresholds: there the two layouts train the same step to rounding.
    plain = loop.train(_config(tmp_path, "plain-ann", method="ann"), stop=_StopAfter(0))
    last = loop.train(_config(tmp_path, "cl-ann", method="ann", channels_last=True), stop=_StopAfter(0))
    a, b = load_checkpoint(plain.run_dir / LAST), load_checkpoint(last.run_dir / LAST)
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-5), key


# ---- compilation ------------------------------------------------------------------------------
def test_compile_gives_the_eager_first_step(tmp_path):
    """--compile (the neurons' time loops through torch.compile, on CPU here) trains the same
    first step as eager execution, for a RateBP and a BPTT method."""
    for method in ("esd", "bptt"):
        eager = loop.train(_config(tmp_path, f"eager-{method}", method=method), stop=_StopAfter(0))
        compiled = loop.train(_config(tmp_path, f"compiled-{method}", method=method, compile=True), stop=_StopAfter(0))
        assert _first_step_loss(compiled.run_dir) == pytest.approx(_first_step_loss(eager.run_dir), rel=1e-5)
        a, b = load_checkpoint(eager.run_dir / LAST), load_checkpoint(compiled.run_dir / LAST)
        for key, value in a["model"].items():
            assert torch.allclose(value, b["model"][key], atol=1e-5), key


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_compiled_and_eager_lif_give_identical_spikes(reset):
    """The torch.compile'd time loops give the eager loops' spikes bit for bit (and rates,
    eligibilities and BPTT outputs to float rounding), float and compact spikes alike.

    The decay is passed as LIF.forward passes it (a 0-dim tensor, ``self.decay.detach()``), and
    dynamo's counters prove each compiled kernel was captured and compiled (not run eagerly)."""
    from torch._dynamo.utils import counters

    from esdsnn.neurons import LIFConfig

    torch._dynamo.reset()
    counters.clear()
    p = LIFConfig(reset=reset, detach_reset=False, threshold=0.7)
    decay = LIF(decay=0.4).decay.detach()
    assert decay.dim() == 0 and decay.item() == pytest.approx(0.4)
    x = torch.randn(4, 2, 3, 5, 5) * 1.5 + 0.3
    eager, compiled = EAGER_KERNELS, compiled_kernels()

    def compiled_call(fn, *args, **kwargs):
        """Call a compiled kernel; the first call of each must compile a new frame."""
        frames, captured = counters["frames"]["ok"], counters["stats"]["calls_captured"]
        out = fn(*args, **kwargs)
        assert counters["frames"]["ok"] > frames and counters["stats"]["calls_captured"] > captured, fn
        return out

    for out_dtype in (torch.float32, torch.uint8):
        s_e, r_e, e_e = eager.rate_eligibility(x.clone(), decay, p, out=torch.empty_like(x, dtype=out_dtype))
        s_c, r_c, e_c = compiled_call(
            compiled.rate_eligibility, x.clone(), decay, p, out=torch.empty_like(x, dtype=out_dtype)
        )
        assert s_c.dtype == out_dtype and torch.equal(s_c, s_e)
        assert 0 < s_e.float().mean() < 1  # the loop fires and stays silent: a real comparison
        torch.testing.assert_close(r_c, r_e, rtol=0, atol=0)
        torch.testing.assert_close(e_c, e_e, rtol=1e-6, atol=1e-7)
        spikes = compiled_call(compiled.spikes, x.clone(), decay, p, out=torch.empty_like(x, dtype=out_dtype))
        assert torch.equal(spikes, eager.spikes(x.clone(), decay, p, out=torch.empty_like(x, dtype=out_dtype)))
    assert torch.equal(compiled_call(compiled.multistep, x, decay, p), eager.multistep(x, decay, p))
    assert counters["frames"]["ok"] >= 5  # rate_eligibility and spikes per output dtype, multistep


def test_compile_neurons_only_swaps_kernels():
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n = compile_neurons_(model)
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    assert n == len(lifs) > 0 and all(m.kernels is not EAGER_KERNELS for m in lifs)
    assert model.state_dict().keys() == state.keys()  # checkpoints are unaffected
    assert LIF().kernels is EAGER_KERNELS  # other models keep eager loops


# ---- guards ------------------------------------------------------------------------------------
def test_nan_from_a_huge_lr_stops_and_keeps_a_loadable_checkpoint(tmp_path):
    config = _config(tmp_path, method="bptt", lr=1e6, epochs=2, save_every_steps=1)
    with pytest.raises(TrainingDiverged) as info:
        loop.train(config)
    message = str(info.value)
    assert "training diverged at epoch 1, step" in message and "lower --lr" in message
    assert str(tmp_path / "run" / LAST) in message
    kept = load_checkpoint(tmp_path / "run" / LAST)
    assert all_finite(kept["model"].values()) and all_finite(kept["extra"].values())
    for state in kept["optimizer"]["state"].values():
        assert all_finite(state.values())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"
    assert evaluate(tmp_path / "run").total == 360  # the kept checkpoint evaluates
    resumed = loop.resume_config(tmp_path / "run")  # and resumes (to diverge again, with this lr)
    assert resumed.optim.lr == 1e6


def test_unwritable_run_directory_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["train", "--out", str(blocker / "run"), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("esdsnn: error: cannot create run directory")


def test_full_disk_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(runfiles.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "has 1.0 MiB free but its checkpoints need about" in err
    assert not list((tmp_path / "run").glob("*.pt"))


def test_a_failing_write_is_refused_before_training(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runfiles.os, "fsync", no_space)
    try:
        with pytest.raises(ConfigError, match="cannot write to run directory .*No space left on device"):
            loop.train(_config(tmp_path))
    finally:
        monkeypatch.setattr(runfiles.os, "fsync", real_fsync)
    assert not list((tmp_path / "run").glob("*.pt"))


# ---- logs ----------------------------------------------------------------------------------------
class _FakeWriter:
    def __init__(self):
        self.scalars, self.closed = [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_env_json_and_tensorboard(tmp_path, monkeypatch):
    writers = []

    def fake_open(run_dir, purge_step=None):
        writers.append((_FakeWriter(), purge_step))
        return trainlog.TensorBoardLog(writers[-1][0])

    monkeypatch.setattr(trainlog.TensorBoardLog, "open", staticmethod(fake_open))
    result = loop.train(_config(tmp_path, method="ratebp", epochs=2, batch_size=256))
    writer, purge = writers[0]
    assert writer.closed and purge is None
    tags = {(tag, step) for tag, _, step in writer.scalars}
    assert {("loss/loss", 1), ("loss/loss", 2), ("accuracy/test_acc", 2), ("run/lr", 1)} <= tags
    rows = read_metrics(result.run_dir / "metrics.csv")
    logged = {step: value for tag, value, step in writer.scalars if tag == "accuracy/test_acc"}
    assert logged[2] == pytest.approx(float(rows[1]["test_acc"]), abs=1e-6)

    env = json.loads((result.run_dir / "env.json").read_text())
    for key in ("esdsnn", "git", "torch", "device", "threads", "world_size", "python", "platform"):
        assert key in env, key
    assert env["esdsnn"] == esdsnn.__version__ and env["torch"] == torch.__version__ and env["threads"] == 1
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["esdsnn"] == esdsnn.__version__ and "git" in summary


def test_tensorboard_is_optional(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        result = loop.train(_config(tmp_path, method="ratebp", batch_size=512))
        assert not (result.run_dir / runfiles.TENSORBOARD_DIR).exists()
    else:
        result = loop.train(_config(tmp_path, method="ratebp", batch_size=512))
        assert any((result.run_dir / runfiles.TENSORBOARD_DIR).iterdir())

"""The CUDA path, checked against the CPU (skipped without a GPU; `pytest -m cuda` runs them, as
benchmarks/gpu.sh does on a lent GPU): float32 by default (no TensorFloat-32), RateBP = BPTT at
T = 1, every method steps with finite gradients, bf16-mixed steps, memory flat in T for ESD."""

import copy

import pytest
import torch

import esdsnn
from esdsnn.runtime.precision import autocast_for, use_precision

pytestmark = pytest.mark.cuda


def _pair(method_a, method_b, arch="resnet18", T=1):
    model = esdsnn.create_model(arch, num_classes=10, in_channels=3)
    a = esdsnn.create_method(method_a, model, T=T, loss_scale=1.0)
    b = esdsnn.create_method(method_b, copy.deepcopy(model), T=T, loss_scale=1.0)
    b.load_state_dict(a.state_dict())
    return a.cuda(), b.cuda()


def _max_rel_diff(a, b):
    out = 0.0
    for (_name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        scale = max(pa.grad.abs().max().item(), 1e-12)
        out = max(out, (pa.grad - pb.grad).abs().max().item() / scale)
    return out


@pytest.mark.parametrize("bptt,ratebp", [("bptt", "ratebp"), ("esd-bptt", "esd")])
def test_ratebp_equals_bptt_at_T1_on_cuda_under_the_default_precision(bptt, ratebp):
    a, b = _pair(bptt, ratebp)
    x, y = torch.randn(8, 3, 16, 16, device="cuda") * 2, torch.randint(0, 10, (8,), device="cuda")
    with use_precision("32"):
        la, lb = a(x, y).loss, b(x, y).loss
        la.backward()
        lb.backward()
    torch.testing.assert_close(la, lb, atol=0, rtol=1e-5)
    assert _max_rel_diff(a, b) < 1e-4


def test_the_spike_pass_on_cuda_equals_the_cpu():
    model = esdsnn.create_model("resnet18", num_classes=10, in_channels=3).eval()
    x = torch.randn(8, 3, 32, 32)
    cpu = esdsnn.predict(model, x, T=4)
    with use_precision("32"):
        gpu = esdsnn.predict(copy.deepcopy(model).cuda(), x.cuda(), T=4).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", esdsnn.list_methods())
def test_every_method_steps_on_cuda_with_finite_gradients(method, tmp_path):
    if method == "kd":
        pytest.skip("kd needs a teacher run; its step is the ratebp/bptt step plus the distillation losses")
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    trainer = esdsnn.create_method(method, model, T=2).cuda()
    x, y = torch.randn(16, 1, 8, 8, device="cuda"), torch.randint(0, 10, (16,), device="cuda")
    for precision in ("32", "bf16-mixed"):
        trainer.zero_grad(set_to_none=True)
        with use_precision(precision):
            with autocast_for(precision, "cuda"):
                loss = trainer(x, y).loss
            loss.backward()
        grads = [p.grad for p in trainer.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), (method, precision)


def test_esd_memory_is_flat_in_T_on_cuda():
    peaks = {}
    for T in (2, 8):
        model = esdsnn.create_model("resnet18", num_classes=10, in_channels=3)
        trainer = esdsnn.create_method("esd", model, T=T).cuda()
        x, y = torch.randn(32, 3, 32, 32, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
        trainer(x, y).loss.backward()  # warm-up: cuDNN workspaces, lazy initialisation
        trainer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        trainer(x, y).loss.backward()
        torch.cuda.synchronize()
        peaks[T] = torch.cuda.max_memory_allocated() - base
        del trainer, model, x, y
        torch.cuda.empty_cache()
    assert peaks[8] <= 1.2 * peaks[2], peaks

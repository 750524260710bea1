"""ESD teacher and loss on hand-made logits (SPEC §4)."""

import math

import pytest
import torch
import torch.nn.functional as F

from esdsnn.distill import DistillConfig, build_teacher, distillation_terms, esd_loss

# three heads (two branches, main), three samples, three classes; labels 0, 1, 2
HEADS = [
    torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.0]]),  # correct, correct, wrong
    torch.tensor([[0.0, 1.0, 0.0], [0.0, 4.0, 0.0], [0.0, 2.0, 0.0]]),  # wrong, correct, wrong
    torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 1.0]]),  # correct, wrong, wrong
]
LABELS = torch.tensor([0, 1, 2])


def kl(p, log_q):
    return (p * (p.log() - log_q)).sum(-1)


def test_reliable_teacher_averages_only_correct_heads():
    cfg = DistillConfig(kd_tau=2.0)
    teacher = build_teacher(HEADS, LABELS, cfg)
    assert teacher.has_teacher.tolist() == [True, True, False]
    expected0 = F.softmax((HEADS[0][0] + HEADS[2][0]) / 2 / 2.0, -1)
    expected1 = F.softmax((HEADS[0][1] + HEADS[1][1]) / 2 / 2.0, -1)
    torch.testing.assert_close(teacher.probs[0], expected0)
    torch.testing.assert_close(teacher.probs[1], expected1)


def test_probability_space_teacher():
    cfg = DistillConfig(kd_tau=2.0, teacher_space="probs")
    teacher = build_teacher(HEADS, LABELS, cfg)
    expected0 = (F.softmax(HEADS[0][0] / 2, -1) + F.softmax(HEADS[2][0] / 2, -1)) / 2
    torch.testing.assert_close(teacher.probs[0], expected0)


def test_kd_is_tau_squared_kl_averaged_over_reliable_samples():
    tau = 3.0
    cfg = DistillConfig(kd_tau=tau)
    teacher = build_teacher(HEADS, LABELS, cfg)
    got = distillation_terms(HEADS[1], teacher, cfg)
    log_q = F.log_softmax(HEADS[1] / tau, -1)
    per_sample = kl(teacher.probs, log_q)
    expected = tau**2 * (per_sample[0] + per_sample[1]) / 2  # sample 2 has no reliable head
    torch.testing.assert_close(got, expected)


def test_no_reliable_teacher_gives_exact_zero_not_nan():
    heads = [torch.randn(4, 5, requires_grad=True) for _ in range(3)]
    # for each sample, a label that no head predicts: every head is wrong
    labels = torch.tensor([min(set(range(5)) - {int(h[i].argmax()) for h in heads}) for i in range(4)])
    total, parts = esd_loss(heads, labels, DistillConfig())
    assert parts["kd"].item() == 0.0
    assert parts["teacher_frac"].item() == 0.0
    total.backward()
    assert all(torch.isfinite(h.grad).all() for h in heads)


def test_total_loss_combines_ce_branches_and_kd():
    cfg = DistillConfig(alpha=0.7, beta=0.3, kd_tau=3.0)
    total, parts = esd_loss(HEADS, LABELS, cfg)
    ce = [F.cross_entropy(h, LABELS) for h in HEADS]
    teacher = build_teacher(HEADS, LABELS, cfg)
    kd = sum(distillation_terms(h, teacher, cfg) for h in HEADS)
    torch.testing.assert_close(total, ce[2] + 0.7 * (ce[0] + ce[1]) + 0.3 * kd)
    torch.testing.assert_close(parts["ce_branches"], ce[0] + ce[1])


def test_all_teacher_is_mean_of_every_head():
    cfg = DistillConfig(teacher="all", kd_tau=1.0)
    teacher = build_teacher(HEADS, LABELS, cfg)
    assert teacher.has_teacher.all()
    torch.testing.assert_close(teacher.probs, F.softmax(torch.stack(HEADS).mean(0), -1))


def test_main_teacher_is_the_main_head_and_gives_it_zero_kd():
    cfg = DistillConfig(teacher="main", kd_tau=2.0)
    teacher = build_teacher(HEADS, LABELS, cfg)
    torch.testing.assert_close(teacher.probs, F.softmax(HEADS[2] / 2.0, -1))
    assert distillation_terms(HEADS[2], teacher, cfg).abs().item() < 1e-6


def test_unreliable_uniform_and_entropy_terms():
    tau, eta = 3.0, 0.5
    base = distillation_terms(
        HEADS[0], build_teacher(HEADS, LABELS, DistillConfig(kd_tau=tau)), DistillConfig(kd_tau=tau)
    )
    log_q = F.log_softmax(HEADS[0][2] / tau, -1)  # sample 2 is the only unreliable one
    uniform = torch.full((3,), 1 / 3)
    cfg_u = DistillConfig(kd_tau=tau, unreliable="uniform", eta=eta)
    got_u = distillation_terms(HEADS[0], build_teacher(HEADS, LABELS, cfg_u), cfg_u)
    torch.testing.assert_close(got_u, base + eta * kl(uniform, log_q))
    cfg_e = DistillConfig(kd_tau=tau, unreliable="entropy", eta=eta)
    got_e = distillation_terms(HEADS[0], build_teacher(HEADS, LABELS, cfg_e), cfg_e)
    neg_entropy = (log_q.exp() * log_q).sum()
    torch.testing.assert_close(got_e, base + eta * neg_entropy)
    cfg_d = DistillConfig(kd_tau=tau, unreliable="drop", eta=eta)
    torch.testing.assert_close(distillation_terms(HEADS[0], build_teacher(HEADS, LABELS, cfg_d), cfg_d), base)


def test_teacher_carries_no_gradient():
    heads = [h.clone().requires_grad_() for h in HEADS]
    teacher = build_teacher(heads, LABELS, DistillConfig())
    assert not teacher.probs.requires_grad


@pytest.mark.parametrize(
    "bad",
    [dict(teacher="best"), dict(teacher_space="energy"), dict(unreliable="keep"), dict(kd_tau=0.0), dict(beta=-1.0)],
)
def test_bad_config_rejected(bad):
    with pytest.raises(ValueError):
        DistillConfig(**bad)


def test_kd_matches_kl_div_reference():
    cfg = DistillConfig(teacher="all", kd_tau=4.0)
    teacher = build_teacher(HEADS, LABELS, cfg)
    got = distillation_terms(HEADS[0], teacher, cfg)
    expected = F.kl_div(F.log_softmax(HEADS[0] / 4.0, -1), teacher.probs, reduction="batchmean") * 16.0
    assert math.isclose(got.item(), expected.item(), rel_tol=1e-5)


@pytest.mark.parametrize("unreliable", ["drop", "entropy"])
def test_global_counts_make_the_mean_of_slice_losses_the_whole_batch_loss(unreliable):
    """Data parallelism in one process: two equal slices with 2 and 1 reliable samples. With
    per-slice counts the average of the slice losses (what DDP's gradient average sees) is not the
    loss of the whole batch; with ``reduce_counts`` = global count / 2 it is, gradients included."""
    cfg = DistillConfig(kd_tau=2.0, unreliable=unreliable, eta=0.5)
    labels = torch.tensor([0, 1, 2, 0])
    heads = [torch.cat([h, h[:1]]).requires_grad_() for h in HEADS]  # sample 3 = sample 0: reliable
    slices = [slice(0, 2), slice(2, 4)]
    whole = esd_loss(heads, labels, cfg)[0]

    def slice_loss(part, reduce=None):
        return esd_loss([h[part] for h in heads], labels[part], cfg, reduce)[0]

    counts = [build_teacher([h[s] for h in heads], labels[s], cfg).counts for s in slices]
    assert [c[0].item() for c in counts] == [2, 1]
    share = (counts[0] + counts[1]) / 2
    local = sum(slice_loss(s) for s in slices) / 2
    shared = sum(slice_loss(s, lambda c: share) for s in slices) / 2
    assert not torch.allclose(local, whole, rtol=1e-3)
    torch.testing.assert_close(shared, whole)
    for g, g_whole in zip(torch.autograd.grad(shared, heads), torch.autograd.grad(whole, heads)):
        torch.testing.assert_close(g, g_whole)

"""SAMD and NLD on hand-made tensors; the kd teacher stays frozen (SPEC §5)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import esdsnn
from esdsnn.distill.kd import (
    class_activation_map,
    classifier_weight,
    minmax_per_sample,
    nld_loss,
    samd_loss,
    student_attention,
)


def test_minmax_is_per_sample():
    maps = torch.tensor([[[0.0, 2.0], [4.0, 1.0]], [[5.0, 5.0], [6.0, 7.0]]])
    out = minmax_per_sample(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    torch.testing.assert_close(out[1], torch.tensor([[0.0, 0.0], [0.5, 1.0]]))


def test_student_attention_sums_channels_and_time():
    rates = torch.tensor(
        [
            [[[0.5, 0.0]], [[0.25, 1.0]]],  # B=2, C=2, 1×2
            [[[0.0, 0.75]], [[0.5, 0.5]]],
        ]
    )
    # per sample and position: (sum over channels of the rates) × T spikes
    expected = torch.tensor([[[0.75 * 4, 1.0 * 4]], [[0.5 * 4, 1.25 * 4]]])
    torch.testing.assert_close(student_attention(rates, T=4), expected)


def test_cam_uses_predicted_class_row_and_relu():
    features = torch.tensor(
        [
            [[[1.0, -1.0]], [[2.0, 0.0]]],  # [2, 2, 1, 2]: sample 0
            [[[0.5, 2.0]], [[1.0, -1.0]]],
        ]
    )  # sample 1
    weight = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    # each sample uses its own class's row: sample 0 class 1: F0 − F1 = [-1, -1] → [0, 0];
    # sample 1 class 0: F0 + F1 = [1.5, 1] → [1.5, 1]
    cam = class_activation_map(features, weight, torch.tensor([1, 0]))
    torch.testing.assert_close(cam, torch.tensor([[[0.0, 0.0]], [[1.5, 1.0]]]))
    # swapped classes: sample 0 class 0: [3, -1] → [3, 0]; sample 1 class 1: [-0.5, 3] → [0, 3]
    cam_swapped = class_activation_map(features, weight, torch.tensor([0, 1]))
    torch.testing.assert_close(cam_swapped, torch.tensor([[[3.0, 0.0]], [[0.0, 3.0]]]))


def test_classifier_weight_of_two_linears_is_their_product():
    head = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    torch.testing.assert_close(classifier_weight(head), head[2].weight @ head[0].weight)


def test_samd_by_hand():
    # B = 2, maps of different ranges: each sample is min-max normalised on its own, the KL
    # divergences are summed per sample and averaged over the batch
    student = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[1.0, 1.0], [3.0, 0.0]]])
    teacher = torch.tensor([[[4.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [2.0, 1.0]]])
    normalised_student = [[0.0, 0.25, 0.5, 1.0], [1 / 3, 1 / 3, 1.0, 0.0]]
    normalised_teacher = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.5]]
    per_sample = []
    for ns, nt in zip(normalised_student, normalised_teacher):
        s = torch.log_softmax(torch.tensor(ns) / 2.0, -1)
        t = torch.softmax(torch.tensor(nt) / 2.0, -1)
        per_sample.append((t * (t.log() - s)).sum())
    expected = (per_sample[0] + per_sample[1]) / 2
    torch.testing.assert_close(samd_loss(student, teacher, 2.0), expected)
    assert samd_loss(student, student, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_samd_resizes_teacher_map():
    assert torch.isfinite(samd_loss(torch.rand(2, 4, 4), torch.rand(2, 8, 8)))


def test_nld_by_hand_with_fixed_seed():
    # B = 2 with different logit scales: μ and σ are per sample, the loss is the batch mean
    zs = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    zt = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    gen = torch.Generator().manual_seed(7)
    got = nld_loss(zs, zt, weight=0.9, tau=2.0, generator=gen)
    eps = torch.randn(2, 3, generator=torch.Generator().manual_seed(7))
    per_sample = []
    for b in range(2):
        z = zs[b]
        mu = z.sum() / 3
        sigma = (((z - mu) ** 2).sum() / 2).sqrt()  # unbiased standard deviation of 3 logits
        noise = mu + sigma * eps[b]
        p_s = 0.9 * F.softmax(z / 2, -1) + 0.1 * F.softmax(noise / 2, -1)
        p_t = F.softmax(zt[b] / 2, -1)
        per_sample.append(4.0 * (p_t * (p_t.log() - p_s.log())).sum())
    expected = (per_sample[0] + per_sample[1]) / 2
    torch.testing.assert_close(got, expected)
    with_w1 = nld_loss(zs, zt, weight=1.0, tau=2.0, generator=torch.Generator().manual_seed(1))
    plain = 4.0 * F.kl_div(F.log_softmax(zs / 2, -1), F.softmax(zt / 2, -1), reduction="batchmean")
    assert math.isclose(with_w1.item(), plain.item(), rel_tol=1e-5)


@pytest.mark.parametrize("student_pass", ["bptt", "ratebp"])
def test_kd_step_leaves_the_teacher_unchanged(student_pass):
    teacher = esdsnn.create_method("ann", esdsnn.create_model("digits_resnet", in_channels=1), T=1).model
    teacher.train()  # kd must put it in eval mode itself
    before = copy.deepcopy(teacher.state_dict())
    student = esdsnn.create_model("digits_resnet", in_channels=1)
    method = esdsnn.create_method("kd", student, T=3, teacher=teacher, student_pass=student_pass)
    method.train()
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    for _ in range(2):
        out = method(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
        out.loss.backward()
        opt.step()
    assert not teacher.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(p is q for p in method.parameters() for q in teacher.parameters())
    assert {"samd", "nld", "ce_main"} <= set(out.parts)


def test_kd_rejects_mismatched_or_spiking_teacher():
    student = esdsnn.create_model("digits_resnet", in_channels=1)
    with pytest.raises(esdsnn.ConfigError, match="needs a teacher"):
        esdsnn.create_method("kd", student, T=2)
    with pytest.raises(esdsnn.ConfigError, match="ANN"):
        esdsnn.create_method("kd", student, T=2, teacher=esdsnn.create_model("digits_resnet", in_channels=1))
    other = esdsnn.create_method("ann", esdsnn.create_model("digits_resnet", num_classes=5, in_channels=1), T=1).model
    with pytest.raises(esdsnn.ConfigError, match="classes"):
        esdsnn.create_method("kd", student, T=2, teacher=other)

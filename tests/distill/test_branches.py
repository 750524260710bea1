"""ESD branches are built from the declared stages and accept any input size."""

import pytest
import torch

import esdsnn
from esdsnn.distill import DSBlock, build_branches


def count_blocks(branch):
    return sum(isinstance(m, DSBlock) for m in branch)


def test_resnet18_branch_plan():
    model = esdsnn.create_model("resnet18", num_classes=10)
    branches = build_branches(model.stage_channels, 10)
    assert [count_blocks(b) for b in branches] == [3, 2, 1]
    first = [m for m in branches[0] if isinstance(m, DSBlock)]
    assert [(b.op[0].in_channels, b.op[5].out_channels) for b in first] == [(64, 128), (128, 256), (256, 512)]


def test_resnet19_branch_plan():
    model = esdsnn.create_model("resnet19", num_classes=100)
    assert [count_blocks(b) for b in build_branches(model.stage_channels, 100)] == [2, 1]


@pytest.mark.parametrize("size", [8, 17, 48])
def test_branches_work_at_any_input_size(size):
    branches = build_branches((16, 32, 64), 7)
    for i, branch in enumerate(branches):
        x = torch.randn(2, (16, 32)[i], size, size)
        assert branch(x).shape == (2, 7)


def test_dsblock_halves_resolution():
    block = DSBlock(8, 16)
    assert block(torch.randn(2, 8, 10, 10)).shape == (2, 16, 5, 5)


def test_branches_only_in_training_methods_not_in_the_model():
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    n_model = sum(p.numel() for p in model.parameters())
    method = esdsnn.create_method("esd", model, T=2)
    assert sum(p.numel() for p in method.parameters()) > n_model
    assert sum(p.numel() for p in model.parameters()) == n_model
    assert esdsnn.predict(model, torch.randn(3, 1, 8, 8), T=2).shape == (3, 10)


def test_vggsnn_branches_after_second_and_third_pooling():
    model = esdsnn.create_model("vggsnn", num_classes=10, in_channels=2)
    assert model.stage_channels == (128, 256, 512, 512)
    method = esdsnn.create_method("esd", model, T=2)
    assert model.branch_points == (1, 2) and method.branch_taps == ["stages.1", "stages.2"]
    assert [count_blocks(b) for b in method.branches] == [2, 1]


def test_preact_resnet34_branches_interleave_residual_conv_blocks():
    from esdsnn.distill import ResidualConvBlock

    model = esdsnn.create_model("preact_resnet34", num_classes=1000)
    branches = esdsnn.create_method("esd", model, T=2).branches
    assert [count_blocks(b) for b in branches] == [3, 2, 1]
    kinds = [type(m).__name__ for m in branches[1] if isinstance(m, (DSBlock, ResidualConvBlock))]
    assert kinds == ["DSBlock", "ResidualConvBlock", "DSBlock", "ResidualConvBlock"]


def test_bad_branch_points_rejected():
    with pytest.raises(ValueError, match="branch points"):
        build_branches((8, 16, 32), 10, branch_points=(2,))

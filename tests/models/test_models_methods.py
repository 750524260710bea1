"""Every registered model × every method: finite gradients for every parameter; public API."""

import pytest
import torch

import esdsnn

SHAPES = {"digits_resnet": (1, 8, 8)}  # everything else gets CIFAR-shaped input


@pytest.mark.parametrize("arch", esdsnn.list_models())
@pytest.mark.parametrize("method_name", esdsnn.list_methods())
def test_every_model_and_method_gives_finite_gradients(arch, method_name):
    c, h, w = SHAPES.get(arch, (3, 32, 32))
    model = esdsnn.create_model(arch, num_classes=10, in_channels=c)
    extra = {}
    if method_name == "kd":
        extra["teacher"] = esdsnn.create_method(
            "ann", esdsnn.create_model(arch, num_classes=10, in_channels=c), T=1
        ).model
    method = esdsnn.create_method(method_name, model, T=2, **extra)
    x, y = torch.randn(2, c, h, w), torch.tensor([1, 7])
    out = method(x, y)
    assert out.logits.shape == (2, 10)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in method.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert {"loss", "ce_main", "acc_main"} <= set(out.parts)


def test_loss_scale_auto_is_one_over_T_for_ratebp_only():
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    assert esdsnn.create_method("esd", model, T=4).loss_scale == pytest.approx(0.25)
    assert esdsnn.create_method("ratebp", model, T=4).loss_scale == pytest.approx(0.25)
    assert esdsnn.create_method("esd-bptt", model, T=4).loss_scale == 1.0
    assert esdsnn.create_method("bptt", model, T=4, loss_scale=0.5).loss_scale == 0.5
    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    out = esdsnn.create_method("ratebp", model, T=4)(x, y)
    torch.testing.assert_close(out.loss.detach(), torch.tensor(out.parts["loss"] / 4))


def test_predict_is_the_spike_pass_and_restores_mode():
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    model.train()
    x = torch.randn(3, 1, 8, 8)
    a = esdsnn.predict(model, x, T=3)
    assert model.training and not a.requires_grad
    torch.testing.assert_close(a, esdsnn.predict(model, x, T=3))


def test_model_input_size_is_free():
    model = esdsnn.create_model("resnet18", num_classes=5, in_channels=2)
    for size in (16, 48):
        assert esdsnn.predict(model, torch.randn(1, 2, size, size), T=1).shape == (1, 5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: esdsnn.create_model("resnet1000"), "unknown arch"),
        (lambda: esdsnn.create_model("resnet18", decay=2.0), "decay"),
        (lambda: esdsnn.create_model("resnet18", tau=2.0), "neuron option"),
        (
            lambda: esdsnn.create_method("magic", esdsnn.create_model("digits_resnet", in_channels=1), T=2),
            "unknown method",
        ),
        (lambda: esdsnn.create_method("esd", esdsnn.create_model("digits_resnet", in_channels=1), T=0), "T must be"),
        (
            lambda: esdsnn.create_method("esd", esdsnn.create_model("digits_resnet", in_channels=1), T=2, teacher="x"),
            "teacher",
        ),
        (
            lambda: esdsnn.create_method(
                "esd", esdsnn.create_model("digits_resnet", in_channels=1, learnable_decay=True), T=2
            ),
            "learnable_decay",
        ),
    ],
)
def test_bad_arguments_raise_config_errors(call, message):
    with pytest.raises(esdsnn.ConfigError, match=message):
        call()


# sha256 of each model's sorted state-dict keys: checkpoints saved by earlier versions must load.
STATE_DICT_KEYS = {
    "digits_resnet": (63, "39ec117880b75154"),
    "preact_resnet34": (287, "12404861efffe84c"),
    "resnet18": (139, "336234e1fdf7f2a5"),
    "resnet19": (136, "35e05236af51becc"),
    "vggsnn": (66, "cb0bf6460187f85d"),
}


@pytest.mark.parametrize("arch", sorted(STATE_DICT_KEYS))
def test_state_dict_keys_stay_those_of_saved_checkpoints(arch):
    import hashlib

    keys = sorted(esdsnn.create_model(arch, num_classes=10, in_channels=3).state_dict())
    assert (len(keys), hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]) == STATE_DICT_KEYS[arch]

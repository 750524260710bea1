"""DepthwiseConv2d: an ``nn.Conv2d`` that, strided in bfloat16 on CPU, convolves unstrided and keeps
every stride-th row and column (oneDNN's strided bf16 depthwise input gradient is about ten times
slower); the same layer everywhere else. References: ``nn.Conv2d`` itself, and the strided
convolution in float64 on the same (bf16-representable) values."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esdsnn.layers.conv import DepthwiseConv2d

CASES = [  # (channels, size, kernel, stride, padding, dilation)
    (6, 9, 3, 2, 1, 1),
    (6, 8, 3, 2, 1, 1),
    (4, 11, 3, 3, 0, 1),
    (4, 10, 5, 2, 2, 1),
    (4, 12, 3, 2, 2, 2),
]


def _pair(case, dtype=torch.float32):
    c, size, k, s, p, d = case
    layer = DepthwiseConv2d(c, c, k, stride=s, padding=p, dilation=d, groups=c, bias=True)
    plain = nn.Conv2d(c, c, k, stride=s, padding=p, dilation=d, groups=c, bias=True)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(3, c, size, size).to(dtype)
    return layer, plain, x


@pytest.mark.parametrize("case", CASES)
def test_float32_is_the_plain_convolution_bit_for_bit(case):
    layer, plain, x = _pair(case)
    assert layer.state_dict().keys() == plain.state_dict().keys()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = layer(xa), plain(xb)
    g = torch.randn_like(a)
    a.backward(g), b.backward(g)
    assert torch.equal(a, b) and torch.equal(xa.grad, xb.grad)
    assert torch.equal(layer.weight.grad, plain.weight.grad) and torch.equal(layer.bias.grad, plain.bias.grad)


@pytest.mark.parametrize("case", CASES)
def test_bf16_takes_the_unstrided_convolution_with_the_strided_values_and_gradients(monkeypatch, case):
    layer, plain, x = _pair(case)
    x = x.bfloat16().float()  # values a bf16 autocast reads exactly
    strides = []
    conv2d = F.conv2d
    monkeypatch.setattr(
        F, "conv2d", lambda *a, **k: strides.append(a[3] if len(a) > 3 else k.get("stride")) or conv2d(*a, **k)
    )
    xa = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(xa)
    monkeypatch.undo()
    assert strides == [1] and out.dtype == torch.bfloat16
    ref = nn.Conv2d(
        *(
            getattr(plain, k)
            for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")
        )
    )
    ref = ref.double()
    with torch.no_grad():  # the strided convolution in float64 on the weights autocast rounds to bf16
        ref.weight.copy_(plain.weight.bfloat16().double()), ref.bias.copy_(plain.bias.bfloat16().double())
    x64 = x.double().requires_grad_()
    want = ref(x64)
    assert out.shape == want.shape
    torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2)
    g = torch.randn_like(want)
    out.double().backward(g), want.backward(g)
    torch.testing.assert_close(xa.grad.double(), x64.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(layer.weight.grad.double(), ref.weight.grad, rtol=2e-2, atol=5e-2)

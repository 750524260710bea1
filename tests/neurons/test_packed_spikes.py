"""Packed spikes behave as the float tensor they stand for, in-place writes included: a write of
0s and 1s lands in the bytes (and in every view sharing them), any other write raises one line
naming the fix, and the bytes are left as they were."""

import pytest
import torch
import torch.nn.functional as F

from esdsnn.errors import SpikeWriteError
from esdsnn.neurons import PackedSpikes, pack_spikes

SPIKES = torch.tensor([[[1, 0, 1], [0, 0, 1]], [[1, 1, 0], [0, 1, 0]]], dtype=torch.uint8)
MASK = torch.tensor([1.0, 0.0, 1.0])

# Each write as a float tensor would take it; the packed twin must end equal (and return itself).
WRITES = {
    "setitem zero": lambda x: x.__setitem__((slice(None), 0), 0),
    "setitem one": lambda x: x.__setitem__((0, 1, 1), 1.0),
    "setitem from itself": lambda x: x.__setitem__(0, x[1]),
    "setitem with a mask": lambda x: x.__setitem__(x == 1, 0),
    "mul_ by a 0/1 mask": lambda x: x.mul_(MASK),
    "augmented *=": lambda x: x.__imul__(MASK),
    "zero_": lambda x: x.zero_(),
    "fill_ 1": lambda x: x.fill_(1),
    "clamp_": lambda x: x.clamp_(max=0),
    "masked_fill_": lambda x: x.masked_fill_(MASK.bool(), 1.0),
    "hardtanh inplace": lambda x: F.hardtanh(x, 0.0, 0.0, inplace=True),
    "torch.clamp_": lambda x: torch.clamp_(x, max=0),
    "copy_": lambda x: x.copy_(torch.ones(2, 2, 3)),
    "sub_ itself": lambda x: x.sub_(x),
    "through a view": lambda x: x[1].zero_(),
    "through .data": lambda x: x.data.__setitem__((0, 0), 0),
    "through a transpose": lambda x: x.mT.__setitem__((0, 2), 0),
    "through view_as": lambda x: x.view_as(torch.empty(4, 3)).__setitem__(2, 1),
    "out=": lambda x: torch.mul(torch.ones(2, 2, 3), MASK, out=x),
}


@pytest.mark.parametrize("write", list(WRITES.values()), ids=list(WRITES))
def test_a_write_of_zeros_and_ones_lands_in_the_bytes(write):
    floats = SPIKES.float()
    packed = pack_spikes(SPIKES.clone(), torch.float32)
    returned_float, returned_packed = write(floats), write(packed)
    assert isinstance(packed, PackedSpikes) and packed.packed.dtype == torch.uint8
    assert torch.equal(packed.unpack(), floats)
    assert not torch.equal(floats, SPIKES.float())  # the write changed something
    if returned_float is floats:
        assert returned_packed is packed


def test_a_write_on_a_view_reaches_the_whole():
    packed = pack_spikes(SPIKES.clone(), torch.bfloat16)
    packed.flatten(0, 1)[:, 0] = 0
    assert packed.packed[..., 0].sum() == 0 and packed.dtype == torch.bfloat16


WRONG = {
    "setitem 0.5": lambda x: x.__setitem__((slice(None), 0), 0.5),
    "add_ 1": lambda x: x.add_(1),
    "augmented +=": lambda x: x.__iadd__(x),
    "mul_ 0.5": lambda x: x.mul_(0.5),
    "dropout inplace": lambda x: F.dropout(x, 0.5, True, inplace=True),
    "out= of a sum": lambda x: torch.add(torch.ones(2, 2, 3), 0.5, out=x),
}


@pytest.mark.parametrize("write", list(WRONG.values()), ids=list(WRONG))
def test_a_write_bytes_cannot_hold_raises_one_line_and_changes_nothing(write):
    packed = pack_spikes(SPIKES.clone(), torch.float32)
    with pytest.raises(SpikeWriteError, match=r"other than 0 and 1.*x = x\.float\(\)") as raised:
        write(packed)
    assert "\n" not in str(raised.value)
    assert torch.equal(packed.packed, SPIKES)


def test_reading_packed_spikes_into_a_float_tensor_is_no_write():
    packed = pack_spikes(SPIKES.clone(), torch.float32)
    y = torch.full((2, 2, 3), 0.5)
    assert y.add_(packed) is y and torch.equal(y, SPIKES.float() + 0.5)
    torch.mul(packed, 2.0, out=y)
    assert torch.equal(y, SPIKES.float() * 2) and torch.equal(packed.packed, SPIKES)
    fresh = packed.float()  # the named fix: a float copy, free to take any value
    fresh[:, 0] = 0.5
    assert type(fresh) is torch.Tensor and torch.equal(packed.packed, SPIKES)


def test_in_place_reshapes_keep_the_bytes():
    packed = pack_spikes(SPIKES.clone(), torch.float32)
    assert packed.unsqueeze_(0) is packed and packed.shape == (1, 2, 2, 3)
    assert isinstance(packed, PackedSpikes) and torch.equal(packed.unpack()[0], SPIKES.float())


@pytest.mark.parametrize("read", ["dtype", "shape", "device", "ndim", "size", "dim", "is_floating_point"])
def test_reading_metadata_makes_no_float_copy(monkeypatch, read):
    """Metadata reads (``x.dtype`` above all: every layer asks) answer from the packed bytes; a
    float copy of the spikes for each would cost a layer's activations in time and memory."""
    from esdsnn.neurons import spikes

    copies = []
    real = spikes.PackedSpikes.unpack
    monkeypatch.setattr(spikes.PackedSpikes, "unpack", lambda self: copies.append(1) or real(self))
    x = pack_spikes(torch.ones(2, 3, dtype=torch.uint8), torch.bfloat16)
    value = getattr(x, read)
    value = value() if callable(value) else value
    assert (
        value
        == {
            "dtype": torch.bfloat16,
            "shape": (2, 3),
            "device": torch.device("cpu"),
            "ndim": 2,
            "size": (2, 3),
            "dim": 2,
            "is_floating_point": True,
        }[read]
    )
    assert copies == []

"""Checkpoints: atomic writes, weights-only reads, clear errors, model/branch state split."""

import datetime

import pytest
import torch

import esdsnn
from esdsnn.errors import CheckpointError
from esdsnn.runs.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from esdsnn.train.state import load_split_state, split_state


def _method():
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    return model, esdsnn.create_method("esd", model, T=2)


def test_round_trip_and_no_temp_files(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    payload = {
        "model": {"w": torch.arange(4.0)},
        "config": {"T": 4, "method": "esd"},
        "epoch": 3,
        "rng": torch.get_rng_state(),
    }
    save_checkpoint(path, payload)
    save_checkpoint(path, payload)  # overwriting is atomic too
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    data = load_checkpoint(path)
    assert data["format_version"] == FORMAT_VERSION and data["epoch"] == 3
    assert torch.equal(data["model"]["w"], torch.arange(4.0)) and data["config"]["method"] == "esd"


def test_missing_corrupt_and_foreign(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.pt not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt is unreadable or corrupt"):
        load_checkpoint(junk)
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {}, "config": {}, "epoch": 1})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state": 1}, foreign)
    with pytest.raises(CheckpointError, match="not an esdsnn checkpoint"):
        load_checkpoint(foreign)
    future = tmp_path / "future.pt"
    torch.save({"format_version": FORMAT_VERSION + 1, "model": {}, "config": {}, "epoch": 0}, future)
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(future)


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    evil = datetime.date(2020, 1, 1)  # any pickled object that is not plain data
    torch.save({"format_version": FORMAT_VERSION, "model": evil, "config": {}, "epoch": 0}, path)
    with pytest.raises(CheckpointError, match="evil.pt is unreadable or corrupt"):
        load_checkpoint(path)


def test_split_state_separates_model_and_branches(tmp_path):
    model, method = _method()
    model_state, extra = split_state(method, model)
    assert set(model_state) == set(model.state_dict())
    assert extra and not any(k.startswith("model.") for k in extra)
    assert len(model_state) + len(extra) == len(method.state_dict())
    save_checkpoint(tmp_path / "m.pt", {"model": model_state, "extra": extra, "config": {}, "epoch": 0})
    data = load_checkpoint(tmp_path / "m.pt")
    torch.manual_seed(123)
    model2, method2 = _method()
    load_split_state(method2, model2, data["model"], data["extra"])
    for (k, a), (_, b) in zip(method.state_dict().items(), method2.state_dict().items()):
        assert torch.equal(a, b), k
    fresh = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    fresh.load_state_dict(data["model"])  # the SNN alone loads without the method

"""The paper's recipe configs: every file is a valid config, and one CIFAR and one CIFAR10-DVS
recipe run end to end (2 epochs) on small files written in the real on-disk formats."""

import importlib.util
import json
from pathlib import Path

import pytest

from esdsnn.cli import main
from esdsnn.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _sibling(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configs_cover_every_paper_run():
    names = {p.stem for p in CONFIGS}
    for ds in ("cifar10", "cifar100"):
        for arch in ("resnet18", "resnet19"):
            for T in (6, 4, 2):
                assert f"{ds}_{arch}_T{T}" in names
    for arch in ("resnet18", "resnet19"):
        for method in ("esd", "esd-bptt"):
            assert f"cifar10-dvs_{arch}_T10_{method}" in names
    assert "imagenet_preact_resnet34_T4" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads(path):
    config = load_config(str(path), {})
    assert config.method in ("esd", "esd-bptt") and config.optim.epochs >= 100
    assert config.seed == 60 and config.optim.momentum == 0.9


def test_cifar_recipe_two_epochs_end_to_end(tmp_path):
    formats = _sibling("test_cifar")
    folder, _ = formats.write_cifar10(tmp_path / "data", per_batch=4, n_test=6)
    formats.make_targz(folder, tmp_path / "data" / "cifar-10-python.tar.gz")
    import shutil

    shutil.rmtree(folder)  # only the archive, as downloaded
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(ROOT / "configs" / "cifar10_resnet18_T2.yaml"),
            "--data-path",
            str(tmp_path / "data"),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--out",
            str(run),
            "--no-progress",
            "--threads",
            "1",
            "--no-report",
        ]
    )
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == "cifar10" and summary["epochs"] == 2 and summary["test_total"] == 6
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3


def test_dvs_recipe_two_epochs_end_to_end(tmp_path):
    formats = _sibling("test_dvs")
    formats.write_dataset(tmp_path / "dvs", per_class=2, n_events=60)
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(ROOT / "configs" / "cifar10-dvs_resnet18_T10_esd-bptt.yaml"),
            "--data-path",
            str(tmp_path / "dvs"),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--T",
            "2",
            "--out",
            str(run),
            "--no-progress",
            "--threads",
            "1",
            "--workers",
            "0",
            "--no-report",
        ]
    )
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"] == "cifar10-dvs" and summary["T"] == 2 and summary["test_total"] > 0
    assert (tmp_path / "dvs" / ".esdsnn_cache").is_dir()


def test_recipe_with_missing_data_path_is_one_line_error(tmp_path, capsys):
    code = main(
        [
            "train",
            "--config",
            str(ROOT / "configs" / "cifar10_resnet18_T6.yaml"),
            "--data-path",
            str(tmp_path / "nowhere"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cifar-10-python.tar.gz" in err[0]

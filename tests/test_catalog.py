"""esdsnn configs / esdsnn methods: the ready configs with the paper's figures, each method's
settings; --config takes a ready config's name."""

import yaml

import esdsnn
from esdsnn.cli import main
from esdsnn.config import TrainConfig, load_config
from esdsnn.methods.registry import method_settings
from esdsnn.recipes import recipe_files

# SPEC §8 (the papers' top-1), typed here from the spec, not read from the files
PAPER = {
    "cifar10_resnet18_T6": 96.19,
    "cifar10_resnet18_T4": 95.92,
    "cifar10_resnet18_T2": 95.29,
    "cifar10_resnet19_T6": 96.46,
    "cifar10_resnet19_T4": 96.39,
    "cifar10_resnet19_T2": 96.31,
    "cifar100_resnet18_T6": 80.20,
    "cifar100_resnet18_T4": 79.30,
    "cifar100_resnet18_T2": 77.46,
    "cifar100_resnet19_T6": 82.14,
    "cifar100_resnet19_T4": 81.90,
    "cifar100_resnet19_T2": 80.97,
    "imagenet_preact_resnet34_T4": 70.72,
    "cifar10-dvs_resnet18_T10_esd": 81.40,
    "cifar10-dvs_resnet19_T10_esd": 81.90,
    "cifar10-dvs_resnet18_T10_esd-bptt": 85.70,
    "cifar10-dvs_resnet19_T10_esd-bptt": 85.90,
}


def test_every_ready_config_is_listed_with_the_papers_figure(capsys):
    assert {r.name: r.paper_top1 for r in recipe_files()} == PAPER
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for name, top1 in PAPER.items():
        assert f"| {name} |" in out and f"{top1:.2f} %" in out


def test_a_ready_config_prints_and_loads_by_name(capsys):
    assert main(["configs", "cifar10-dvs_resnet18_T10_esd"]) == 0
    text = capsys.readouterr().out
    settings = yaml.safe_load(text)
    config = load_config("cifar10-dvs_resnet18_T10_esd")
    assert (settings["T"], settings["beta"]) == (config.T, config.distill.beta) == (10, 0.1)
    assert load_config("cifar10-dvs_resnet18_T10_esd.yaml") == config


def test_an_unknown_name_is_one_line_with_the_choices(capsys):
    assert main(["configs", "cifar11"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cifar10_resnet18_T6" in err
    assert main(["train", "--config", "cifar11.yaml"]) == 2
    assert "esdsnn configs lists them" in capsys.readouterr().err


def test_methods_list_and_each_methods_settings(capsys):
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert all(f"| {m} |" in listed for m in esdsnn.list_methods())
    assert main(["methods", "sd"]) == 0
    sd = capsys.readouterr().out
    assert "--teacher" in sd and "fixed to 'all'" in sd and "ablation of esd" in sd
    defaults = TrainConfig()
    for s in method_settings("esd"):  # the defaults printed are the config's
        assert s.default == defaults.get(s.name) or (s.default is None and defaults.get(s.name) is None)
    assert main(["methods", "kd"]) == 0
    assert "--teacher-run DIR" in capsys.readouterr().out
    assert main(["methods", "nope"]) == 2

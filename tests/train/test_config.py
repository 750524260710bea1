"""TrainConfig: YAML round trip, flag overrides, and errors that say what is wrong."""

import pytest

from esdsnn.config import RENAMED, RENAMED_VALUES, TrainConfig, load_config, read_yaml, save_config
from esdsnn.errors import ConfigError


def test_defaults_resolve_for_digits():
    config = TrainConfig().resolved()
    assert config.method == "esd" and config.dataset == "digits" and config.arch == "digits_resnet"
    assert config.T == 4 and config.seed == 60 and config.optim.momentum == 0.9 and config.optim.weight_decay == 5e-4
    assert config.optim.epochs >= 1 and config.optim.batch_size >= 1 and config.optim.lr > 0 and config.run.threads == 1
    assert TrainConfig(dataset="cifar10").resolved().arch == "resnet18"
    assert TrainConfig(dataset="npz").resolved().arch is None  # sized to the data once it is read
    assert TrainConfig(arch="resnet19").resolved().arch == "resnet19"


def test_yaml_round_trip(tmp_path):
    config = TrainConfig.from_dict(
        dict(
            method="bptt",
            arch="resnet19",
            T=2,
            epochs=3,
            batch_size=16,
            lr=0.05,
            loss_scale=0.5,
            reset="hard",
            v_reset=0.1,
            detach_reset=False,
            learnable_decay=True,
            teacher="all",
            teacher_space="probs",
            unreliable="entropy",
            threads=1,
            progress=False,
            out="some/dir",
        )
    ).resolved()
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert load_config(path) == config
    defaults = TrainConfig().resolved()
    save_config(defaults, path)
    assert load_config(path) == defaults


def test_flags_override_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.05\nT: 2\nmethod: ratebp\ndetach_reset: false\n")
    config = load_config(path, {"T": "3", "detach_reset": True})
    assert (
        config.T == 3 and config.optim.lr == 0.05 and config.method == "ratebp" and config.neuron.detach_reset is True
    )
    assert load_config(path).T == 2
    # a flag can repair a bad file value: the merged config is what gets validated
    path.write_text("T: 0\n")
    assert load_config(path, {"T": "4"}).T == 4


def test_yaml_scientific_notation_and_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5.0e-4\nepochs: 2\nloss_scale: auto\nthreads: null\n")
    config = load_config(path)
    assert config.get("lr") == 1e-3 and config.get("weight_decay") == 5e-4 and config.get("epochs") == 2
    assert config.loss_scale == "auto" and config.get("threads") is None


def test_unknown_key_lists_known_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.1\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "learning_rate" in message and "c.yaml" in message
    assert "known keys: method, arch, dataset" in message and "batch_size" in message


@pytest.mark.parametrize(
    "values, message",
    [
        ({"T": 0}, "T must be >= 1"),
        ({"lr": -0.1}, "lr must be > 0"),
        ({"lr": 0}, "lr must be > 0"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"reset": "medium"}, "reset must be one of soft, hard"),
        ({"teacher": "best"}, "teacher must be one of reliable, all, main"),
        ({"teacher_space": "x"}, "teacher_space must be one of"),
        ({"unreliable": "keep"}, "unreliable must be one of"),
        ({"decay": 1.5}, "decay must be in"),
        ({"loss_scale": "half"}, "loss_scale"),
        ({"loss_scale": -1}, "loss_scale must be"),
        ({"T": "four"}, "T .* must be an integer"),
        ({"T": 2.5}, "T .* must be an integer"),
        ({"progress": "maybe"}, "progress .* must be true or false"),
        ({"lr": "nan"}, "finite"),
        ({"method": "magic"}, "unknown method 'magic'; choose one of .*esd"),
        ({"arch": "resnet1000"}, "unknown arch 'resnet1000'; choose one of .*digits_resnet"),
        ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
        ({"device": "tpu"}, "device must be"),
        ({"eval_every": 0}, "eval_every must be >= 1"),
        ({"student_pass": "x"}, "student_pass must be one of bptt, ratebp"),
        ({"nld_mix": 1.5}, "nld_mix must be in"),
        ({"method": "kd"}, "needs a teacher"),
    ],
)
def test_bad_values(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match="T must be >= 1"):
        TrainConfig(T=0)
    assert TrainConfig(T="3").T == 3


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file .*missing.yaml not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\nT: 4\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        read_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml must hold a mapping"):
        load_config(listing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == TrainConfig()


def test_replace_is_checked():
    config = TrainConfig()
    assert config.replace(T=6).T == 6
    with pytest.raises(ConfigError):
        config.replace(T=-1)


def test_sd_records_the_teacher_it_trains_with(tmp_path):
    """`sd` is ESD with the all-heads teacher: the saved config says so (not the default)."""
    config = TrainConfig(method="sd")
    assert config.distill.teacher == "all"
    save_config(config, tmp_path / "config.yaml")
    assert read_yaml(tmp_path / "config.yaml")["teacher"] == "all"
    assert TrainConfig(method="esd").distill.teacher == "reliable"
    assert TrainConfig.from_dict({"method": "sd", "teacher": "reliable"}).distill.teacher == "all"


# The config.yaml of a run saved by esdsnn before the config tree (flat keys, no crop_padding or
# cutout_size): runs saved then must still evaluate, report and resume.
FLAT_CONFIG_BEFORE_THE_TREE = """\
method: esd
arch: digits_resnet
dataset: digits
data_path: null
T: 4
epochs: 2
batch_size: 64
lr: 0.1
momentum: 0.9
weight_decay: 0.0005
seed: 60
loss_scale: auto
decay: 0.2
threshold: 1.0
reset: soft
v_reset: 0.0
detach_reset: true
learnable_decay: false
surrogate_alpha: 4.0
alpha: 1.0
beta: 0.3
tau: 3.0
teacher: reliable
teacher_space: logits
unreliable: drop
eta: 0.1
teacher_run: null
samd_weight: 1.0
nld_weight: 1.0
samd_temperature: 2.0
nld_tau: 2.0
nld_mix: 0.9
student_pass: bptt
crop: true
flip: true
autoaugment: true
cutout: true
out: /tmp/old-run
threads: 1
device: auto
progress: true
eval_every: 1
workers: null
report: true
save_every_steps: 0
amp: none
channels_last: false
compile: false
sync_bn: false
tensorboard: true
"""


def test_a_config_saved_before_the_config_tree_still_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(FLAT_CONFIG_BEFORE_THE_TREE)
    config = load_config(path)
    assert (config.optim.epochs, config.optim.batch_size, config.neuron.decay, config.distill.beta) == (2, 64, 0.2, 0.3)
    assert config.run.out == "/tmp/old-run" and config.augment.crop_padding == 4  # a new key takes its default
    saved = read_yaml(path)
    renamed = {RENAMED.get(k, k): RENAMED_VALUES.get(k, {}).get(v, v) for k, v in saved.items()}  # tau: kd_tau
    renamed["precision"] = renamed["precision"] or "32"  # amp none: the default precision
    assert set(renamed) <= set(TrainConfig.field_names())
    assert {k: config.get(k) for k in renamed} == renamed  # every old key means what it meant


# ---- one place per setting: the recipes ----------------------------------------------------------
def _recipe_file(name):
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "configs" / name


@pytest.mark.parametrize(
    "dataset, recipe_file",
    [
        ("cifar10-dvs", "cifar10-dvs_resnet18_T10_esd.yaml"),
        ("imagenet", "imagenet_preact_resnet34_T4.yaml"),
        ("cifar10", "cifar10_resnet18_T4.yaml"),
    ],
)
def test_a_dataset_without_a_config_runs_its_recipe(dataset, recipe_file):
    """``--dataset X`` alone resolves to every setting of X's ready recipe file (one of them
    where the runs differ: ResNet-18, CIFAR's T = 4)."""
    from esdsnn.recipes import RECIPES

    alone = load_config(None, {"dataset": dataset}).resolved().to_dict()
    ready = load_config(_recipe_file(recipe_file)).resolved().to_dict()
    assert alone == ready
    assert {k: alone[k] for k in RECIPES[dataset]} == dict(RECIPES[dataset])
    if dataset == "cifar10-dvs":  # the numbers: T 10, batch 32, beta 0.1, not 4, 128, 0.3
        assert (alone["T"], alone["batch_size"], alone["beta"], alone["dvs_split"]) == (10, 32, 0.1, "official")


def test_every_recipe_file_agrees_with_the_recipe_table():
    from esdsnn.recipes import RECIPES

    files = sorted(_recipe_file("").glob("*.yaml"))
    assert len(files) >= 17
    for path in files:
        saved = read_yaml(path)
        table = RECIPES[saved["dataset"]]
        for key, value in table.items():
            if key != "arch":  # ResNet-18 and -19 runs of one recipe
                assert saved.get(key, value) == value, (path.name, key)


def test_settings_given_win_over_the_recipe():
    config = load_config(None, {"dataset": "cifar10-dvs", "T": "4", "beta": "0.3", "batch_size": "8"}).resolved()
    assert (config.T, config.distill.beta, config.optim.batch_size) == (4, 0.3, 8)
    assert TrainConfig.from_dict({"dataset": "digits"}).T == 4 and TrainConfig().distill.beta == 0.3


def test_help_texts_read_their_numbers_from_the_tables():
    """The help of a data-set-dependent setting types no default of its own; the per-data-set
    defaults it prints are the tables' values (``esdsnn train --help`` prints exactly these)."""
    import argparse

    from esdsnn.cli import add_train_arguments
    from esdsnn.config import LEAVES
    from esdsnn.defaults import DATA_DEPENDENT, DIGITS_DEFAULTS, default_help, recipe_defaults
    from esdsnn.recipes import RECIPES

    def shown(value):
        return "torch's setting" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    touched = set(DATA_DEPENDENT) | {k for table in RECIPES.values() for k in table}
    for name in touched:
        assert "default" not in LEAVES[name].help, name
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    for name in sorted(touched):
        text = default_help(name, LEAVES[name].default)
        assert text and " ".join(text.split()) in help_text, name
        said = {}
        for part in text.removeprefix("default: ").split("; "):
            part = part.removeprefix("the recipe's ")
            if " on " in part:
                value, names = part.split(" on ", 1)
                said.update({d: value for d in names.split(", ")})
        for dataset, table in RECIPES.items():
            want = recipe_defaults(dataset)[name] if name in DATA_DEPENDENT else table.get(name, LEAVES[name].default)
            if dataset in said:
                assert said[dataset] == shown(want), (name, dataset)
            else:
                assert want == LEAVES[name].default, (name, dataset)
        if name in DATA_DEPENDENT:
            assert said["digits"] == shown(DIGITS_DEFAULTS[name]), name


def test_old_dvs_runs_keep_the_split_they_trained_with():
    new = TrainConfig.from_dict({"dataset": "cifar10-dvs"}).resolved().to_dict()
    assert new["dvs_split"] == "official"
    saved_before = {k: v for k, v in new.items() if k != "dvs_split"}
    assert TrainConfig.from_saved(saved_before).data.dvs_split == "stratified"
    assert TrainConfig.from_saved(new).data.dvs_split == "official"
    assert "dvs_split" not in TrainConfig().resolved().to_dict()  # recorded only where it applies
    with pytest.raises(ConfigError, match="--dvs-split applies to cifar10-dvs only"):
        TrainConfig.from_dict({"dataset": "cifar10", "dvs_split": "stratified"}).check_applicable()

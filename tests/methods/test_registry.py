"""The method registry: a new method is one file; methods declare what the rest must know."""

import importlib.util
import json
from pathlib import Path

import pytest

import esdsnn
from esdsnn.analysis.comparison import summarise
from esdsnn.cli import main
from esdsnn.errors import ConfigError
from esdsnn.methods import method_spec, registry
from esdsnn.runs import evaluate

HERE = Path(__file__).resolve().parent


@pytest.fixture
def example_method():
    """The example method of ``example_method.py``, registered for one test."""
    spec = importlib.util.spec_from_file_location("example_method", HERE / "example_method.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module.NAME
    finally:
        registry._METHODS.pop(module.NAME, None)


def test_a_new_method_is_one_file(example_method, tmp_path, capsys):
    """Registered from its own file, the method trains from the command line, evaluates, gets its
    report and a row in a comparison table: nothing else was told its name."""
    assert example_method in esdsnn.list_methods()
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--method",
            example_method,
            "--epochs",
            "1",
            "--T",
            "2",
            "--batch-size",
            "128",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(run),
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == example_method and summary["status"] == "completed"
    assert 0 < summary["avg_firing_rate"] < 1 and (run / "report.md").is_file()  # a spiking method: reported
    assert evaluate(run).correct == summary["test_correct"]
    assert "loss" in (run / "metrics.csv").read_text().splitlines()[0]
    record = {
        "method": example_method,
        "role": "method",
        "status": "completed",
        "test_acc": summary["test_acc"],
        "epoch_s_mean": 1.0,
        "peak_rss_bytes": None,
    }
    (row,) = summarise([record])
    assert row["method"] == example_method and row["n_seeds"] == 1


def test_the_built_in_methods_declare_what_the_rest_needs():
    assert esdsnn.list_methods()[:7] == ["bptt", "ratebp", "esd", "esd-bptt", "sd", "ann", "kd"]
    ann, kd, sd = method_spec("ann"), method_spec("kd"), method_spec("sd")
    assert not ann.spiking and ann.inference_steps(6) == 1 and ann.prepare_model is not None
    model = esdsnn.create_model("digits_resnet", in_channels=1)
    assert not any(isinstance(m, esdsnn.layers.LIF) for m in ann.prepared(model).modules())
    assert kd.teacher_method == "ann" and kd.sections == ("kd",) and kd.needs == ("teacher",)
    assert sd.forced == {"teacher": "all"} and sd.ablation_of == ("esd", "reliability filter")
    for name in esdsnn.list_methods():
        spec = method_spec(name)
        assert spec.description and spec.training_pass
        assert spec.spiking == (name != "ann") and spec.inference_steps(4) == (4 if spec.spiking else 1)


def test_options_a_method_does_not_read_are_refused_once_for_all():
    model = esdsnn.create_model("digits_resnet", in_channels=1)
    with pytest.raises(ConfigError, match=r"method bptt does not read alpha \(read only by esd, esd-bptt, sd\)"):
        esdsnn.create_method("bptt", model, T=2, alpha=0.5)
    with pytest.raises(ConfigError, match=r"method esd does not read samd_weight \(read only by kd\)"):
        esdsnn.create_method("esd", model, T=2, samd_weight=1.0)
    with pytest.raises(ConfigError, match="method bptt does not take option.*teacher_model.*it takes loss_scale"):
        esdsnn.create_method("bptt", model, T=2, teacher_model=None)
    method = esdsnn.create_method("esd", model, T=2, alpha=0.5, beta=0.2)
    assert (method.distill.alpha, method.distill.beta, method.distill.teacher) == (0.5, 0.2, "reliable")
    with pytest.raises(ConfigError, match="kd_tau must be > 0"):
        esdsnn.create_method("esd", esdsnn.create_model("digits_resnet", in_channels=1), T=2, kd_tau=0)


def test_sd_fixes_its_teacher():
    model = esdsnn.create_model("digits_resnet", in_channels=1)
    assert esdsnn.create_method("sd", model, T=2).distill.teacher == "all"
    with pytest.raises(ConfigError, match="method sd fixes teacher = 'all'"):
        esdsnn.create_method("sd", esdsnn.create_model("digits_resnet", in_channels=1), T=2, teacher="reliable")


def test_every_module_of_the_methods_package_is_imported():
    import pkgutil

    import esdsnn.methods as package

    names = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert {"bptt", "ratebp", "esd", "ann", "kd"} <= names
    assert all(f"esdsnn.methods.{n}" in __import__("sys").modules for n in names)


def test_registering_a_name_twice_or_an_unknown_section_fails():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_method("esd", description="x", training_pass="x")(lambda model, T: None)
    with pytest.raises(ValueError, match="unknown option sections"):
        registry.register_method("x-new", description="x", training_pass="x", sections=("optim",))


@pytest.mark.parametrize("T", [1, 4])
def test_each_methods_declared_loss_scale_is_the_one_it_trains_with(T):
    """The defaults size the learning rate by the declared scale (lr 0.1 / scale on own data), so a
    method declaring the wrong one would train at 1/T or T times the intended step."""
    for name in esdsnn.list_methods():
        for student_pass in ("bptt", "ratebp") if name == "kd" else (None,):
            options = {"student_pass": student_pass} if student_pass else {}
            if method_spec(name).needs:
                options["teacher"] = esdsnn.create_method(
                    "ann", esdsnn.create_model("digits_resnet", in_channels=1), T=1
                ).model
            built = esdsnn.create_method(name, esdsnn.create_model("digits_resnet", in_channels=1), T=T, **options)
            declared = method_spec(name).auto_loss_scale(T, {"student_pass": student_pass or "bptt"})
            assert built.loss_scale == declared, (name, student_pass)
    assert method_spec("esd").auto_loss_scale(4, {}) == 0.25 and method_spec("bptt").auto_loss_scale(4, {}) == 1.0

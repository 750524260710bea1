"""The package as users install it: torch as a lower bound (an installed torch stays), the
recipes inside the package, the licence, the citation and the changelog of this version."""

from importlib import metadata, resources
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

import esdsnn

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_torch_is_a_lower_bound_that_the_installed_torch_meets():
    import torch

    (torch_req,) = [Requirement(r) for r in _pyproject()["project"]["dependencies"] if r.startswith("torch")]
    specs = list(torch_req.specifier)
    assert specs and all(s.operator == ">=" for s in specs), specs  # no pin, no upper bound
    assert Version(torch.__version__.split("+")[0]) in torch_req.specifier


def test_the_ready_configs_are_package_data():
    names = [p.name for p in resources.files("esdsnn").joinpath("configs").iterdir() if p.name.endswith(".yaml")]
    assert len(names) == 17 and "cifar10_resnet18_T6.yaml" in names
    assert "configs/*.yaml" in _pyproject()["tool"]["setuptools"]["package-data"]["esdsnn"]


def test_version_licence_citation_and_changelog_agree():
    version = _pyproject()["project"]["version"]
    assert esdsnn.__version__ == version == metadata.version("esdsnn")
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == version and cff["license"] == "MIT"
    assert {"arXiv:2510.06254", "arXiv:2410.11488"} <= {i["value"] for r in cff["references"] for i in r["identifiers"]}
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()

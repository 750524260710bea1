"""mypy (configured in pyproject.toml): the core packages are checked in full, never on the list of
modules whose errors are ignored, and the tree passes where mypy is installed (``.[lint]``)."""

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
CORE = ("neurons", "passes", "layers", "methods", "distill", "runtime")


def _ignored_modules() -> list[str]:
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    out: list[str] = []
    for override in mypy.get("overrides", []):
        if override.get("ignore_errors"):
            modules = override["module"]
            out += [modules] if isinstance(modules, str) else modules
    return out


def _core_modules() -> set[str]:
    src = ROOT / "src"
    paths = [path for package in CORE for path in (src / "esdsnn" / package).rglob("*.py")]
    return {".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__") for path in paths}


def _matches(module: str, pattern: str) -> bool:
    """mypy's module patterns: a name, or ``a.b.*`` for the package ``a.b`` and all below it."""
    return module == pattern or fnmatch.fnmatchcase(module, pattern) or module == pattern.removesuffix(".*")


def test_no_core_package_is_on_the_ignore_errors_list():
    core = _core_modules()
    assert "esdsnn.layers.rate_norm" in core and "esdsnn.runtime" in core
    ignored = _ignored_modules()
    hits = sorted((pattern, module) for pattern in ignored for module in core if _matches(module, pattern))
    assert not hits, f"core modules must pass mypy, not have their errors ignored: {hits}"
    assert not any(_matches("esdsnn.neurons.lif", p) for p in ["esdsnn.layers.*", "esdsnn.neurons"])
    assert all(_matches("esdsnn.neurons.lif", p) for p in ["esdsnn.*", "esdsnn.neurons.*", "esdsnn.neurons.lif"])


def test_core_packages_silence_no_rule_without_a_reason():
    """No file-wide ``# mypy:`` switch; each ``# type: ignore[code]`` says why in a comment after it."""
    bare = []
    for package in CORE:
        for path in sorted((ROOT / "src" / "esdsnn" / package).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                where = f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                if line.lstrip().startswith("# mypy:"):
                    bare.append(where)
                elif "type: ignore" in line and not re.search(r"# type: ignore\[[\w, -]+\]  # \S", line):
                    bare.append(where)
    assert not bare, "\n".join(bare)


@pytest.mark.slow
def test_mypy_passes():
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""Every code block of the docs and the README runs, so none can rot: one test per page runs its
blocks in a fresh process (tests/docs_runner.py, which lists the substitutions that make documented
commands cheap); every fence is either run or declared not to be code; the README's test command
is CI's; the site builds with ``mkdocs build --strict``; and the runner itself fails on a broken
block."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docs_runner", Path(__file__).with_name("docs_runner.py"))
docs_runner = importlib.util.module_from_spec(_spec)
sys.modules["docs_runner"] = docs_runner  # its dataclasses look their module up
_spec.loader.exec_module(docs_runner)

PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]
#: Blocks the tests do not run, each titled with its reason on the page: keep this list tiny.
NOT_RUN = {"docs/performance.md": 1}  # benchmarks/gpu.sh needs CUDA (tests/test_gpu_script.py runs its CPU parts)


def blocks_of(page):
    return docs_runner.read_blocks(ROOT / page, page)


def runnable(page):
    return any(b.lang in docs_runner.EXECUTED and b.not_run_reason is None for b in blocks_of(page))


def test_every_fence_is_run_or_not_code():
    problems = [p for page in PAGES for p in docs_runner.fence_problems(blocks_of(page))]
    assert not problems, "\n".join(problems)
    not_run = {}
    for page in PAGES:
        for block in blocks_of(page):
            if block.not_run_reason is not None:
                assert block.not_run_reason, f"{block.where}: say why the block is not run"
                not_run[page] = not_run.get(page, 0) + 1
    assert not_run == NOT_RUN


def test_the_fence_check_catches_unmarked_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```\nesdsnn train\n```\n\n```sh\nls\n```\n\n```yaml\na: 1\n```\n\n```text\nout\n```\n")
    problems = docs_runner.fence_problems(docs_runner.read_blocks(page, "page.md"))
    assert [p.split(":")[1] for p in problems] == ["3", "7", "11"]


@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)])
def test_page_runs(page, tmp_path):
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "docs_runner.py"),
            page,
            "--work",
            str(tmp_path / "work"),
            "--report",
            str(report),
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"{page}: a code block failed\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    result = json.loads(report.read_text())
    assert result["ran"], f"{page}: nothing ran"
    if result["skipped"]:
        pytest.skip(f"{len(result['ran'])} blocks ran; not run here: " + "; ".join(result["skipped"]))


def test_the_runner_fails_on_a_broken_block(tmp_path):
    """A broken Python block, a failing command, and an unknown command each stop the page with
    the block's line."""
    for n, (block, expected) in enumerate(
        [
            ("```python\nimport esdsnn\nesdsnn.create_model('no-such-model')\n```", "page0.md:3"),
            ("```bash\nesdsnn train --method no-such-method\n```", "exited 2"),
            ("```bash\nrm -rf /\n```", "do not know how to run"),
        ]
    ):
        page = tmp_path / f"page{n}.md"
        page.write_text(f"# a page\n\n{block}\n")
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "docs_runner.py"), str(page), "--work", str(tmp_path / f"work{n}")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode != 0 and expected in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_substitutions_make_documented_commands_small(tmp_path):
    fixtures = docs_runner.Fixtures(tmp_path)

    def shrink(line):
        return docs_runner.esdsnn_args(docs_runner.shell_commands(line)[0][1:], fixtures)

    assert shrink("esdsnn compare --methods bptt,ratebp,esd,kd --seeds 3 --epochs 10") == [
        "compare",
        "--methods",
        "esd",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--no-report",
    ]
    assert shrink("esdsnn train --resume runs/x --epochs 30") == [
        "train",
        "--resume",
        "runs/x",
        "--epochs",
        "2",
        "--threads",
        "1",
        "--no-report",
    ]
    bench = shrink("esdsnn bench --methods esd,bptt,ratebp --T 2,4,6 --batch 32 --repeats 3 --warmup 1")
    assert bench[bench.index("--T") + 1] == "2" and bench[bench.index("--batch") + 1] == "2"
    assert bench[bench.index("--methods") + 1] == "esd"
    dvs = shrink("esdsnn train --config cifar10-dvs_resnet18_T10_esd --data-path DIR")
    folder = Path(dvs[dvs.index("--data-path") + 1])
    assert folder.is_dir() and len(list(folder.rglob("*.aedat"))) == 20 and dvs[dvs.index("--T") + 1] == "2"


def test_the_readme_test_command_is_ci_s():
    """Command 2 of the README is the test command of .ci/run (CI runs it; the docs test only
    collects it)."""
    readme = [b for b in blocks_of("README.md") if b.lang == "bash"]
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = readme[1].code.strip()
    assert test_command.startswith("python3 -m venv .venv && ")
    assert test_command[len("python3 -m venv .venv && ") :] in ci.splitlines()
    assert re.search(r"\.venv/bin/esdsnn train$", readme[0].code.strip())


def test_the_site_builds_strictly(tmp_path):
    """mkdocs build --strict: no broken link or reference, every API page renders."""
    pytest.importorskip("mkdocs", reason="pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material", reason="pip install -e '.[docs]' (mkdocs-material)")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert (tmp_path / "site" / "api" / "layers" / "index.html").read_text().count('id="esdsnn.layers.LIF"') == 1

"""Runs the code blocks of one documentation page, in order, in a temporary working folder (the docs
tests start it once per page, so pages share no state): ``python tests/docs_runner.py PAGE --work DIR``.

What a fence's language means:

- ``python``: executed as written; the page's Python blocks share one namespace. With a title
  that names a file (```` ```python title="my_code/mynets.py" ````) the block *is* that file: it is
  written there (and compiled), for the shell blocks after it.
- ``yaml`` with a file title: written to that file.
- ``bash``: run command by command (``&&`` chains and ``\\`` continuations as a shell reads them,
  ``#`` comments skipped). ``esdsnn ...`` runs ``esdsnn.cli.main`` in this process, ``python
  examples/...``, ``python benchmarks/...`` and ``torchrun`` run in child processes of the current interpreter, each with the
  substitutions below; installation steps (``python3 -m venv``, ``pip install``) are what CI does
  and are not run again; ``python -m pytest ...`` (the README's test command) is collected, not run
  (the suite cannot run itself).
- ``text``: output samples, listings, tables: not code.

A block titled ``not run by the docs tests: REASON`` is not run (the docs tests count these). A
block that needs an optional package that is not installed (SpikingJelly, the NIR clients) is
skipped with the package named; the run reports it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ---- the substitutions: everything that makes a documented command cheap -----------------------
#: Flags whose value is replaced wherever a documented command gives one.
SMALLER = {
    "--seeds": "1",  # esdsnn compare: one seed per method
    "--repeats": "1",  # esdsnn bench: one timed step ...
    "--warmup": "0",  # ... and no warm-up
    "--batch": "2",  # esdsnn bench: batch 2
    "--threads": "1",  # every command: one torch thread
    "--seconds": "2",  # examples/spikingjelly_csnn_npz.py: a 2 s training budget
}
#: ``esdsnn train``/``compare``: one epoch (a ``--resume`` that names epochs extends to 2, one more
#: than the run it continues); ``--threads 1`` and ``--no-report`` (the report's own block,
#: ``esdsnn report``, runs it) are added where absent.
EPOCHS, RESUME_EPOCHS = "1", "2"
#: ``esdsnn bench --T 2,4,6,8``: the first value only; ``--methods``: the first listed (with
#: ``--baseline spikingjelly`` that makes two configurations);
#: ``--input-shape`` 3×16×16 unless given (each configuration runs in a fresh process).
BENCH_INPUT = ["--input-shape", "3,16,16"]
#: ``esdsnn compare --methods a,b,...``: only these of the listed methods, else the first listed.
COMPARE_METHODS = ("esd",)
#: ``torchrun --nproc_per_node=N``: 2 processes on the CPU (Gloo), ``--standalone`` (a free port).
NPROC = "2"
#: ``--data-path DIR``: fixture data in the real on-disk format of the command's data set (from
#: ``--config NAME`` or ``--dataset``), built with the data tests' writers, and these extra flags.
DATA_FLAGS = {
    "cifar10": ["--batch-size", "4", "--T", "2"],
    "cifar100": ["--batch-size", "4", "--T", "2"],
    "cifar10-dvs": ["--batch-size", "4", "--T", "2", "--workers", "0"],
    "imagenet": ["--batch-size", "4", "--T", "1", "--workers", "0"],
}
#: ``python examples/X.py`` and ``python benchmarks/X.py``: flags added for small data and few runs.
SCRIPT_FLAGS = {
    "make_digits28_npz.py": ["--train", "300", "--test", "100"],
    "make_shapes_npz.py": ["--train", "200", "--test", "100"],
    "make_glyphs28_npz.py": ["--train", "200", "--test", "100"],
    "spikingjelly_csnn_npz.py": ["--threads", "1"],
    # one seed, one epoch, ESD under 32 only, one job
    "precision_accuracy.py": ["--seeds", "0", "--epochs", "1", "--methods", "esd", "--precisions", "32", "--jobs", "1"],
}
#: Optional packages a block may need: (text in the block, module to import, what to install).
NEEDS = [
    ("spikingjelly.activation_based.model", "spikingjelly>=2", "SpikingJelly 2.0 (ESDSNN_SPIKINGJELLY_PATH=.venv/sj2)"),
    ("nir_exchange", "spikingjelly>=2", "SpikingJelly 2.0 (ESDSNN_SPIKINGJELLY_PATH=.venv/sj2)"),
    ("spikingjelly", "spikingjelly", "SpikingJelly"),
    ("snntorch", "snntorch", "snnTorch"),
    ("nirtorch", "nirtorch", "nirtorch"),
    ("norse", "norse", "Norse"),
    ("import nir", "nir", "nir"),
]
NOT_RUN = "not run by the docs tests:"
EXECUTED = ("python", "bash", "yaml")
NOT_CODE = ("text",)


# ---- blocks ------------------------------------------------------------------------------------
@dataclass
class Block:
    page: str
    line: int
    lang: str
    title: str | None
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def not_run_reason(self) -> str | None:
        if self.title and self.title.startswith(NOT_RUN):
            return self.title[len(NOT_RUN) :].strip()
        return None


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
TITLE = re.compile(r'title="([^"]*)"')


def read_blocks(path: Path, name: str) -> list[Block]:
    """Every fenced block of a Markdown file, dedented to its fence (fences inside list items are
    indented); an unclosed fence is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"{name}:{i + 1}: the fence is never closed")
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : j]]
        title = TITLE.search(info)
        blocks.append(
            Block(name, i + 1, info.split()[0] if info else "", title[1] if title else None, "\n".join(body) + "\n")
        )
        i = j + 1
    return blocks


def fence_problems(blocks: list[Block]) -> list[str]:
    """Blocks that are neither run nor declared not to be code."""
    problems = []
    for block in blocks:
        if block.lang not in EXECUTED + NOT_CODE:
            problems.append(
                f"{block.where}: fence {block.lang or '(no language)'!r}: use python or bash "
                f"(run by the tests) or text (not code)"
            )
        elif block.lang == "yaml" and not block.title:
            problems.append(f'{block.where}: a yaml block needs a file title (title="name.yaml") to be used')
    return problems


# ---- needs -------------------------------------------------------------------------------------
def _spikingjelly_major() -> int | None:
    if importlib.util.find_spec("spikingjelly") is None:
        return None
    from esdsnn.analysis.bench_baseline import spikingjelly_version

    version = spikingjelly_version()
    return int(version.split(".")[0]) if version.split(".")[0].isdigit() else None


def missing_need(code: str) -> str | None:
    """What optional package ``code`` needs and this environment lacks, else None."""
    for text, module, what in NEEDS:
        if text not in code:
            continue
        if module == "spikingjelly>=2":
            major = _spikingjelly_major()
            if major is None or major < 2:
                return what
            return None  # the 2.x zoo also satisfies the plain "spikingjelly" need
        if importlib.util.find_spec(module) is None:
            return what
    return None


def _sibling_module(relative: str):
    path = ROOT / "tests" / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_for_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def zoo_imports(code: str) -> Iterator[None]:
    """SpikingJelly's zoo modules import torchvision for pretrained weights only, and torchvision
    does not import beside this torch: the interop tests' stand-in serves the import."""
    if "spikingjelly.activation_based.model" in code and importlib.util.find_spec("torchvision") is None:
        with _sibling_module("interop/conftest.py").torchvision_stub():
            yield
    else:
        yield


# ---- fixture data for --data-path DIR ----------------------------------------------------------
class Fixtures:
    """Tiny data sets in the formats the paper's runs read, written on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: dict[str, Path] = {}

    def path(self, dataset: str) -> Path:
        if dataset not in self.made:
            folder = self.root / dataset
            folder.mkdir(parents=True)
            getattr(self, "_" + dataset.replace("-", "_"))(folder)
            self.made[dataset] = folder
        return self.made[dataset]

    @staticmethod
    def _cifar10(folder: Path) -> None:  # the archive as downloaded
        cifar = _sibling_module("data/test_cifar.py")
        batches, _ = cifar.write_cifar10(folder / "extracted", per_batch=2, n_test=4)
        cifar.make_targz(batches, folder / "cifar-10-python.tar.gz")

    @staticmethod
    def _cifar100(folder: Path) -> None:  # the extracted folder
        _sibling_module("data/test_cifar.py").write_cifar100(folder, n_train=12, n_test=4)

    @staticmethod
    def _cifar10_dvs(folder: Path) -> None:
        _sibling_module("data/dvs_files.py").write_dataset(folder, per_class=2, n_events=60)

    @staticmethod
    def _imagenet(folder: Path) -> None:
        _sibling_module("data/test_imagenet.py").write_tree(folder, per_class_train=2, per_class_val=1)


# ---- shell commands ----------------------------------------------------------------------------
def shell_commands(code: str) -> list[list[str]]:
    """The commands of a shell block: logical lines split at ``&&``, comments dropped."""
    text = re.sub(r"\\\n", " ", code)
    commands = []
    for line in text.splitlines():
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for token in [*tokens, "&&"]:
            if token == "&&":
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return commands


def _value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _set(args: list[str], flag: str, value: str, add: bool = True) -> list[str]:
    """``args`` with ``flag``'s value replaced (or added at the end when ``add``)."""
    out, found, i = [], False, 0
    while i < len(args):
        if args[i] == flag and i + 1 < len(args):
            out += [flag, value]
            found, i = True, i + 2
        elif args[i].startswith(flag + "="):
            out.append(f"{flag}={value}")
            found, i = True, i + 1
        else:
            out.append(args[i])
            i += 1
    return [*out, flag, value] if add and not found else out


def _dataset_of(args: list[str]) -> str | None:
    config = _value(args, "--config")
    if config:
        name = Path(config).stem
        for dataset in sorted(DATA_FLAGS, key=len, reverse=True):
            if name.startswith(dataset + "_"):
                return dataset
    return _value(args, "--dataset")


def esdsnn_args(args: list[str], fixtures: Fixtures) -> list[str]:
    """A documented ``esdsnn`` command made cheap (see the tables at the top of this file)."""
    command = args[0] if args else ""
    for flag, value in SMALLER.items():
        args = _set(args, flag, value, add=False)
    if command in ("train", "compare"):
        if "--resume" in args:
            args = _set(args, "--epochs", RESUME_EPOCHS, add=False)
        else:
            args = _set(args, "--epochs", EPOCHS)
        args = _set(args, "--threads", "1")
        if "--report" not in args:
            args.append("--no-report")
    if command == "compare" and _value(args, "--methods"):
        listed = _value(args, "--methods").split(",")
        kept = [m for m in listed if m in COMPARE_METHODS] or listed[:1]
        args = _set(args, "--methods", ",".join(kept))
    if command == "bench":
        if _value(args, "--T"):
            args = _set(args, "--T", _value(args, "--T").split(",")[0])
        if _value(args, "--methods"):
            args = _set(args, "--methods", _value(args, "--methods").split(",")[0])
        args = _set(args, "--batch", SMALLER["--batch"])
        if _value(args, "--input-shape") is None and _value(args, "--dataset") is None:
            args += BENCH_INPUT
    if _value(args, "--data-path") == "DIR":
        dataset = _dataset_of(args)
        if dataset not in DATA_FLAGS:
            raise ValueError(f"--data-path DIR: no fixture for data set {dataset!r}")
        args = _set(args, "--data-path", str(fixtures.path(dataset)))
        for flag, value in zip(DATA_FLAGS[dataset][::2], DATA_FLAGS[dataset][1::2]):
            args = _set(args, flag, value)
    return args


@contextlib.contextmanager
def environment(assignments: dict[str, str]) -> Iterator[None]:
    """``NAME=value`` before a command: in ``os.environ`` (and ``PYTHONPATH`` on ``sys.path``) for
    the command's duration."""
    saved = {k: os.environ.get(k) for k in assignments}
    saved_path = list(sys.path)
    os.environ.update(assignments)
    if "PYTHONPATH" in assignments:
        sys.path[:0] = [str(Path(p).resolve()) for p in assignments["PYTHONPATH"].split(os.pathsep)]
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _child(argv: list[str], env: dict[str, str], cwd: Path, where: str) -> None:
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    sys.stdout.write(proc.stdout[-3000:])
    if proc.returncode != 0:
        raise CommandFailed(f"{where}: `{shlex.join(argv)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")


class CommandFailed(Exception):
    pass


def run_command(tokens: list[str], fixtures: Fixtures, where: str) -> str:
    """Run one documented command (after its ``NAME=value`` prefix); returns what ran, or
    ``installation`` for a step CI does itself."""
    env = {}
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
        name, value = tokens.pop(0).split("=", 1)
        env[name] = value
    if "ESDSNN_SPIKINGJELLY_PATH" in env:  # the docs' folder stands for the one this environment has
        env["ESDSNN_SPIKINGJELLY_PATH"] = os.environ.get("ESDSNN_SPIKINGJELLY_PATH", str(fixtures.root / "no-sj2"))
    program, args = Path(tokens[0]).name, tokens[1:]
    if program.startswith("pip") or (program.startswith("python") and args[:2] == ["-m", "venv"]):
        return "installation"
    if program == "esdsnn":
        from esdsnn.cli import main

        args = esdsnn_args(args, fixtures)
        with environment(env):
            code = main(args)
        if code != 0:
            raise CommandFailed(f"{where}: `esdsnn {shlex.join(args)}` exited {code}")
        return "esdsnn " + shlex.join(args)
    if program == "torchrun":
        nproc = [a for a in args if a.startswith("--nproc_per_node")]
        rest = [a for a in args if not a.startswith("--nproc_per_node")]
        if rest[:2] != ["-m", "esdsnn"]:
            raise ValueError(f"{where}: torchrun runs `-m esdsnn ...` in the docs, got {shlex.join(args)}")
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={NPROC}",
            "-m",
            "esdsnn",
            *esdsnn_args(rest[2:], fixtures),
        ]
        _child(argv, env, Path.cwd(), where)
        return f"torchrun ({nproc} -> {NPROC} processes on the CPU)"
    if program.startswith("python"):
        if args[:2] == ["-m", "pytest"]:
            rest = _set(args[2:], "-n", "0", add=False)
            argv = [sys.executable, "-m", "pytest", *rest, "--collect-only", "-qq", "-p", "no:cacheprovider"]
            _child(argv, env, ROOT, where)
            return "pytest (collected)"
        if args and args[0].startswith(("examples/", "benchmarks/")):
            script = ROOT / args[0]
            rest = args[1:]
            for flag, value in SMALLER.items():
                rest = _set(rest, flag, value, add=False)
            rest += SCRIPT_FLAGS.get(script.name, [])
            _child([sys.executable, str(script), *rest], env, Path.cwd(), where)
            return f"python {args[0]}"
    raise ValueError(
        f"{where}: the docs tests do not know how to run `{shlex.join(tokens)}`: run it through "
        f"esdsnn, python examples/... or benchmarks/..., torchrun or pytest, or mark the block not run"
    )


# ---- a page ------------------------------------------------------------------------------------
@dataclass
class PageRun:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)


def run_page(path: Path, name: str, work: Path, log: Callable[[str], None] = print) -> PageRun:
    blocks = read_blocks(path, name)
    problems = fence_problems(blocks)
    if problems:
        raise ValueError("\n".join(problems))
    fixtures = Fixtures(work / ".fixtures")
    namespace: dict = {"__name__": "__docs__"}
    result = PageRun()
    os.chdir(work)
    for block in blocks:
        if block.lang not in EXECUTED:
            continue
        if block.not_run_reason is not None:
            result.not_run.append(f"{block.where}: {block.not_run_reason}")
            continue
        need = missing_need(block.code)
        if need:
            result.skipped.append(f"{block.where}: needs {need}")
            log(f"SKIP {block.where}: needs {need}")
            continue
        start = time.perf_counter()
        if block.title:  # the block is a file
            target = work / block.title
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")
            if block.lang == "python":
                compile(block.code, str(target), "exec")
            what = f"wrote {block.title}"
        elif block.lang == "python":
            with zoo_imports(block.code):
                exec(compile(block.code, block.where, "exec"), namespace)
            what = "python"
        else:
            what = "; ".join(run_command(list(c), fixtures, block.where) for c in shell_commands(block.code))
        result.ran.append(block.where)
        log(f"ok   {block.where} ({time.perf_counter() - start:.1f} s): {what}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the code blocks of one docs page")
    parser.add_argument("page", help="the page, relative to the repository root")
    parser.add_argument("--work", required=True, help="an empty working folder")
    parser.add_argument("--report", help="write what ran, was skipped and not run here (JSON)")
    args = parser.parse_args(argv)
    if os.environ.get("ESDSNN_SPIKINGJELLY_PATH"):  # as tests/conftest.py does for the test process
        os.environ["ESDSNN_SPIKINGJELLY_PATH"] = str(Path(os.environ["ESDSNN_SPIKINGJELLY_PATH"]).resolve())
        sys.path.insert(0, os.environ["ESDSNN_SPIKINGJELLY_PATH"])
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    result = run_page(ROOT / args.page, args.page, work)
    if args.report:
        Path(args.report).write_text(json.dumps(result.__dict__, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

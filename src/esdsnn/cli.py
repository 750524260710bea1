"""Command line: ``esdsnn train``, ``eval``, ``bench``, ``report`` and ``compare``.

The CLI only parses arguments and calls library functions; each sub-command is a pair
``(add_arguments, run)`` in :data:`COMMANDS`. The settings of ``train`` and ``compare`` are one
flag per leaf of the config tree (:mod:`esdsnn.config`). It also wires the pieces that do not
know each other: ``train`` passes the report (:mod:`esdsnn.analysis.report`) to training as its
after-training step. Every user error (an :class:`EsdsnnError` or an argument error) becomes
exactly one line ``esdsnn: error: <message>`` on stderr and exit code 2; Ctrl-C during training
saves a checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any, Optional

from esdsnn.errors import EsdsnnError

PROG = "esdsnn"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """An argument error found by argparse (reported like any other user error)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, no usage dump
        raise UsageError(message)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _pass_name(spiking: bool) -> str:
    return "spike pass" if spiking else "ANN pass"


def _out(line: str) -> None:
    print(line, flush=True)


# ---- train ---------------------------------------------------------------------------------------
_METAVARS = {
    "data_path": "PATH",
    "out": "DIR",
    "teacher_run": "DIR",
    "init_from": "RUN_DIR|FILE",
    "device": "DEVICE",
    "loss_scale": "auto|X",
}


def _metavar(hint: Any) -> str:
    names = {int: "N", float: "X", str: "NAME"}
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if set(args) == {str, float}:
        return "auto|X"
    return names.get(args[0], "VALUE")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="read settings from a YAML file (flags override it)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    _add_config_flags(parser.add_argument_group("settings (each also a key of --config)"))


def _add_config_flags(group: Any, skip: frozenset = frozenset(), helps: Optional[dict[str, str]] = None) -> None:
    """One flag per setting of the config tree (``--data-path`` for ``data_path``); values stay
    strings here and are coerced and checked by TrainConfig, so flags and YAML keys behave the same."""
    from esdsnn.config import RENAMED, choices, config_leaves
    from esdsnn.defaults import default_help

    for old in RENAMED:  # still read, with a notice (esdsnn.config)
        group.add_argument(
            "--" + old.replace("_", "-"), dest=old, type=str, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    for leaf in config_leaves():
        if leaf.name in skip:
            continue
        flag = "--" + leaf.name.replace("_", "-")
        help_text = (helps or {}).get(leaf.name) or leaf.help
        per_dataset = default_help(leaf.name, leaf.default)  # the numbers from the tables they live in
        if per_dataset:
            help_text += f" ({per_dataset})"
        elif "default" not in help_text:
            help_text += f" (default: {leaf.default})"
        if leaf.hint is bool or set(typing.get_args(leaf.hint)) == {bool, type(None)}:  # a switch
            group.add_argument(
                flag, dest=leaf.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            options = choices(leaf.hint)
            metavar = "|".join(options) if options else _METAVARS.get(leaf.name) or _metavar(leaf.hint)
            group.add_argument(
                flag, dest=leaf.name, type=str, default=argparse.SUPPRESS, metavar=metavar, help=help_text
            )


def run_train(args: argparse.Namespace) -> int:
    from esdsnn.analysis.report import report_after_training
    from esdsnn.config import RENAMED, TrainConfig, load_config
    from esdsnn.errors import ConfigError
    from esdsnn.methods import method_spec
    from esdsnn.train import resume_config, train

    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.field_names() or k in RENAMED}
    if args.resume:
        if args.config:
            raise ConfigError("--resume uses the saved config of the run; drop --config")
        config = resume_config(args.resume, overrides)
    else:
        config = load_config(args.config, overrides)
    after = (report_after_training,) if config.run.report else ()
    result = train(config, resume=bool(args.resume), echo=_out, after_training=after)
    s = result.summary
    if result.status == "interrupted":
        # 130 for Ctrl-C, 143 for SIGTERM (128 + the signal), as a shell reports them
        code = 128 + int(result.signal) if result.signal else EXIT_INTERRUPTED
        if result.rank == 0:
            where = (
                f"in epoch {result.epoch + 1} after step {result.step}/{result.steps_per_epoch}"
                if result.step
                else f"after epoch {result.epoch}"
            )
            print(
                f"{PROG}: interrupted {where}; checkpoint saved in "
                f"{result.run_dir / 'last.pt'}; continue with: {PROG} train --resume {result.run_dir}",
                file=sys.stderr,
                flush=True,
            )
        return code
    if result.rank != 0:  # under torchrun only rank 0 reports
        return 0
    best = ""
    if s.get("best_test_acc") is not None:
        on = "validation" if s.get("selected_on") == "val" else "test"
        best = f"; best epoch {s['best_epoch']} (selected on the {on} set): test {s['best_test_acc']:.2%}"
    _out(
        f"test accuracy {s['test_acc']:.2%} ({s['test_correct']}/{s['test_total']}, {_pass_name(method_spec(s['method']).spiking)}) after "
        f"{s['epochs']} epochs in {s['wall_s']:.1f} s{best}; run saved in {result.run_dir}"
    )
    return 0


# ---- eval ----------------------------------------------------------------------------------------
def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="DIR", help="run directory written by esdsnn train")
    parser.add_argument(
        "--checkpoint",
        default="last",
        metavar="last|best|FILE",
        help="which checkpoint to evaluate (default: last, the one summary.json reports)",
    )
    parser.add_argument("--device", default=None, help="device to evaluate on (default: the run's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_eval(args: argparse.Namespace) -> int:
    from esdsnn.errors import ConfigError
    from esdsnn.runs import evaluate

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"threads must be >= 1, got {args.threads}")
    result = evaluate(args.run, checkpoint=args.checkpoint, device=args.device, threads=args.threads)
    if args.json:
        _out(
            json.dumps(
                {
                    "test_acc": result.test_acc,
                    "correct": result.correct,
                    "total": result.total,
                    "checkpoint": str(result.checkpoint),
                    "epoch": result.epoch,
                    "step": result.step,
                    "T": result.T,
                    "still_training": result.still_training,
                }
            )
        )
    else:
        where = f"epoch {result.epoch}" + (f", step {result.step} of epoch {result.epoch + 1}" if result.step else "")
        training = "; the run is still training" if result.still_training else ""
        _out(
            f"test accuracy {result.test_acc:.2%} ({result.correct}/{result.total} correct, "
            f"{_pass_name(result.spiking)}, T={result.T}) from {result.checkpoint} ({where}{training})"
        )
    return 0


# ---- bench ---------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from esdsnn.analysis.bench import BASELINES, DATASET_INPUTS, DEFAULT_ARCH, DEFAULT_METHODS, DEFAULT_TS, NEURON_LOOPS

    parser.add_argument("--arch", default=DEFAULT_ARCH, help=f"model (default: {DEFAULT_ARCH})")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated methods")
    parser.add_argument(
        "--baseline",
        choices=sorted(BASELINES),
        default=None,
        help="also time another framework's BPTT on the same network (spikingjelly; "
        "ESDSNN_SPIKINGJELLY_PATH=DIR puts a separate install first)",
    )
    parser.add_argument(
        "--neurons",
        choices=list(NEURON_LOOPS),
        default="eager",
        help="esdsnn's neuron loops: eager, compiled (torch.compile, as train --compile) or both",
    )
    parser.add_argument(
        "--precision",
        default="32",
        metavar="P1,P2,...",
        help="precision(s) to measure each configuration under, as train --precision: 32, bf16-mixed, "
        "16-mixed (CUDA); the baseline runs under the same autocast (default: 32)",
    )
    for old in ("amp", "spike_dtype"):  # the old flags, read with a notice (as train reads them)
        parser.add_argument("--" + old.replace("_", "-"), dest=old, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--T",
        dest="Ts",
        type=_int_list,
        default=list(DEFAULT_TS),
        metavar="T1,T2,...",
        help="time steps to measure (default: 1,2,4,6,8)",
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 32 on CPU, 128 on CUDA)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads, recorded with the figures (default: 1)"
    )
    parser.add_argument(
        "--dataset",
        choices=list(DATASET_INPUTS),
        default=None,
        help="take the input shape and classes of this data set (default: the one the arch is for)",
    )
    parser.add_argument(
        "--input-shape",
        type=_int_list,
        default=None,
        metavar="C,H,W",
        help="input shape (default: the data set's, e.g. 1,8,8 for digits_resnet, 3,32,32 for resnet18)",
    )
    parser.add_argument("--num-classes", type=int, default=None, help="classes (default: the data set's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per configuration; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="cap on one configuration's worker; a configuration over it is a failed row (default: none)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where bench.json, bench.md and bench.png go (default: a new bench/<UTC time> folder)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the benchmark files already in --out")
    parser.add_argument(
        "--loaders",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also measure the CIFAR and CIFAR10-DVS input pipelines (images/s)",
    )
    parser.add_argument(
        "--steps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure training steps (--no-steps --loaders: input pipelines only)",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def run_bench(args: argparse.Namespace) -> int:
    from esdsnn.analysis import bench, pipeline_bench
    from esdsnn.analysis.bench_report import bench_markdown
    from esdsnn.atomic import write_json_atomic
    from esdsnn.errors import ConfigError

    if args.threads < 1:
        raise ConfigError(f"threads must be >= 1, got {args.threads}")
    if args.input_shape is not None and len(args.input_shape) != 3:
        raise ConfigError(f"--input-shape must be C,H,W, got {args.input_shape}")
    if not (args.steps or args.loaders):
        raise ConfigError("nothing to measure: --no-steps needs --loaders")
    precisions = _bench_precisions(args)
    out = bench.prepare_out_dir(args.out, args.overwrite)
    if args.steps:
        records = bench.run_bench(
            arch=args.arch,
            methods=[m for m in args.methods.split(",") if m],
            Ts=args.Ts,
            batch=args.batch,
            threads=args.threads,
            input_shape=args.input_shape,
            num_classes=args.num_classes,
            dataset=args.dataset,
            baseline=args.baseline,
            neurons=args.neurons,
            precisions=precisions,
            repeats=args.repeats,
            warmup=args.warmup,
            device=args.device,
            out_dir=out,
            progress=args.progress,
            timeout_s=args.timeout,
        )
        _out(bench_markdown(records))
    if args.loaders:
        device = args.device or ("cuda" if _cuda() else "cpu")
        loaders = pipeline_bench.measure_loaders(device=device, threads=args.threads)
        write_json_atomic(out / pipeline_bench.LOADERS_JSON, loaders)
        _out(pipeline_bench.loaders_markdown(loaders))
    _out(f"results in {out}")
    return 0


def _bench_precisions(args: argparse.Namespace) -> list[str]:
    """``--precision`` as a list; an old ``--amp``/``--spike-dtype`` is read as train reads it."""
    from esdsnn.config import TrainConfig

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    old = {k: getattr(args, k) for k in ("amp", "spike_dtype") if getattr(args, k) is not None}
    if old:
        read = TrainConfig.coerce_values(old, source="the command line").get("precision", "32")
        precisions = [read] if args.precision == "32" else precisions
    return precisions


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---- report --------------------------------------------------------------------------------------
def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="DIR", help="run directory written by esdsnn train")
    parser.add_argument("--checkpoint", default="last", metavar="last|best|FILE")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)


def run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from esdsnn.analysis.report import flagged_layers, report_run

    figures = report_run(args.run, checkpoint=args.checkpoint, device=args.device, threads=args.threads)
    _out(
        f"average firing rate {figures['avg_firing_rate']:.4f}; energy {figures['energy_mj_per_sample']:.4g} mJ/sample "
        f"(an estimate, 45 nm); report in {Path(args.run) / 'report.md'}"
    )
    flagged = flagged_layers(args.run)
    if flagged:
        _out(f"warning: {flagged}; see {Path(args.run) / 'report.md'}")
    return 0


# ---- export --------------------------------------------------------------------------------------
def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="DIR", help="run directory written by esdsnn train")
    parser.add_argument("--format", default="nir", choices=["nir"], help="the format (NIR, for neuromorphic hardware)")
    parser.add_argument("--out", required=True, metavar="FILE.nir", help="the file to write")
    parser.add_argument("--checkpoint", default="last", metavar="last|best|FILE")


def run_export(args: argparse.Namespace) -> int:
    from esdsnn.interop.nir import write_nir
    from esdsnn.runs import load_run

    run = load_run(args.run, checkpoint=args.checkpoint, device="cpu")
    graph = write_nir(run.model.eval(), run.input_shape, args.out)
    _out(
        f"{len(graph.nodes)} NIR nodes, {len(graph.edges)} edges (BatchNorm folded; readout: the mean over "
        f"T={run.steps} steps) written to {args.out}"
    )
    return 0


# ---- compare -------------------------------------------------------------------------------------
# Set per run by compare itself (the run directory, the method, the kd teacher) or fixed (no bars).
_COMPARE_SKIP = ("method", "out", "teacher_run", "progress")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    from esdsnn.compare import DEFAULT_METHODS, DEFAULT_SEEDS

    parser.add_argument("--config", metavar="FILE.yaml", help="shared settings from a YAML file (flags override it)")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        metavar="M1,M2,...",
        help=f"methods to compare (default: {','.join(DEFAULT_METHODS)}); a distilling method (kd) also trains its teacher per seed",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=DEFAULT_SEEDS,
        metavar="N",
        help=f"runs per method, with seeds --seed + 0..N-1 (default: {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--out",
        default="runs/compare",
        metavar="DIR",
        help="folder of the runs (DIR/<method>/seed-<seed>/) and of compare.md/.csv/.png (default: runs/compare)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain (deleting them) runs in DIR whose settings differ; without it they are an error",
    )
    _add_config_flags(
        parser.add_argument_group("settings shared by all runs (each also a key of --config)"),
        skip=frozenset(_COMPARE_SKIP),
        helps={"seed": "base seed: run k of each method uses seed + k"},
    )


def run_compare(args: argparse.Namespace) -> int:
    from esdsnn.compare import base_config, parse_methods, run_comparison
    from esdsnn.config import TrainConfig
    from esdsnn.errors import ConfigError

    methods = parse_methods(args.methods)
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.field_names() and k not in _COMPARE_SKIP}
    result = run_comparison(
        base_config(args.config, overrides), methods, args.seeds, args.out, echo=_out, overwrite=args.overwrite
    )
    _out("")
    _out(result.markdown.rstrip("\n"))
    _out(f"tables and figure in {result.out} ({', '.join(p.name for p in result.files.values())})")
    return 0


# ---- configs, methods ----------------------------------------------------------------------------
def add_configs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="print this ready config (default: list them all)")


def run_configs(args: argparse.Namespace) -> int:
    from esdsnn.catalog import config_text, configs_table

    _out((config_text(args.name) if args.name else configs_table()).rstrip("\n"))
    return 0


def add_methods_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="print this method's settings and defaults (default: list them all)")


def run_methods(args: argparse.Namespace) -> int:
    from esdsnn.catalog import method_text, methods_table

    _out((method_text(args.name) if args.name else methods_table()).rstrip("\n"))
    return 0


# ---- entry point ---------------------------------------------------------------------------------
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {
    "train": ("train a spiking network (default: ESD on the bundled digits)", add_train_arguments, run_train),
    "eval": ("reload a run's checkpoint and print its test accuracy", add_eval_arguments, run_eval),
    "bench": (
        "time and peak memory of a training step against T; input-pipeline throughput",
        add_bench_arguments,
        run_bench,
    ),
    "report": ("firing rates, SOPs, energy estimate and plots of a saved run", add_report_arguments, run_report),
    "compare": (
        "train several methods x seeds and tabulate accuracy, time, memory, firing",
        add_compare_arguments,
        run_compare,
    ),
    "export": ("write a trained run's model to a file for other tools (NIR)", add_export_arguments, run_export),
    "configs": (
        "list the paper's ready configs (with the paper's top-1), or print one",
        add_configs_arguments,
        run_configs,
    ),
    "methods": ("list the training methods, or print one's settings and defaults", add_methods_arguments, run_methods),
}


def build_parser() -> argparse.ArgumentParser:
    from esdsnn import __version__

    parser = _Parser(prog=PROG, description="Train spiking neural networks with RateBP and ESD.", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False))
    return parser


def _os_error(exc: OSError) -> str:
    """``cannot access /x/y: Read-only file system; ...`` instead of ``[Errno 30] ...``; a full disk
    says so. (Training names its run directory and the command that continues it itself:
    :mod:`esdsnn.train.failures`.)"""
    import errno

    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or _one_line(str(exc))
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"no space left on the device{' of' + where if where else ''} ({reason}); free some space and run the command again"
    return (
        f"cannot access{where}: {reason}; check that the folder exists and is writable, or choose another "
        f"folder (--out)"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"choose a command: {', '.join(COMMANDS)} (see {PROG} --help)")
        return COMMANDS[args.command][2](args)
    except (EsdsnnError, UsageError) as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except OSError as exc:  # e.g. a folder that cannot be written
        print(f"{PROG}: error: {_os_error(exc)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except (RuntimeError, MemoryError) as exc:  # training names its own fix (esdsnn.train.failures)
        from esdsnn.errors import brief, out_of_memory

        if not out_of_memory(exc):
            raise
        print(
            f"{PROG}: error: out of memory ({brief(exc, 160)}); use a smaller batch or T, or another --device",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

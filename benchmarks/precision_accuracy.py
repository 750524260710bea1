"""Test accuracy under ``--precision 32`` and ``bf16-mixed``, over seeds, for ``esd`` and ``bptt``.

Each (data set, method, precision, seed) is one ordinary ``esdsnn train`` run in its own folder;
the table is built from the runs' ``summary.json`` files only (a finished run is not trained
again, so an interrupted sweep continues where it stopped). Accuracy does not depend on the
machine's load, so runs go ``--jobs`` at a time, one thread each.

    python benchmarks/precision_accuracy.py --out runs/precision-accuracy \\
        --data digits --data npz:runs/glyphs28.npz --data npz:runs/shapes32.npz --epochs 4

``--data NAME`` is a data set name (``digits``) or ``npz:FILE``; the other settings are esdsnn's
defaults for that data (sized to it for npz), with ``--epochs`` and ``--T`` as given. Writes
``precision_accuracy.md`` and ``.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRECISIONS = ("32", "bf16-mixed")
METHODS = ("esd", "bptt")


def run_dir(out: Path, data: str, method: str, precision: str, seed: int) -> Path:
    name = data.replace("npz:", "").replace("/", "_").replace(".npz", "")
    return out / name / f"{method}-{precision}-seed{seed}"


def train(data: str, method: str, precision: str, seed: int, args: argparse.Namespace) -> Path:
    folder = run_dir(args.out, data, method, precision, seed)
    if (folder / "summary.json").is_file() and json.loads((folder / "summary.json").read_text()).get(
        "status"
    ) == "completed":
        return folder
    dataset = ["--dataset", "npz", "--data-path", data[4:]] if data.startswith("npz:") else ["--dataset", data]
    cmd = [
        sys.executable,
        "-m",
        "esdsnn",
        "train",
        *dataset,
        "--method",
        method,
        "--precision",
        precision,
        "--seed",
        str(seed),
        "--epochs",
        str(args.epochs),
        "--T",
        str(args.T),
        "--threads",
        "1",
        "--no-progress",
        "--no-report",
        "--out",
        str(folder),
    ]
    if folder.exists():
        cmd = [sys.executable, "-m", "esdsnn", "train", "--resume", str(folder), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return folder


def table(
    out: Path, datas: list[str], seeds: list[int], methods=METHODS, precisions=PRECISIONS
) -> tuple[str, list[dict]]:
    records, lines = [], []
    lines.append("| data set | method | precision | test accuracy (mean ± std) | per seed | precision native |")
    lines.append("|---|---|---|---|---|---|")
    for data in datas:
        for method in methods:
            for precision in precisions:
                accs, native, device = [], None, None
                for seed in seeds:
                    summary_path = run_dir(out, data, method, precision, seed) / "summary.json"
                    if not summary_path.is_file():
                        continue
                    s = json.loads(summary_path.read_text())
                    accs.append(100 * s["test_acc"])
                    native = s.get("precision_native")
                    device = s.get("cpu_capability") or device
                    records.append(
                        {
                            "data": data,
                            "method": method,
                            "precision": precision,
                            "seed": seed,
                            "test_acc": s["test_acc"],
                            "precision_native": native,
                            "arch": s.get("arch"),
                            "epochs": s.get("epochs"),
                            "T": s.get("T"),
                            "cpu_capability": s.get("cpu_capability"),
                            "wall_s": s.get("wall_s"),
                        }
                    )
                if not accs:
                    continue
                std = statistics.stdev(accs) if len(accs) > 1 else 0.0
                lines.append(
                    f"| {data} | {method} | {precision} | {statistics.mean(accs):.2f} ± {std:.2f} % | "
                    f"{', '.join(f'{a:.2f}' for a in accs)} | {native} |"
                )
    return "\n".join(lines) + "\n", records


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", required=True, help="digits, or npz:FILE (repeat for several)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: esd,bptt)")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated (default: 32,bf16-mixed)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/precision-accuracy"))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods, precisions = args.methods.split(","), args.precisions.split(",")
    jobs = [(d, m, pr, s) for d in args.data for m in methods for pr in precisions for s in seeds]
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for done in concurrent.futures.as_completed([pool.submit(train, *j, args) for j in jobs]):
            print(f"[{time.time() - started:7.0f} s] {done.result()}", flush=True)
    markdown, records = table(args.out, args.data, seeds, methods, precisions)
    capabilities = sorted({str(r["cpu_capability"]) for r in records})
    markdown += f"\nCPU capability of the runs: {', '.join(capabilities)}\n"
    (args.out / "precision_accuracy.md").write_text(markdown)
    (args.out / "precision_accuracy.json").write_text(json.dumps(records, indent=1))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

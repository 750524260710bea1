"""The files of a benchmark, built from its saved records only: ``bench.md`` (the table) and
``bench.png`` (the plot). With baseline records each row also shows its time and memory as a
multiple of the baseline's at the same T and precision."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from esdsnn.atomic import write_text_atomic

from .bench_worker import BASELINE_METHODS

BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
BENCH_PNG = "bench.png"


def _mib(b: Optional[float]) -> str:
    return "—" if b is None else f"{b / 2**20:.1f}"


def _secs(s: Optional[float]) -> str:
    return "—" if s is None else f"{s:.4f}" if s < 1 else f"{s:.3f}"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return "—" if not a or not b else f"{a / b:.2f}"


def _label(record: dict, with_precision: bool = False) -> str:
    """A record's method, marked when its neuron loops were compiled (and with its precision
    when a benchmark holds several)."""
    label = record["method"] + (" (compiled)" if record.get("neurons") == "compiled" else "")
    return label + (f" [{record.get('precision', '32')}]" if with_precision else "")


def _precisions(records: Sequence[dict]) -> list[str]:
    return sorted({r.get("precision", "32") for r in records})


def _native_note(records: Sequence[dict]) -> str:
    """Which precisions the device ran natively (emulated bfloat16 is many times slower)."""
    seen = {(r.get("precision", "32"), r.get("precision_native")) for r in records if "error" not in r}
    parts = [f"{p}{'' if native is not False else ' (emulated on this device)'}" for p, native in sorted(seen, key=str)]
    return ", ".join(parts)


def bench_markdown(records: Sequence[dict]) -> str:
    """The Markdown table of ``bench.md``, from saved records only; with baseline records, each
    row's time and memory as a multiple of the baseline's at the same T."""
    if not records:
        return "# Training-step benchmark\n\nno records\n"
    r0 = next((r for r in records if "error" not in r), records[0])
    shape = "×".join(str(s) for s in r0.get("input_shape") or [])
    baseline = {
        (r["T"], r.get("precision", "32")): r for r in records if r["method"] in BASELINE_METHODS and "error" not in r
    }
    several = len(_precisions(records)) > 1
    versions = sorted({r["baseline"] for r in baseline.values() if r.get("baseline")})
    lines = [
        "# Training-step benchmark",
        "",
        f"`{r0['arch']}`, input {shape}{' event frames' if r0.get('event') else ''}, {r0.get('num_classes')} classes, "
        f"batch {r0['batch']}, device {r0['device']} ({r0.get('device_name')}"
        f"{', ' + r0['cpu_capability'] if r0['device'] == 'cpu' and r0.get('cpu_capability') else ''}), "
        f"{r0['threads']} thread(s), torch {r0['torch']}, precision {_native_note(records) or '32'}. One step = "
        f"forward + backward + SGD step on random data; time = median (and minimum) of {r0.get('repeats')} step(s) "
        f"after {r0.get('warmup')} warm-up step(s). Peak memory: each "
        f"configuration in a fresh process, peak of the timed steps above the baseline after warm-up "
        f"({r0.get('mem_method')}). RateBP limit = T no-grad forwards at T = 1 + one training step at T = 1 "
        "(RateBP-based methods)."
        + (f" Baseline: {', '.join(versions)} BPTT on the same network (`spikingjelly-bptt`)." if versions else ""),
        "",
    ]
    head = "| method | T | step (s) | min (s) | RateBP limit (s) | step / limit | peak memory (MiB) |"
    rule = "|---|---|---|---|---|---|---|"
    if baseline:
        head, rule = head + " time / SJ BPTT | memory / SJ BPTT |", rule + "---|---|"
    lines += [head, rule]
    for r in records:
        name = _label(r, several)
        if "error" in r:
            lines.append(f"| {name} | {r['T']} | failed: {r['error']} | | | | |" + (" | |" if baseline else ""))
            continue
        row = (
            f"| {name} | {r['T']} | {_secs(r['step_s'])} | {_secs(r.get('step_min_s'))} | {_secs(r.get('limit_s'))} | "
            f"{_ratio(r['step_s'], r.get('limit_s'))} | {_mib(r['peak_mem_bytes'])} |"
        )
        if baseline:
            b = baseline.get((r["T"], r.get("precision", "32")), {})
            row += f" {_ratio(r['step_s'], b.get('step_s'))} | {_ratio(r['peak_mem_bytes'], b.get('peak_mem_bytes'))} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def write_bench_files(records: Optional[Sequence[dict]], out_dir: str | Path) -> list[dict]:
    """Write ``bench.md`` and ``bench.png`` into ``out_dir`` from ``records`` (``None``: read the
    saved ``bench.json`` there); returns the records. The plot names the baseline's version."""
    from .plots import plot_bench

    out = Path(out_dir)
    if records is None:
        records = json.loads((out / BENCH_JSON).read_text())
    records = list(records)
    write_text_atomic(out / BENCH_MD, bench_markdown(records))
    several = len(_precisions(records)) > 1
    labelled = [
        {
            **r,
            "method": (
                f"{r['method']} ({r['baseline']})" + (f" [{r.get('precision', '32')}]" if several else "")
                if r.get("baseline")
                else _label(r, several)
            ),
        }
        for r in records
    ]
    plot_bench(labelled, out / BENCH_PNG)
    return records


__all__ = ["bench_markdown", "write_bench_files"]

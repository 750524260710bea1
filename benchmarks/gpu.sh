#!/usr/bin/env bash
# The GPU run, for a session that is lent a GPU (see docs/performance.md, "On a GPU"): the CUDA
# tests, then the training-step benchmark -- precision 32 and bf16-mixed, BPTT and ESD, T = 2, 4,
# 6, 8, and SpikingJelly's BPTT on the same network under the same precision -- with its tables
# and plot, all in one folder. Sized to end within 8 minutes on an H200 (each benchmark
# configuration in a fresh process, capped; what finished is tabulated even if the cap cuts it).
#
#   bash benchmarks/gpu.sh [OUT_DIR]          (default: $OUT when set, else bench/gpu-<UTC time>)
#
# Settings (environment): PYTHON (python3), DEVICE (cuda), ARCH (resnet18), BATCH (128),
# TS (2,4,6,8), METHODS (bptt,esd), PRECISIONS (32,bf16-mixed), BASELINE (spikingjelly; empty for
# none), REPEATS (5), WARMUP (2), TESTS (1: run `pytest -m cuda` first), BUDGET_S (420: the cap of
# the benchmark), CONFIG_TIMEOUT_S (120: the cap of one configuration).
#
# Packages the GPU machine lacks travel as wheels in .whl/ (named in the run's carry; made here with
# `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
# -d .whl spikingjelly==2.0.0 loguru` and `pip download --no-deps -d .whl nir`): they are installed
# into /tmp/site first. The CPU parts of this script run in the test suite (tests/test_gpu_script.py).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT_DIR=${1:-${OUT:-bench/gpu-$(date -u +%Y%m%d-%H%M%S)}}
DEVICE=${DEVICE:-cuda}
ARCH=${ARCH:-resnet18}
BATCH=${BATCH:-128}
TS=${TS:-2,4,6,8}
METHODS=${METHODS:-bptt,esd}
PRECISIONS=${PRECISIONS:-32,bf16-mixed}
BASELINE=${BASELINE-spikingjelly}
REPEATS=${REPEATS:-5}
WARMUP=${WARMUP:-2}
TESTS=${TESTS:-1}
BUDGET_S=${BUDGET_S:-420}
CONFIG_TIMEOUT_S=${CONFIG_TIMEOUT_S:-120}

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu.sh: installing the wheels in .whl failed" >&2; exit 2; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR" || exit 2
echo "gpu.sh: results in $OUT_DIR"

"$PY" - "$OUT_DIR/device.json" <<'EOF'
import json, platform, sys
import torch
from esdsnn.runtime.precision import cpu_capability
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(), "cpu_capability": cpu_capability()}
if torch.cuda.is_available():
    info.update(device_name=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                bf16=torch.cuda.is_bf16_supported(), memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
json.dump(info, open(sys.argv[1], "w"), indent=1)
print("gpu.sh: device", json.dumps(info))
EOF

status=0
if [ "$TESTS" = "1" ]; then
  "$PY" -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$OUT_DIR/cuda-tests.log"
  tests_rc=${PIPESTATUS[0]}
  [ "$tests_rc" = "0" ] || { echo "gpu.sh: the CUDA tests failed (exit $tests_rc): see $OUT_DIR/cuda-tests.log"; status=1; }
fi

timeout "$BUDGET_S" "$PY" -m esdsnn bench --device "$DEVICE" --arch "$ARCH" --batch "$BATCH" --T "$TS" \
  --methods "$METHODS" --precision "$PRECISIONS" ${BASELINE:+--baseline "$BASELINE"} --repeats "$REPEATS" \
  --warmup "$WARMUP" --timeout "$CONFIG_TIMEOUT_S" --out "$OUT_DIR/bench" --overwrite --no-progress \
  2>&1 | tee "$OUT_DIR/bench.log"
bench_rc=${PIPESTATUS[0]}
if [ "$bench_rc" != "0" ]; then
  echo "gpu.sh: the benchmark ended with exit $bench_rc (124: cut at BUDGET_S=$BUDGET_S s); tabulating what finished"
  status=1
fi
# the tables from the saved records (also when the cap cut the benchmark short)
"$PY" -c "import sys; from esdsnn.analysis.bench_report import write_bench_files; write_bench_files(None, sys.argv[1])" \
  "$OUT_DIR/bench" && cat "$OUT_DIR/bench/bench.md"
exit $status

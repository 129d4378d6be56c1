#!/usr/bin/env bash
# The GPU check in one command (make gpu-check). On a machine with a CUDA GPU and only this
# repository it installs what dltk needs beside the machine's own Python, torch and CUDA, runs the
# GPU tests (pytest -m gpu), compiles every zoo model for the local GPU with dlight's default
# schedules and checks it against ONNX Runtime's CUDA provider and PyTorch on CUDA, and times
# torch, torch.compile, ort (CUDA provider) and tvm at batch 1 and 32.
#
#   benchmarks/gpu_check.sh [--wheels DIR] [--out DIR]
#     --wheels DIR   install from the wheels in DIR instead of PyPI (a machine without network;
#                    fill DIR on one with network: benchmarks/gpu_check.sh --download-wheels DIR)
#     --out DIR      also copy the result files into DIR (flat)
#
# Writes benchmarks/results/<gpu>-<cores>c/: bench.json, bench.csv, RESULTS.md, latency.png
# (torch, ort, tvm), torch-compile.json, parity.json, gpu-check.md (step table, parity, latency)
# and gpu-check.log (every step's output). Each step runs under its own time limit and whatever
# the others did, so a failing step leaves the others' results; the table at the end says which
# failed. The limits add up to under 10 minutes.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
WORK=$ROOT/build/gpu-check
SITE=$WORK/site
WHEELS=""
OUT_DIR=""
# Pins for the machine's Python; torch stays the machine's own CUDA build.
PINS="onnxruntime-gpu==1.31.1 apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0 onnxslim==0.1.98"

while [ $# -gt 0 ]; do
    case $1 in
        --wheels) WHEELS=$(realpath "$2"); shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        --download-wheels)
            mkdir -p "$2" && exec "$PYTHON" -m pip download --only-binary=:all: --python-version 3.12 \
                --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
                -d "$2" $PINS ;;
        *) echo "usage: $0 [--wheels DIR] [--out DIR] | --download-wheels DIR" >&2; exit 2 ;;
    esac
done

mkdir -p "$WORK/logs"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
SLUG=$(echo "${GPU_NAME:-no-gpu}" | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-|-$//g')-$(nproc)c
RESULTS=$ROOT/benchmarks/results/$SLUG
[ -n "$GPU_NAME" ] || RESULTS=$WORK/results  # nothing for benchmarks/results/ from a machine without a GPU
STATUS=$WORK/status.tsv
: > "$STATUS"
export DLTK_CACHE_DIR=$WORK/cache PYTHONUNBUFFERED=1 PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHON SITE WHEELS PINS
echo "gpu check: results in ${RESULTS#$ROOT/}/, logs in build/gpu-check/logs/"

# step NAME SECONDS COMMAND...: run it under a time limit, log it, record its status; never stop the script.
step() {
    local name=$1 limit=$2 start rc note
    shift 2
    echo "== $name (limit ${limit}s): $*"
    start=$(date +%s)
    if declare -F "$1" > /dev/null; then  # a function of this script: timeout runs programs only
        timeout --kill-after=10 "$limit" bash -c "$(declare -f "$1"); $*" > "$WORK/logs/$name.log" 2>&1
    else
        timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
    fi
    rc=$?
    tail -n 15 "$WORK/logs/$name.log" | sed 's/^/   /'
    note=$(grep -v '^\s*$' "$WORK/logs/$name.log" | tail -n 1 | cut -c1-150 | tr '\t|' '  ')
    case $rc in
        0) echo -e "$name\tok\t$(( $(date +%s) - start ))\t" >> "$STATUS" ;;
        124|137) echo -e "$name\ttimed out\t$(( $(date +%s) - start ))\tover ${limit} s" >> "$STATUS" ;;
        *) echo -e "$name\tfailed ($rc)\t$(( $(date +%s) - start ))\t$note" >> "$STATUS" ;;
    esac
    return $rc
}

skip() { echo -e "$1\tskipped\t0\t$2" >> "$STATUS"; }

install() {
    local source=()
    [ -n "$WHEELS" ] && source=(--no-index --find-links "$WHEELS")
    # Into a directory of its own on PYTHONPATH, beside the machine's packages (torch with CUDA, numpy,
    # onnx, ...), which stay as they are: --no-deps, and onnxruntime-gpu shadows a CPU onnxruntime.
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --upgrade --target "$SITE" "${source[@]}" $PINS \
        || return 1
    "$PYTHON" - <<'PYEOF'
import onnxruntime, onnxslim, torch, tvm
from importlib.metadata import version
print(f"torch {torch.__version__} (cuda {torch.version.cuda}), apache-tvm {version('apache-tvm')}, "
      f"onnxruntime-gpu {version('onnxruntime-gpu')}: providers {onnxruntime.get_available_providers()}")
assert "CUDAExecutionProvider" in onnxruntime.get_available_providers(), "onnxruntime without its CUDA provider"
PYEOF
}

environment() {
    nvidia-smi || echo "nvidia-smi: not found or failed"
    "$PYTHON" --version && "$PYTHON" -c 'import sys; print(sys.executable)'
    echo "cores: $(nproc)"; uptime
}

PY=$PYTHON
step environment 30 environment
step install 240 install
if step gpu 60 "$PY" benchmarks/gpu_check.py gpu; then
    step pytest-gpu 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/toolkit/test_gpu.py
    step parity 180 "$PY" benchmarks/gpu_check.py parity -o "$WORK/parity.json"
    BENCH=(--device cuda --batch 1,32 --warmup 10 --min-iterations 50 --min-seconds 0.2 --repeats 2)
    step bench 150 "$PY" -m toolkit bench --zoo "${BENCH[@]}" --backend torch,ort,tvm -o "$WORK/bench" \
        --note "benchmarks/gpu_check.sh; torch.compile in torch-compile.json"
    step bench-torch-compile 150 "$PY" -m toolkit bench --zoo "${BENCH[@]}" --backend torch.compile -o "$WORK/bench-compile"
else
    echo "no CUDA GPU here (see the gpu step above): the steps that need one are skipped"
    for name in pytest-gpu parity bench bench-torch-compile; do skip $name "no CUDA GPU"; done
fi

# Collect what the steps wrote (each file only if its step got that far), then the summary and the log.
mkdir -p "$RESULTS"
for file in bench.json bench.csv RESULTS.md latency.png; do
    [ -f "$WORK/bench/$file" ] && cp "$WORK/bench/$file" "$RESULTS/"
done
[ -f "$WORK/bench-compile/bench.json" ] && cp "$WORK/bench-compile/bench.json" "$RESULTS/torch-compile.json"
[ -f "$WORK/parity.json" ] && cp "$WORK/parity.json" "$RESULTS/"
for name in environment install gpu pytest-gpu parity bench bench-torch-compile; do
    [ -f "$WORK/logs/$name.log" ] && { echo "===== $name"; cat "$WORK/logs/$name.log"; }
done > "$RESULTS/gpu-check.log"
"$PY" benchmarks/gpu_check.py summary "$RESULTS" "$STATUS" > /dev/null || cp "$STATUS" "$RESULTS/gpu-check.md"
if [ -n "$OUT_DIR" ]; then mkdir -p "$OUT_DIR" && cp "$RESULTS"/* "$OUT_DIR/"; fi

echo; echo "step                 status        seconds  note"
while IFS=$'\t' read -r name state seconds note; do
    printf '%-20s %-13s %7s  %s\n' "$name" "$state" "$seconds" "$note"
done < "$STATUS"
echo "results: ${RESULTS#$ROOT/}/ ($(ls "$RESULTS" | tr '\n' ' '))"
! grep -qv $'\tok\t' "$STATUS"

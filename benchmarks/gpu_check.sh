#!/usr/bin/env bash
# The whole bench_compile suite on one CUDA GPU in one go, for a short lent-GPU window (about 5 minutes).
#
# Order: the no-host-sync check first (seconds), then the additive cells (the goal figures), self-attention, and
# the G2P training step; every cell is written to the JSON file as soon as it is measured, so if the time limit
# cuts the run short, what was measured is kept. Results go to $OUT if it is set (the device tool's output
# folder), else to ./gpu_results:
#   bench_compile_cuda.json  run record and every row      bench_compile_cuda.md  the printed tables
#   env.txt                  GPU, driver, versions         exit_code.txt          the suite's exit status
#
# Usage (repository root): bash benchmarks/gpu_check.sh [extra bench_compile arguments, e.g. --quick]
# BENCH_LIMIT_S (default 280) bounds the suite's wall time.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu_results}"
mkdir -p "$OUT_DIR"
# attnlab from this checkout even where it is not installed; benchmarks/ as a package from the root.
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=torch
PYTHON="${PYTHON:-python}"

{
  date
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi failed"
  "$PYTHON" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', \
torch.version.cuda, 'available', torch.cuda.is_available())"
  "$PYTHON" -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1
  "$PYTHON" -c "import keras; print('keras', keras.__version__)" 2>&1 | tail -1
} >"$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

if ! "$PYTHON" -c "import torch; raise SystemExit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible to torch; nothing to run" | tee -a "$OUT_DIR/env.txt"
  echo 2 >"$OUT_DIR/exit_code.txt"
  exit 2
fi

timeout --signal=INT --kill-after=20 "${BENCH_LIMIT_S:-280}" \
  "$PYTHON" -m benchmarks.bench_compile --device cuda --sections sync additive self g2p \
  --out "$OUT_DIR/bench_compile_cuda.json" "$@" 2>&1 | tee "$OUT_DIR/bench_compile_cuda.md"
status=${PIPESTATUS[0]}
echo "$status" >"$OUT_DIR/exit_code.txt"
echo "exit status $status (124: stopped at the time limit; the JSON keeps every finished cell)"
exit "$status"

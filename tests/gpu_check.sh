#!/usr/bin/env bash
# The device check in one call (docs/development.md, "The GPU check"): the CUDA tests,
# then every GPU figure of the speed table, within GPU_CHECK_S seconds in all (default 420:
# a device call of at most 8 minutes leaves a minute to spare).
#
#   bash tests/gpu_check.sh                     # on the device machine, from the repository root
#   GPU_CHECK_S=200 bash tests/gpu_check.sh --quick    # a rerun after a fix: the 10-qubit rows
#   PYTHON=.venv/bin/python bash tests/gpu_check.sh    # without CUDA: a dry run on the CPU
#
# Everything goes to $OUT (the device tool's folder; ./gpu_check without it), written as it
# runs, so that a call cut short still brings back its logs:
#   env.txt            GPU, driver, torch, Python, the code's revision
#   test_gpu.log       python3 -m pytest -m gpu tests/test_gpu.py
#   benchmark_gpu.log  python3 -m model.benchmark_gpu (its last lines: the README table)
#   benchmark_gpu.json the same rows as JSON
# Without CUDA the tests skip (reason: needs a CUDA GPU) and the benchmark makes a short CPU
# smoke run of its 10-qubit rows (no figures for the README). Exit status: the first of the
# two steps that failed, else 0. Extra arguments go to model.benchmark_gpu.
set -u -o pipefail

START=$(date +%s)
TOTAL=${GPU_CHECK_S:-420}
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}

left() { echo $((START + TOTAL - $(date +%s))); }

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    CUDA=1
else
    CUDA=0
fi

{
    date -u '+%Y-%m-%dT%H:%M:%SZ'
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c 'import platform, torch; print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    echo "revision $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "budget ${TOTAL} s"
} 2>&1 | tee "$OUT/env.txt"

# 1. the CUDA tests: CUDA against the CPU, graphs against eager, the engine, the fallback
echo "== python3 -m pytest -m gpu tests/test_gpu.py ($(left) s left)"
timeout --signal=INT --kill-after=10 $(($(left) / 3)) \
    "$PY" -m pytest -m gpu tests/test_gpu.py -rs -p no:cacheprovider 2>&1 | tee "$OUT/test_gpu.log"
TESTS=${PIPESTATUS[0]}

# 2. the benchmark: its own budget stops new measurements; the last epoch and the table
# need up to a minute more on an H100 (model/benchmark_gpu.py), hence the 75 s kept back
BUDGET=$(($(left) - 75))
[ "$BUDGET" -gt 240 ] && BUDGET=240
if [ "$CUDA" = 1 ]; then
    ARGS=(--budget-s "$BUDGET")
else
    echo "no CUDA GPU: a CPU smoke run of the benchmark (no figures for the README)"
    ARGS=(--device cpu --quick --packs 2 --budget-s 10)
fi
if [ "$BUDGET" -le 0 ]; then
    echo "no time left for model.benchmark_gpu (GPU_CHECK_S=${TOTAL})" | tee "$OUT/benchmark_gpu.log"
    BENCH=124
else
    echo "== python3 -m model.benchmark_gpu ${ARGS[*]} $* ($(left) s left)"
    timeout --signal=INT --kill-after=10 $(($(left) - 5)) \
        "$PY" -m model.benchmark_gpu "${ARGS[@]}" --json "$OUT/benchmark_gpu.json" "$@" 2>&1 |
        tee "$OUT/benchmark_gpu.log"
    BENCH=${PIPESTATUS[0]}
fi

echo "== gpu_check: tests exit ${TESTS}, benchmark exit ${BENCH}, $(($(date +%s) - START)) s in all; logs in $OUT/"
[ "$TESTS" -ne 0 ] && exit "$TESTS"
exit "$BENCH"

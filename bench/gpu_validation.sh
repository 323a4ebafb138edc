#!/usr/bin/env bash
# The GPU validation run: everything in one prepared command for a GPU
# machine, from a plain checkout, installing nothing:
#
#     bash bench/gpu_validation.sh             # both steps
#     bash bench/gpu_validation.sh check       # step 1 only (its time limits: 8.5 minutes in all)
#     bash bench/gpu_validation.sh bench       # step 2 only (its time limit: 8 minutes)
#
# 1. bench/device_check.sh: versions, the GPU tests (tests/cuda/test_gpu.py,
#    tests/training/test_gpu_train.py:
#    CuPy path vs the CPU reference, determinism, edge shapes, the >2^31
#    element case, NumPy/CuPy training parity), the bias-gradient kernel vs
#    dy.sum(axis=0) and ones @ dy, one training epoch of 1,000,000 x 784;
# 2. `gpudense bench --backend cupy`: every stage against the measured
#    ceilings and torch.nn.Linear (when torch imports), JSON, table and PNG.
#
# Results go to $OUT when set, else bench/results/gpu-<date>/. Where one
# command may run at most 10 minutes, run the two steps as two commands: each
# step's time limits add up to under 9 minutes.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export OUT="${OUT:-$PWD/bench/results/gpu-$(date -u +%Y-%m-%d)}"
mkdir -p "$OUT"

steps="${*:-check bench}"
check_rc=0 bench_rc=0
for step in $steps; do
    case "$step" in
    check)
        bash bench/device_check.sh
        check_rc=$? ;;
    bench)
        echo "== gpudense bench --backend cupy"
        timeout 480 python3 -m gpudense bench --backend cupy --seed 0 --no-progress \
            --json "$OUT/gpu_bench.json" --table "$OUT/gpu_bench.md" --plot "$OUT/gpu_bench.png"
        bench_rc=$? ;;
    *)
        echo "gpu_validation.sh: unknown step '$step' (expected: check, bench)" >&2
        exit 2 ;;
    esac
done
echo "== gpu_validation ($steps): device_check $check_rc, gpudense bench $bench_rc (0 = ok); results in $OUT"
[ "$check_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]

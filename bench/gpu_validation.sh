#!/usr/bin/env bash
# The GPU validation run (issue 6): everything in one prepared command for a
# GPU machine, from a plain checkout, installing nothing:
#
#     bash bench/gpu_validation.sh
#
# 1. bench/device_check.sh: versions, every GPU test (tests/test_gpu*.py:
#    CuPy path vs the CPU reference, determinism, edge shapes, the >2^31
#    element case, NumPy/CuPy training parity), the bias-gradient kernel vs
#    dy.sum(axis=0) and ones @ dy, one training epoch of 1,000,000 x 784;
# 2. `gpudense bench --backend cupy`: every stage against the measured
#    ceilings and torch.nn.Linear (when torch imports), JSON, table and PNG.
#
# Results go to $OUT when set (the device tool brings back at most 8 files),
# else bench/results/gpu-<date>/. Plan about 8 minutes on an H100.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export OUT="${OUT:-$PWD/bench/results/gpu-$(date -u +%Y-%m-%d)}"
mkdir -p "$OUT"

bash bench/device_check.sh
check_rc=$?

echo "== gpudense bench --backend cupy"
timeout 300 python3 -m gpudense bench --backend cupy --seed 0 --no-progress \
    --json "$OUT/gpu_bench.json" --table "$OUT/gpu_bench.md" --plot "$OUT/gpu_bench.png"
bench_rc=$?
echo "== gpu_validation: device_check $check_rc, gpudense bench $bench_rc (0 = ok); results in $OUT"
[ "$check_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]

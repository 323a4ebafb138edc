#!/usr/bin/env bash
# The one prepared check for a GPU machine. From a plain checkout, installing nothing:
#
#     bash bench/device_check.sh
#
# prints the date, device, driver and library versions, runs the tests marked
# gpu, times the bias-gradient kernel against dy.sum(axis=0) and ones @ dy and
# the fused activation gradient against the unfused way (bench/device_check.py
# and bench/fused_check.py) and times one training
# epoch of a large synthetic set (bench/train_bench.py). Raw results (JSON and
# the pytest log) go to $OUT when it is set, else bench/results/. Needs
# python3 with CuPy, NumPy and pytest; takes up to 12 minutes (for two
# commands of at most 9 minutes each, use bench/gpu_validation.sh check / bench).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
RESULTS="${OUT:-$PWD/bench/results}"
mkdir -p "$RESULTS"

echo "== date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)   commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "== nvidia-smi"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,pstate --format=csv 2>&1 || echo "nvidia-smi unavailable"
echo "== versions"
python3 - <<'PY'
import platform
import numpy
print("python", platform.python_version(), "numpy", numpy.__version__)
try:
    import cupy
    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print("cupy", cupy.__version__, "cuda runtime", rt.runtimeGetVersion(), "driver", rt.driverGetVersion())
    print("device 0:", name, f"sm_{props['major']}{props['minor']}", props["multiProcessorCount"], "SMs")
except Exception as exc:  # report and go on: the tests below say what fails
    print("cupy/device problem:", type(exc).__name__, exc)
PY

echo "== GPU tests"
# CuPy compiles its elementwise kernels on first use on a fresh machine: allow for it.
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/cuda/test_gpu.py tests/cuda/test_gpu_fused.py \
    tests/training/test_gpu_train.py tests/nn/test_fused_dense.py tests/core/test_bfloat16.py \
    tests/core/test_functional.py 2>&1 | tee "$RESULTS/pytest_gpu.log" | tail -n 40
tests_rc=${PIPESTATUS[0]}
echo "GPU tests exit status: $tests_rc"

echo "== timings"
timeout 150 python3 bench/device_check.py --out "$RESULTS"
bench_rc=$?
timeout 150 python3 bench/device_check.py --stage fused --out "$RESULTS" || bench_rc=1
echo "== one training epoch, 1,000,000 x 784, MLP 784-1024-1024-10"
timeout 120 python3 bench/train_bench.py --out "$RESULTS/train_bench.json"
train_rc=$?
echo "== done: tests $tests_rc, kernel timings $bench_rc, training epoch $train_rc (0 = ok); raw results in $RESULTS"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$train_rc" -eq 0 ]

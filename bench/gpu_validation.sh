#!/usr/bin/env bash
# The GPU validation run, from a plain checkout, installing nothing, as two steps
# of at most 9 minutes each (one command each where a command may run 10 minutes):
#
#     bash bench/gpu_validation.sh check    # step 1: GPU tests, bias-gradient timings, a training epoch
#     bash bench/gpu_validation.sh bench    # step 2: fused-kernel timings, cuBLASLt epilogues, gpudense bench
#     bash bench/gpu_validation.sh          # both, one after the other
#
# Each step begins with a compile smoke test (10 s at most): a tiny kernel
# through NVRTC, including a CUDA header, and a float16 CuPy operation. If
# NVRTC or the headers are missing, the step stops at once and says which.
#
# Time: each step has a guard of STEP_SECONDS (default 530 s); every stage is
# given its own limit, cut to what is left of the step, and a stage that would
# start with less than 5 s left is skipped (and says so). Adding a stage's
# limit to the others' never passes 9 minutes.
#
# Results go to $OUT when set, else bench/results/gpu-<date>/. Every stage
# writes its files as it finishes (the timing stages after every shape, the
# benchmark one JSON per dtype), and validation-<step>.json lists the stages
# run so far and how they ended: a step that is stopped keeps what was done.
#
# check: the tests marked gpu (CuPy path vs the CPU references, the fused and
#        bfloat16 kernels vs their NumPy models, determinism, edge shapes, the
#        >2^31-element case, NumPy/CuPy training parity), the bias-gradient
#        kernel vs dy.sum(axis=0) and ones @ dy in float32, float16 and bfloat16,
#        one training epoch of 1,000,000 x 784.
# bench: the fused activation gradient (dz and db in one pass) vs the unfused
#        way, cuBLASLt's BGRADB / DRELU_BGRAD epilogues where nvmath-python
#        imports (skipped, with the reason, where it does not), and
#        `gpudense bench --backend cupy` for float32, tf32, float16 and bfloat16.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export OUT="${OUT:-$PWD/bench/results/gpu-$(date -u +%Y-%m-%d)}"
STEP_SECONDS="${STEP_SECONDS:-530}"
# The test files with tests marked gpu (each imports only NumPy, pytest and gpudense at the top).
export GPU_TESTS="tests/cuda/test_gpu.py tests/cuda/test_gpu_fused.py tests/training/test_gpu_train.py
    tests/nn/test_fused_dense.py tests/core/test_bfloat16.py tests/core/test_functional.py"
mkdir -p "$OUT"

STATUS=""   # "name": code pairs of the current step, for validation-<step>.json

record() {  # record STEP NAME CODE: add a stage's exit status and rewrite the step's summary
    STATUS="${STATUS:+$STATUS, }\"$2\": $3"
    printf '{"step": "%s", "date_utc": "%s", "stages": {%s}}\n' "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "$STATUS" > "$OUT/validation-$1.json"
}

run() {  # run STEP LIMIT NAME CMD...: at most LIMIT seconds, never past the step's deadline
    local step=$1 limit=$2 name=$3 left rc
    shift 3
    left=$(( DEADLINE - $(date +%s) ))
    if [ "$left" -lt 5 ]; then
        echo "== $name: skipped, the step's $STEP_SECONDS s are used up"
        record "$step" "$name" '"skipped: no time left"'
        return 124
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (at most ${limit} s)"
    timeout --kill-after=5 "$limit" "$@"
    rc=$?
    [ "$rc" -eq 124 ] && echo "== $name: stopped at its ${limit} s limit"
    record "$step" "$name" "$rc"
    return $rc
}

smoke() {  # smoke STEP: stop the step at once if NVRTC or the CUDA headers are missing
    if ! run "$1" 10 "compile smoke test" python3 bench/compile_smoke.py; then
        echo "gpu_validation.sh $1: the compile smoke test failed (above): NVRTC or the CUDA headers are" \
             "missing or CUDA is unusable; nothing else was run" >&2
        return 1
    fi
}

step_check() {
    STATUS=""
    DEADLINE=$(( $(date +%s) + STEP_SECONDS ))
    smoke check || return 3
    echo "== date (UTC): $(date -u +%Y-%m-%dT%H:%M:%SZ)   commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
    local rc=0
    # CuPy compiles its element-wise kernels on first use on a fresh machine, and the
    # kernels' module once: the tests' limit allows for it.
    run check 300 "GPU tests" bash -c 'python3 -m pytest -q -p no:cacheprovider -m gpu $GPU_TESTS \
        > "$OUT/pytest_gpu.log" 2>&1; rc=$?; tail -n 40 "$OUT/pytest_gpu.log"; exit $rc' || rc=1
    run check 100 "bias-gradient timings" python3 bench/device_check.py --stage bias --out "$OUT" || rc=1
    run check 90 "one training epoch, 1,000,000 x 784, MLP 784-1024-1024-10" \
        python3 bench/train_bench.py --out "$OUT/train_bench.json" || rc=1
    return $rc
}

step_bench() {
    STATUS=""
    DEADLINE=$(( $(date +%s) + STEP_SECONDS ))
    smoke bench || return 3
    local rc=0 d
    run bench 140 "fused activation gradient and cuBLASLt epilogues" \
        python3 bench/device_check.py --stage fused --out "$OUT" || rc=1
    for d in float32 tf32 float16 bfloat16; do  # one JSON per dtype: a stop keeps the finished ones
        run bench 90 "gpudense bench --dtypes $d" python3 -m gpudense bench --backend cupy --seed 0 --no-progress \
            --dtypes "$d" --json "$OUT/gpu_bench-$d.json" --table "$OUT/gpu_bench-$d.md" || rc=1
    done
    return $rc
}

steps="${*:-check bench}"
for step in $steps; do
    case "$step" in check|bench) ;; *)
        echo "gpu_validation.sh: unknown step '$step' (expected: check, bench)" >&2
        exit 2 ;;
    esac
done
overall=0
for step in $steps; do
    "step_$step"
    rc=$?
    echo "== gpu_validation $step: exit status $rc (0 = ok); results in $OUT (validation-$step.json lists the stages)"
    [ "$rc" -ne 0 ] && overall=$rc
done
exit $overall

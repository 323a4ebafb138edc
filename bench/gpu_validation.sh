#!/usr/bin/env bash
# The GPU validation run: one command per step, each ending by itself within
# 510 s (8.5 minutes) on a cold machine, from a plain checkout, installing
# nothing from a registry:
#
#     bash bench/gpu_validation.sh check [--dry-run]   # correctness: facts, smoke test, kernels, GPU tests, ...
#     bash bench/gpu_validation.sh bench [--dry-run]   # performance: bias gradient, fused pass, layers, epoch
#
# --dry-run prints the step's stages, their limits and files, and the total
# (at most 510 s), and runs nothing.
#
# Each stage runs under `timeout` with its own limit (SIGINT first, so that
# pytest and the Python scripts write what they have; SIGKILL KILL_AFTER
# seconds later), cut to what is left of the step's 510 s. The limits plus
# KILL_AFTER per stage add up to at most 510 s. Every stage writes its file as
# it goes; stages.json is rewritten after every stage with how each ended
# (exit status, seconds; 124 = stopped at its limit), and the whole output
# goes to <step>.log as well. If the compile smoke test fails, the step stops
# at once with one line saying what is missing, exit status 3.
#
# Results go to $OUT when set (a GPU lease's $OUT), else
# bench/results/gpu-<date>/: at most 8 files, named in letters, digits, '.',
# '_' and '-'. docs/testing.md (check) and docs/benchmarking.md (bench) say
# what each file holds.
#
# Python: $PYTHON, else python3. nvmath-python for the bench step's cuBLASLt
# rows comes as wheels in bench/wheels/ (git-ignored; bench/fetch_wheels.sh
# downloads them), installed at the start into a temporary folder (pip
# --no-index --target); without them those rows say why they were skipped
# and the rest runs.
#
# For the tests only: GPU_VALIDATION_STUB=<program> runs `<program> STAGE
# FILE` instead of each stage's command but the wheels' (FILE: the stage's
# path, or "-"), GPU_VALIDATION_LIMIT_<stage>=N replaces that stage's limit,
# and GPU_VALIDATION_WHEELS=<folder> replaces bench/wheels/.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
TOTAL=510        # seconds a step may take, all of it
KILL_AFTER=5     # seconds from SIGINT to SIGKILL, counted in every stage's share
WHEELS="${GPU_VALIDATION_WHEELS:-bench/wheels}"

# Stages: "name limit file what", in order (file "-": writes none of its own).
CHECK_STAGES=(
    "facts 20 environment.json machine and package facts (GPU, driver, CUDA, CuPy, NumPy, torch)"
    "smoke 30 - compile smoke test (NVRTC and the CUDA headers; stops the step if it fails)"
    "kernels 45 kernels.json the kernels as the device built them (registers, memory, blocks per SM, build time)"
    "tests 265 pytest-gpu.xml every test marked gpu under tests/ (JUnit XML)"
    "bias 50 device_check.json bias-gradient timings, quick form"
    "train 60 train_epoch.json one training epoch, 200,000 x 784, MLP 784-1024-1024-10"
)
BENCH_STAGES=(
    "facts 20 environment.json machine and package facts (GPU, driver, CUDA, CuPy, NumPy, torch)"
    "wheels 15 - nvmath-python from bench/wheels/ into a temporary folder"
    "smoke 30 - compile smoke test (NVRTC and the CUDA headers; stops the step if it fails)"
    "bias 70 device_check.json bias-gradient kernel vs dy.sum(axis=0), ones @ dy and a copy; float32, bfloat16"
    "fused 95 fused_check.json fused act'+db vs unfused (relu, gelu, tanh); cuBLASLt epilogues (nvmath)"
    "layers 140 layers.json layer forward+backward vs torch.nn.Linear: float32, tf32, float16, bfloat16"
    "train 80 train_epoch.json one training epoch, 1,000,000 x 784, MLP 784-1024-1024-10, vs PyTorch"
    "report 10 ratios.md the table of ratios from the files above"
)

usage() {
    echo "usage: bash bench/gpu_validation.sh check|bench [--dry-run]" >&2
    exit 2
}

step="${1:-}"
dry=0
case "${2:-}" in "") ;; --dry-run) dry=1 ;; *) usage ;; esac
[ $# -le 2 ] || usage
case "$step" in
    check) STAGES=("${CHECK_STAGES[@]}") ;;
    bench) STAGES=("${BENCH_STAGES[@]}") ;;
    *) [ -n "$step" ] && echo "gpu_validation.sh: unknown step '$step' (expected: check or bench)" >&2; usage ;;
esac

limit_of() {  # limit_of NAME DEFAULT: the stage's limit, GPU_VALIDATION_LIMIT_<NAME> where set
    local var="GPU_VALIDATION_LIMIT_$1"
    echo "${!var:-$2}"
}

if [ "$dry" -eq 1 ]; then
    total=0
    printf '%-8s %6s  %-18s %s\n' stage limit_s file what
    for s in "${STAGES[@]}"; do
        read -r name limit file what <<< "$s"
        limit=$(limit_of "$name" "$limit")
        printf '%-8s %6d  %-18s %s\n' "$name" "$limit" "$file" "$what"
        total=$(( total + limit + KILL_AFTER ))
    done
    echo "total ${total} s of at most ${TOTAL} s (each stage's limit plus ${KILL_AFTER} s from SIGINT to SIGKILL)"
    [ "$total" -le "$TOTAL" ]
    exit
fi

export OUT="${OUT:-$REPO/bench/results/gpu-$(date -u +%Y-%m-%d)}"
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu_validation.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
exec > >(tee -a "$OUT/$step.log") 2> >(tee -a "$OUT/$step.log" >&2)
START=$(date +%s)
END=$(( START + TOTAL ))
STATUS=""

record() {  # record NAME CODE SECONDS [NOTE]: add a stage's ending to stages.json
    STATUS="${STATUS:+$STATUS, }\"$1\": {\"exit_status\": $2, \"seconds\": $3${4:+, \"note\": \"$4\"}}"
    printf '{"step": "%s", "started_utc": "%s", "stages": {%s}}\n' "$step" \
        "$(date -u -d "@$START" +%Y-%m-%dT%H:%M:%SZ)" "$STATUS" > "$OUT/stages.json"
}

# The command of each stage; its output file is $1 (a path under $OUT, or "-").
cmd_facts()   { "$PY" bench/gpu_facts.py --out "$1"; }
cmd_smoke()   { "$PY" bench/compile_smoke.py; }
cmd_kernels() { "$PY" bench/kernel_report.py --out "$1"; }
cmd_tests()   { "$PY" -m pytest -m gpu tests -q -p no:cacheprovider --junitxml="$1"; }
cmd_bias() {
    if [ "$step" = check ]; then "$PY" bench/device_check.py --quick --out "$OUT"
    else "$PY" bench/device_check.py --dtypes float32,bfloat16 --out "$OUT"; fi
}
cmd_fused()   { "$PY" bench/fused_check.py --out "$OUT"; }
cmd_layers() {  # one dtype at a time, each merged into layers.json as it finishes
    local d rc=0
    for d in float32 tf32 float16 bfloat16; do
        "$PY" -m gpudense bench --backend cupy --quick --seed 0 --no-progress --dtypes "$d" \
            --json "$TMP/layers-$d.json" || rc=1
        [ -f "$TMP/layers-$d.json" ] && "$PY" bench/gpu_report.py --merge-layers "$1" "$TMP/layers-$d.json"
    done
    return $rc
}
cmd_train() {
    if [ "$step" = check ]; then "$PY" bench/train_bench.py --samples 200000 --out "$1"
    else "$PY" bench/train_bench.py --samples 1000000 --torch --out "$1"; fi
}
cmd_report()  { "$PY" bench/gpu_report.py --out "$OUT"; }
cmd_wheels() {  # nvmath-python alone first; with the carried cuda-core and cuda-pathfinder if it needs them
    local nvmath=("$WHEELS"/nvmath_python-*.whl) check="import nvmath, nvmath.linalg.advanced"
    if [ ! -e "${nvmath[0]}" ]; then
        echo "no nvmath-python wheel in $WHEELS (bash bench/fetch_wheels.sh fetches it): the cuBLASLt" \
             "epilogue rows will say nvmath-python is not importable"
        return 0
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$TMP/site" "${nvmath[@]}" \
        || return 1
    export PYTHONPATH="$PYTHONPATH:$TMP/site"
    if ! "$PY" -c "$check" 2> /dev/null; then
        echo "nvmath-python does not import with this machine's cuda-core/cuda-pathfinder: adding the carried ones"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$TMP/site2" \
            "$WHEELS"/cuda_core-*.whl "$WHEELS"/cuda_pathfinder-*.whl || return 1
        export PYTHONPATH="$TMP/site2:$PYTHONPATH"
    fi
    "$PY" -c "$check; print('nvmath-python', nvmath.__version__, 'imports (from $WHEELS)')"
}

overall=0
for s in "${STAGES[@]}"; do
    read -r name limit file what <<< "$s"
    limit=$(limit_of "$name" "$limit")
    path="-"; [ "$file" != "-" ] && path="$OUT/$file"
    left=$(( END - $(date +%s) - KILL_AFTER ))
    if [ "$left" -lt 5 ]; then
        echo "== $name: skipped, the step's $TOTAL s are used up"
        record "$name" 124 0 "skipped: no time left"
        overall=1
        continue
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name: $what (at most $limit s) $(date -u +%H:%M:%S)"
    t0=$(date +%s)
    err=/dev/stderr
    [ "$name" = smoke ] && err="$TMP/smoke.err"  # its one line goes into the step's last line
    if [ "$name" = wheels ]; then  # it hands the PYTHONPATH the stages after it use back through a file
        export -f cmd_wheels
        export PY TMP WHEELS
        timeout --signal=INT --kill-after="$KILL_AFTER" "$limit" bash -c \
            'cmd_wheels && printf "%s" "$PYTHONPATH" > "$TMP/pythonpath"'
        rc=$?
        [ -s "$TMP/pythonpath" ] && PYTHONPATH=$(cat "$TMP/pythonpath") && export PYTHONPATH
    elif [ -n "${GPU_VALIDATION_STUB:-}" ]; then
        timeout --signal=INT --kill-after="$KILL_AFTER" "$limit" "$GPU_VALIDATION_STUB" "$name" "$path" 2> "$err"
        rc=$?
    else
        export -f "cmd_$name"
        export step PY TMP
        timeout --signal=INT --kill-after="$KILL_AFTER" "$limit" bash -c "cmd_$name \"\$1\"" _ "$path" 2> "$err"
        rc=$?
    fi
    [ "$rc" -eq 124 ] && echo "== $name: stopped at its $limit s limit"
    record "$name" "$rc" $(( $(date +%s) - t0 ))
    if [ "$name" = smoke ] && [ "$rc" -ne 0 ]; then
        why=$(grep -v '^[[:space:]]*$' "$TMP/smoke.err" | tail -n 1)
        [ "$rc" -eq 124 ] && why="it did not end within its $limit s"
        echo "gpu_validation.sh $step: stopped at the compile smoke test, nothing else ran: ${why:-exit status $rc}" >&2
        exit 3
    fi
    [ "$name" = smoke ] && cat "$TMP/smoke.err" >&2
    [ "$rc" -ne 0 ] && overall=1
done
echo "== gpu_validation $step: exit status $overall (0 = every stage ended well); $OUT holds:" $(ls "$OUT")
exit $overall

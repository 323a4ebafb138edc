#!/usr/bin/env bash
# The CPU figures of gpudense against PyTorch, each with the machine (CPU model) and the BLAS
# libraries (NumPy's OpenBLAS: version and kernel; torch's MKL: version and CPU path) it ran on.
# Run on a quiet machine from the repository root, after `make test` (or `make bench`) has made
# .venv; torch is installed into it when missing. Writes into $OUT (default
# bench/results/cpu-compare-<date>/):
#
#   digits.{json,md}            default digits job: per-epoch time vs a PyTorch loop (1 thread, as
#                               `gpudense train` runs digits), and the whole `gpudense train` command
#   synthetic.{json,md}         200,000 x 784, hidden 1024,1024, batch 32, one epoch, at 1 and 2
#                               threads, vs the same PyTorch loop
#   layers-<n>t.{json,md,png}   `gpudense bench`: layer forward+backward of seven shapes (small,
#                               square, tall, wide, narrow, batch 1) vs the floor (the same BLAS's
#                               three products + one pass over dy) and vs torch.nn.Linear, at 2
#                               threads (and 1)
#   subnormal.{json,md}         per-epoch time of a 30,000-sample synthetic run with and without the
#                               optimizer's subnormal flush (and with hardware FTZ/DAZ)
#   savedcheck.{json,md}        what gpudense.saved's opt-in check of saved arrays costs per layer step
#
# Expected run time on a 2-core machine: about 20-30 minutes in all (synthetic about 10-20, layers
# about 3, subnormal about 3, digits about 1, savedcheck about 1). STAGES="digits layers" runs a subset.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/results/cpu-compare-$(date -u +%Y-%m-%d)}
STAGES=${STAGES:-"digits synthetic layers subnormal savedcheck"}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
LAYER_SHAPES=128x64x64,1024x1024x1024,65536x64x64,256x4096x4096,8192x256x256,4096x784x10,1x4096x4096
mkdir -p "$OUT"
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install --quiet "$TORCH_SPEC"
# Some machines set these for old OpenBLAS builds; they slow a current one. The JSON records the kernel.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
export GPUDENSE_BACKEND=numpy
{ date -u; uptime; "$PY" -m gpudense info; } > "$OUT/machine.txt" 2>&1
for stage in $STAGES; do
  echo "== $stage ($(date -u +%H:%M:%S))"
  case $stage in
    digits)
      "$PY" bench/train_compare.py --dataset digits --threads 1 --repeats 3 --command-runs 5 \
        --json "$OUT/digits.json" --table "$OUT/digits.md" ;;
    synthetic)
      "$PY" bench/train_compare.py --dataset synthetic --samples 200000 --threads 1,2 --repeats 2 \
        --json "$OUT/synthetic.json" --table "$OUT/synthetic.md" ;;
    layers)
      for t in 2 1; do
        "$PY" -m gpudense bench --backend numpy --threads "$t" --seed 0 --shapes "$LAYER_SHAPES" \
          --no-progress --json "$OUT/layers-${t}t.json" --table "$OUT/layers-${t}t.md" --plot "$OUT/layers-${t}t.png"
      done ;;
    subnormal)
      "$PY" bench/subnormal_check.py --samples 30000 --epochs 4 --threads 1 \
        --json "$OUT/subnormal.json" --table "$OUT/subnormal.md" ;;
    savedcheck)
      "$PY" bench/saved_check_cost.py --threads 1 --json "$OUT/savedcheck.json" --table "$OUT/savedcheck.md" ;;
    *) echo "unknown stage $stage (expected digits, synthetic, layers, subnormal, savedcheck)" >&2; exit 2 ;;
  esac
done
echo "wrote $OUT"

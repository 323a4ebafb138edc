#!/usr/bin/env bash
# The multi-GPU recipe for data-parallel training with NCCL, from a checkout
# whose environment has gpudense[cuda12 or cuda13,distributed,test] and
# NVIDIA's NCCL wheel (CuPy names the one it needs: pip install
# "nvidia-nccl-cu13>=2.27.7,<3" for cupy-cuda13x 14.2):
#
#     bash bench/distributed_gpu.sh            # every GPU of this machine
#     GPUS=2 bash bench/distributed_gpu.sh     # the first two
#
# 1. the GPU tests of tests/distributed/test_gpu.py (NCCL, MPI with CuPy arrays);
# 2. `mpiexec -n $GPUS gpudense train --backend cupy`: the digits job, then a
#    large synthetic set, one GPU per rank, NCCL all-reduces;
# 3. bench/distributed_bench.py --backend cupy: NCCL all-reduce bandwidth by
#    message size and one training epoch at 1, 2, 4, ... $GPUS ranks.
#
# Output goes to $OUT when set, else bench/results/distributed-gpu-<date>/.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
MPIEXEC="$(dirname "$(command -v "$PY")")/mpiexec"
[ -x "$MPIEXEC" ] || MPIEXEC=mpiexec
export OUT="${OUT:-$PWD/bench/results/distributed-gpu-$(date -u +%Y-%m-%d)}"
mkdir -p "$OUT"

GPUS="${GPUS:-$("$PY" -c 'import cupy; print(cupy.cuda.runtime.getDeviceCount())' 2>/dev/null || echo 0)}"
if [ "$GPUS" -lt 1 ]; then
    echo "distributed_gpu.sh: no usable GPU (CuPy cannot see one)" >&2
    exit 1
fi
"$PY" -c 'from gpudense.backends.cuda.nccl_engine import nccl_unavailable_reason as r; import sys; m = r(); print(m or "NCCL: ok"); sys.exit(m is not None)' \
    || { echo "distributed_gpu.sh: install NCCL first (above)" >&2; exit 1; }
ranks=1; r=2
while [ "$r" -le "$GPUS" ]; do ranks="$ranks,$r"; r=$((r * 2)); done
case ",$ranks," in *",$GPUS,"*) ;; *) ranks="$ranks,$GPUS" ;; esac

rc=0
echo "== 1. GPU tests (tests/distributed/test_gpu.py)"
timeout 600 "$PY" -m pytest -q -rs tests/distributed/test_gpu.py 2>&1 | tee "$OUT/pytest_distributed_gpu.log" || rc=1
echo "== 2. mpiexec -n $GPUS gpudense train --backend cupy"
timeout 600 "$MPIEXEC" -n "$GPUS" "$PY" -m gpudense train --backend cupy --epochs 3 2>&1 | tee "$OUT/train_digits.txt" || rc=1
timeout 900 "$MPIEXEC" -n "$GPUS" "$PY" -m gpudense train --backend cupy --dataset synthetic --samples 1000000 \
    --hidden 1024,1024 --batch-size 1024 --epochs 2 --quiet 2>&1 | tee "$OUT/train_synthetic.txt" || rc=1
echo "== 3. bench/distributed_bench.py --backend cupy --ranks $ranks"
timeout 1800 "$PY" bench/distributed_bench.py --backend cupy --ranks "$ranks" --mpiexec "$MPIEXEC" \
    --out "$OUT/distributed_bench.json" 2>&1 | tee "$OUT/distributed_bench.txt" || rc=1
echo "== distributed_gpu: $([ $rc -eq 0 ] && echo ok || echo FAILED); results in $OUT"
exit $rc

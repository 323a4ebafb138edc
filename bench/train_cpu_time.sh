#!/usr/bin/env bash
# Wall time of the default `python -m gpudense train` (3 runs) on this machine, with
# `gpudense info` and the load average first; writes the commands and their full output to
# bench/results/train-cpu-<date>.txt (or $1). Run from the repository root after `make test`
# or `make train` has created .venv.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${1:-bench/results/train-cpu-$(date -u +%Y-%m-%d).txt}
{
  echo "# gpudense train wall time, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD)"
  echo "\$ $PY -m gpudense info"
  "$PY" -m gpudense info 2>&1
  echo "\$ nproc; uptime"
  nproc
  uptime
  for i in 1 2 3; do
    echo
    echo "# run $i"
    echo "\$ /usr/bin/time -p $PY -m gpudense train"
    /usr/bin/time -p "$PY" -m gpudense train 2>&1
    echo "\$ uptime"
    uptime
  done
} > "$OUT"
echo "wrote $OUT"

#!/usr/bin/env bash
# Download the wheels `bash bench/gpu_validation.sh bench` installs on a GPU
# machine that has no package registry: nvmath-python (cuBLASLt's epilogues)
# and the two packages it needs that such a machine may lack or hold too old
# (cuda-core, cuda-pathfinder), for Python 3.12 on Linux x86-64, into
# bench/wheels/ (git-ignored; about 12 MB). Run it where pip reaches PyPI:
#
#     bash bench/fetch_wheels.sh [PYTHON_VERSION]     # default 3.12
#
# CuPy, NumPy and cuda-bindings are not fetched: the GPU machine's own are used.
set -eu
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "${1:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d wheels \
    "nvmath-python==1.0.1" "cuda-core>=0.5,<2" "cuda-pathfinder>=1.5.1,<2"
ls -l wheels

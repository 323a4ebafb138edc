#!/bin/sh
# Prints the gpudense extra that matches this machine's NVIDIA driver: "cuda13"
# where the driver supports CUDA 13 or later, "cuda12" where it supports CUDA 12,
# and nothing where there is no driver (no nvidia-smi, or nvidia-smi fails) or
# an older one (said on stderr). `make train` installs that extra and trains on
# the GPU. The driver's CUDA version is the "CUDA Version: X.Y" of nvidia-smi's
# header.
smi=$(nvidia-smi 2>/dev/null) || exit 0
version=$(printf '%s\n' "$smi" | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\.[0-9].*/\1/p' | head -n 1)
if [ -z "$version" ]; then
    echo "tools/cuda_extra.sh: nvidia-smi runs but names no CUDA version; training on the CPU" >&2
elif [ "$version" -ge 13 ]; then
    echo cuda13
elif [ "$version" -eq 12 ]; then
    echo cuda12
else
    echo "tools/cuda_extra.sh: the NVIDIA driver supports CUDA $version; gpudense's GPU path needs CUDA 12 or later (update the driver); training on the CPU" >&2
fi

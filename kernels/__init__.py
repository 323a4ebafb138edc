"""CUDA source of gpudense's kernels, shipped with the package (see gpudense.backends.cupy_backend)."""

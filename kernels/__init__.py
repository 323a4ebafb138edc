"""CUDA source of gpudense's kernels, shipped with the package (loaded by gpudense.backends.cuda.loader)."""

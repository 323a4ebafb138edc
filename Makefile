# The README's two commands: `make train` and `make test`. Each creates the
# virtual environment .venv on first use and installs the project into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
.PHONY: train train-with test info clean bench bench-compare

comma := ,

# Extras installed for the tests. On Linux, CuPy for CUDA 13 is among them, so
# that CI checks backend selection with CuPy installed and no GPU present, and
# NVRTC with it, so that CI compiles the kernels as CuPy would (CuPy publishes
# no wheels for macOS; there those tests skip, saying why). bf16 brings
# ml_dtypes, so that bfloat16 is tested; safetensors, so that export and import are.
TEST_EXTRAS ?= test,train,bench,bf16,distributed,safetensors$(if $(filter Linux,$(shell uname -s)),$(comma)cuda13)

$(VENV)/.stamp-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(subst +,$(comma),$*)]"
	touch $@

# `make train` trains on the GPU where there is one: tools/cuda_extra.sh reads
# the NVIDIA driver's CUDA version (nvidia-smi) and names the extra that matches
# it (cuda12 or cuda13), which is installed with the train extra; the training
# then runs on backend cupy. Without a driver: the train extra alone and the
# default backend (the CPU). GPU=0 trains on the CPU; GPU=cuda12 or GPU=cuda13
# picks the extra.
GPU ?= auto
CUDA_EXTRA_OF_GPU := $(if $(filter auto,$(GPU)),sh tools/cuda_extra.sh,$(if $(filter 0,$(GPU)),true,echo $(GPU)))

train:
	@case "$(GPU)" in auto|0|cuda12|cuda13) ;; \
	  *) echo "make train: GPU=$(GPU): expected auto, 0, cuda12 or cuda13" >&2; exit 2 ;; esac; \
	  $(MAKE) --no-print-directory train-with CUDA_EXTRA="$$($(CUDA_EXTRA_OF_GPU))"

train-with: $(VENV)/.stamp-train$(if $(CUDA_EXTRA),+$(CUDA_EXTRA))
	$(PY) -m gpudense train$(if $(CUDA_EXTRA), --backend cupy)

# The tests, and the line coverage of the CUDA path (gpudense/backends/cuda/ and
# the NCCL communicator; pyproject.toml's [tool.coverage.*]): printed after the
# tests, and below 90% the run fails.
test: $(VENV)/.stamp-$(subst $(comma),+,$(TEST_EXTRAS))
	$(PY) -m pytest --cov --cov-report=term

info: $(VENV)/.stamp-train
	$(PY) -m gpudense info

# `make bench`: the CPU baseline under bench/results/ (JSON, table, PNG), named
# by date. torch (CPU) is installed for the torch.nn.Linear comparison only if
# pip can get it; it is in no extra. OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are
# unset for this command alone (some machines set them for old OpenBLAS builds;
# they slow a current one); the JSON records the BLAS kernel that ran.
BENCH_DATE    ?= $(shell date -u +%Y-%m-%d)
BENCH_OUT     ?= bench/results/cpu-$(BENCH_DATE)
BENCH_THREADS ?= $(shell nproc)
BENCH_ARGS    ?=
TORCH_SPEC    ?= torch==2.13.0

bench: $(VENV)/.stamp-bench
	mkdir -p $(dir $(BENCH_OUT))
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)" \
	  || echo "make bench: could not install $(TORCH_SPEC); running without the torch comparison"
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m gpudense bench --backend numpy \
	  --threads $(BENCH_THREADS) --seed 0 $(BENCH_ARGS) \
	  --json $(BENCH_OUT).json --table $(BENCH_OUT).md --plot $(BENCH_OUT).png

# `make bench-compare`: every CPU comparison with PyTorch (training runs on digits and on
# 200,000 x 784 synthetic data, layer steps against the BLAS floor and torch.nn.Linear, the
# subnormal flush) into bench/results/cpu-compare-<date>/; about 20-30 minutes on 2 cores.
# COMPARE_STAGES="digits layers" runs a subset (see bench/cpu_train_compare.sh).
COMPARE_STAGES ?= digits synthetic layers subnormal savedcheck

bench-compare: $(VENV)/.stamp-bench+train
	OUT=bench/results/cpu-compare-$(BENCH_DATE) STAGES="$(COMPARE_STAGES)" TORCH_SPEC="$(TORCH_SPEC)" \
	  PY=$(PY) bash bench/cpu_train_compare.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .coverage .coverage.*

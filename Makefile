# The README's two commands: `make train` and `make test`. Each creates the
# virtual environment .venv on first use and installs the project into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Extras installed for the tests. CuPy for CUDA 13 is among them so that CI
# checks backend selection with CuPy installed and no GPU present.
TEST_EXTRAS ?= test,train,bench,cuda13

.PHONY: train test info clean

comma := ,

$(VENV)/.stamp-%: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(subst +,$(comma),$*)]"
	touch $@

train: $(VENV)/.stamp-train
	$(PY) -m gpudense train

test: $(VENV)/.stamp-$(subst $(comma),+,$(TEST_EXTRAS))
	$(PY) -m pytest

info: $(VENV)/.stamp-train
	$(PY) -m gpudense info

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

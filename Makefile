# Two entry points for a newcomer: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# PyTorch is installed first, pinned, on its own, so that you choose its build. Which build
# `pip install torch==2.13.0` picks depends on where pip looks:
#   make setup         (TORCH_INDEX empty) whatever pip is configured with (`pip config list`).
#                      From PyPI alone, on Linux x86_64 that is the CUDA build: about 20
#                      nvidia-* packages, several GB; on macOS and Windows, the CPU build.
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu      the CPU build (~200 MB)
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cu126    the build for CUDA 12.6
#                      (any cuXXX that PyTorch publishes for this version)
# The choice is made once, when .venv is created: `make clean` first to change it.
TORCH_VERSION ?= 2.13.0
TORCH         ?= torch==$(TORCH_VERSION)
TORCH_INDEX   ?=
EXTRAS        ?= dev

.PHONY: setup demo test lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: setup
	$(BIN)/speechssl demo

test: setup lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_logmel.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

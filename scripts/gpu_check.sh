#!/usr/bin/env bash
# One unattended GPU check of engine=vllm (about 5 minutes on one H100, 9 at most: every step has
# a timeout), in an environment with this repository installed with the `gpu` extra
# (vllm==0.32.0). It downloads nothing.
#
#   1. equivalence on CUDA, eager:       vLLM vs the transformers engine, tiny model, fp32, greedy,
#                                        every method in one squeezed batch (churn, chunked
#                                        prefill, preemptions) -> token-identical?
#   2. equivalence on CUDA, CUDA graphs: the same, compiled with CUDA graphs
#   3. throughput: Standard, Direct Mixture, MoI on ONE engine (and Standard on a plain vLLM
#      engine), Qwen2-0.5B's shape with random weights, 128 requests x 256 tokens
#
# Usage: scripts/gpu_check.sh [OUTPUT_DIR]   (default: gpu_check_out; JSON files and gpu_check.log)
# Exit status: 0 if both equivalence checks passed and the benchmark ran.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DEST="${1:-gpu_check_out}"
mkdir -p "$DEST"
LOG="$DEST/gpu_check.log"

# The MoI path is vLLM's V1 model runner (MRV1); vLLM 0.32 picks V2 on CUDA unless told.
export VLLM_USE_V2_MODEL_RUNNER=0
export VLLM_ENABLE_V1_MULTIPROCESSING=0
export TOKENIZERS_PARALLELISM=false

{
  echo "== $(date -u +%FT%TZ) gpu_check"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import torch, vllm; print('torch', torch.__version__, 'vllm', vllm.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$LOG"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: nothing checked" | tee -a "$LOG"
  exit 2
fi

status=0
step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}

step "equivalence, eager" 120 "$PY" scripts/gpu_check.py equivalence --mode eager --json "$DEST/eq_eager.json"
step "equivalence, CUDA graphs" 180 "$PY" scripts/gpu_check.py equivalence --mode graphs --json "$DEST/eq_graphs.json"
step "throughput" 240 "$PY" scripts/bench.py --shape qwen2-0.5b --requests 128 --prompt-tokens 256 \
  --max-tokens 256 --rounds 3 --plain --json "$DEST/bench.json"

grep -E "^equivalence|^  request|^\||^MoI extra|^Host time|^model:|^batch:" "$LOG"
"$PY" scripts/gpu_check.py summary "$DEST" | tee -a "$LOG"
exit $status

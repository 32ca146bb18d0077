#!/usr/bin/env bash
# One unattended GPU check of engine=vllm, in an environment with this repository installed with the
# `gpu` extra. It downloads nothing and ends within 10 minutes: every step has its own timeout
# (killed 10 s after it), and they add up to 500 s (+ 40 s of grace, + the environment check and the verdict).
#
#   0. plan (no GPU needed):             vLLM's scheduler on the check's requests with the check's
#                                        CUDA settings -> at least 3 preemptions?
#   1. equivalence on CUDA, eager:       vLLM vs the transformers engine, tiny model, true fp32,
#                                        greedy, every method in one squeezed batch (churn, chunked
#                                        prefill, preemptions) -> token-identical, no host syncs in
#                                        MoI's hooks?
#   2. equivalence on CUDA, CUDA graphs: the same, compiled with CUDA graphs
#   3. throughput: Standard, Direct Mixture, MoI on ONE engine (and Standard on a plain vLLM
#      engine), Qwen2-0.5B's shape with random weights, 64 requests x 128 tokens (not part of PASS)
#
# One GPU: the first one visible, unless GPU_CHECK_DEVICES lists others (e.g. "0,1" for
# tensor-parallel size 2).
#
# Usage: scripts/gpu_check.sh [OUTPUT_DIR]   (default: gpu_check_out; JSON files and gpu_check.log)
# Exit status: 0 if the plan and both equivalence checks passed, 1 otherwise, 2 without CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DEST="${1:-gpu_check_out}"
mkdir -p "$DEST"
LOG="$DEST/gpu_check.log"
STEPS="$DEST/steps.tsv"
: >"$LOG"
: >"$STEPS"
rm -f "$DEST"/plan.json "$DEST"/eq_*.json "$DEST"/bench.json "$DEST"/env.json

# The MoI path is vLLM's V1 model runner (MRV1); vLLM 0.32 picks V2 on CUDA unless told.
export VLLM_USE_V2_MODEL_RUNNER=0
export VLLM_ENABLE_V1_MULTIPROCESSING=0
export TOKENIZERS_PARALLELISM=false
# True fp32: Triton's tl.dot (vLLM's attention in fp32) defaults to TF32 on Ampere and later.
export TRITON_F32_DEFAULT=ieee VLLM_FLOAT32_MATMUL_PRECISION=highest NVIDIA_TF32_OVERRIDE=0
# One GPU unless told otherwise (tensor parallelism defaults to every visible GPU).
DEVICES="${GPU_CHECK_DEVICES:-${CUDA_VISIBLE_DEVICES:-0}}"
[ -n "${GPU_CHECK_DEVICES:-}" ] || DEVICES="${DEVICES%%,*}"
export CUDA_VISIBLE_DEVICES="$DEVICES"
IFS=, read -ra _devices <<<"$DEVICES"
TP=${#_devices[@]}

caches=cold
for dir in "${TRITON_CACHE_DIR:-$HOME/.triton/cache}" "${VLLM_CACHE_ROOT:-$HOME/.cache/vllm}/torch_compile_cache"; do
  [ -n "$(ls -A "$dir" 2>/dev/null)" ] && caches=warm
done

{
  echo "== $(date -u +%FT%TZ) gpu_check, CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES (tensor-parallel size $TP), caches $caches"
  echo "   TRITON_F32_DEFAULT=$TRITON_F32_DEFAULT VLLM_FLOAT32_MATMUL_PRECISION=$VLLM_FLOAT32_MATMUL_PRECISION NVIDIA_TF32_OVERRIDE=$NVIDIA_TF32_OVERRIDE"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
} 2>&1 | tee -a "$LOG"
if ! "$PY" - "$DEST/env.json" "$DEVICES" "$caches" <<'EOF' 2>>"$LOG"
import json, sys, torch
if not torch.cuda.is_available():
    sys.exit(1)
import vllm
json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "vllm": vllm.__version__,
           "devices": sys.argv[2], "caches": sys.argv[3]}, open(sys.argv[1], "w"))
EOF
then
  echo "no CUDA device (or no vllm): nothing checked" | tee -a "$LOG"
  exit 2
fi

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most $limit s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$STEPS"
}

step plan 40 "$PY" scripts/gpu_check.py plan --json "$DEST/plan.json"
step eager 130 "$PY" scripts/gpu_check.py equivalence --mode eager --tp "$TP" --json "$DEST/eq_eager.json"
step graphs 160 "$PY" scripts/gpu_check.py equivalence --mode graphs --tp "$TP" --json "$DEST/eq_graphs.json"
step bench 170 "$PY" scripts/bench.py --shape qwen2-0.5b --requests 64 --prompt-tokens 128 \
  --max-tokens 128 --rounds 3 --plain --json "$DEST/bench.json"

"$PY" scripts/gpu_check.py summary "$DEST" | tee -a "$LOG"
exit "${PIPESTATUS[0]}"

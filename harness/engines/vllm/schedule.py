"""vLLM's own scheduler, driven without a model: how often a set of requests gets preempted.

The scheduler decides which requests run, chunks prefills and preempts requests when the KV
cache runs out; none of that depends on the model's outputs except when a request stops. Fed
requests that always run to ``max_tokens`` (what greedy decoding of the random-weight test models
does), it makes the same decisions as in a real engine with the same settings, on any machine:
this is how ``scripts/gpu_check.py plan`` sizes the KV cache of the CUDA check on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

# A token that is neither the test models' EOS nor a stop token: every request runs to max_tokens.
_FILLER_TOKEN = 5


@dataclass(frozen=True)
class KVPlan:
    """A KV cache: ``num_blocks`` blocks of ``block_size`` tokens (vLLM's null block included)."""

    num_blocks: int
    block_size: int


@dataclass
class Schedule:
    """What the scheduler did with a set of requests."""

    steps: int
    preemptions: int  # as vLLM's ``vllm:num_preemptions`` counts them
    preempted_requests: int  # requests preempted at least once
    chunked_prefills: int  # steps in which some request's prefill was split
    max_running: int  # most requests scheduled in one step


def scheduler_config(engine_args: dict, kv: KVPlan):
    """vLLM's own ``VllmConfig`` for these engine arguments, with the planned KV cache."""
    from vllm.engine.arg_utils import EngineArgs

    fields = EngineArgs.__dataclass_fields__
    args = {k: v for k, v in engine_args.items() if k in fields}
    args.update(block_size=kv.block_size, num_gpu_blocks_override=kv.num_blocks)
    config = EngineArgs(**args).create_engine_config()
    config.cache_config.num_gpu_blocks = kv.num_blocks
    return config


def simulate(engine_args: dict, kv: KVPlan, prompts: list[list[int]], max_tokens: list[int]) -> Schedule:
    """Run vLLM's scheduler on these requests (submitted at once, in order) until all finish."""
    import torch
    from vllm import SamplingParams
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager

    config = scheduler_config(engine_args, kv)
    # One group of full-attention layers: the block accounting does not depend on head sizes.
    spec = FullAttentionSpec(block_size=kv.block_size, num_kv_heads=1, head_size=64, dtype=torch.float32)
    kv_config = KVCacheConfig(num_blocks=kv.num_blocks, kv_cache_tensors=[],
                              kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)])
    scheduler = Scheduler(config, kv_config, StructuredOutputManager(config), block_size=kv.block_size, log_stats=True)
    requests = []
    for i, (prompt, limit) in enumerate(zip(prompts, max_tokens)):
        params = SamplingParams(temperature=0.0, max_tokens=limit, ignore_eos=True)
        request = Request(str(i), list(prompt), params, None, arrival_time=float(i))
        requests.append(request)
        scheduler.add_request(request)

    steps = chunked = max_running = 0
    while scheduler.has_requests():
        out = scheduler.schedule()
        steps += 1
        ids = list(out.num_scheduled_tokens)
        max_running = max(max_running, len(ids))
        # After scheduling, a request whose computed tokens reach its length samples a token; a
        # partial prefill (or a partial recomputation after a preemption) samples nothing.
        sampled = []
        for rid in ids:
            request = scheduler.requests[rid]
            sampled.append([_FILLER_TOKEN] if request.num_computed_tokens >= request.num_tokens else [])
        chunked += any(not s for s in sampled)
        output = ModelRunnerOutput(req_ids=ids, req_id_to_index={r: j for j, r in enumerate(ids)}, sampled_token_ids=sampled)
        scheduler.update_from_output(out, output)
        if steps > 100_000:
            raise RuntimeError("vLLM's scheduler made no progress in 100000 steps")
    counts = [r.num_preemptions for r in requests]
    return Schedule(steps, sum(counts), sum(c > 0 for c in counts), chunked, max_running)

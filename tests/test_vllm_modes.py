"""engine=vllm in its other execution modes gives the same greedy tokens as engine=transformers.

- compiled CPU path (torch.compile, no enforce_eager): slow, about 60 s, mostly compilation;
- tensor parallelism 2: every rank sees the all-gathered logits and the all-reduced embeddings,
  so every rank writes the same mixture (no broadcast from rank 0); two worker processes.
"""

from __future__ import annotations

import os

import pytest

from harness.engines.base import Request
from harness.methods import make_spec

pytestmark = pytest.mark.vllm
SPECS = [make_spec(), make_spec("direct_mixture"), make_spec("moi", beta=0.5), make_spec("moi", beta=2.0),
         make_spec("moi", beta=1.0, support="full"),
         make_spec("soft_thinking", entropy_threshold=100.0, length_threshold=4, after_thinking_temperature=0.0)]


def vllm_and_transformers(model_cfg: dict, engine_cfg: dict, n_requests: int, max_tokens: int):
    """The same greedy requests through vLLM (with ``engine_cfg``) and transformers:
    ``(requests, vllm completions, transformers completions, vLLM engine info)``."""
    from harness.engines.transformers_engine import TransformersEngine
    from harness.engines.vllm.engine import VLLMEngine

    requests = [
        Request(id=str(i), prompt="the answer number is " * (i + 1), method=SPECS[i % len(SPECS)],
                temperature=0.6 if SPECS[i % len(SPECS)].method == "soft_thinking" else 0, max_tokens=max_tokens, seed=i)
        for i in range(n_requests)
    ]
    engine = VLLMEngine(model_cfg, {"kv_cache_memory_bytes": 16 << 20, **engine_cfg})
    try:
        got = {r.id: c for r, c in engine.generate(requests)}
        info = engine.info()
    finally:
        engine.close()
    want = {r.id: c for r, c in TransformersEngine(model_cfg, {}).generate(requests)}
    return requests, got, want, info


@pytest.mark.slow
def test_compiled_path_matches_transformers(tiny_model_cfg):
    requests, got, want, _ = vllm_and_transformers(
        {**tiny_model_cfg, "max_model_len": 512}, {"enforce_eager": False, "max_num_seqs": 4}, 10, 16)
    for request in requests:
        assert got[request.id].token_ids == want[request.id].token_ids, request.id


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="tensor parallelism 2 needs 2 CPU cores")
def test_tensor_parallel_2_matches_transformers(tiny_model_cfg):
    requests, got, want, info = vllm_and_transformers(
        {**tiny_model_cfg, "max_model_len": 512}, {"enforce_eager": True, "tensor_parallel_size": 2}, len(SPECS), 12)
    assert info["engine_args"]["tensor_parallel_size"] == 2
    for request in requests:
        assert got[request.id].token_ids == want[request.id].token_ids, request.id
        assert got[request.id].mixed_steps == want[request.id].mixed_steps, request.id

"""engine=vllm with tensor parallelism 2 on the CPU: the same greedy tokens as engine=transformers.

Every rank sees the all-gathered logits and the all-reduced embeddings, so every rank writes the
same mixture (no broadcast from rank 0). About 90 s on 2 cores: two worker processes.
"""

from __future__ import annotations

import os

import pytest

from harness.engines.base import Request
from harness.moi import MixSpec

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="tensor parallelism 2 needs 2 CPU cores"),
]


def test_tensor_parallel_2_matches_transformers(tiny_model_cfg):
    from harness.engines.transformers_engine import TransformersEngine
    from harness.engines.vllm_engine import VLLMEngine

    model_cfg = {**tiny_model_cfg, "max_model_len": 512}
    specs = [MixSpec(), MixSpec("direct_mixture"), MixSpec("moi", 0.5), MixSpec("moi", 2.0),
             MixSpec("moi", 1.0, support="full")]
    requests = [
        Request(id=str(i), prompt="the answer number is " * (i + 1), mix=specs[i % len(specs)], temperature=0,
                max_tokens=12)
        for i in range(len(specs))
    ]
    engine = VLLMEngine(model_cfg, {"enforce_eager": True, "kv_cache_memory_bytes": 16 << 20, "tensor_parallel_size": 2})
    try:
        got = {r.id: c for r, c in engine.generate(requests)}
        assert engine.info()["engine_args"]["tensor_parallel_size"] == 2
    finally:
        engine.close()
    reference = TransformersEngine(model_cfg, {})
    want = {r.id: c for r, c in reference.generate(requests)}
    for request in requests:
        assert got[request.id].token_ids == want[request.id].token_ids, request.id
        assert got[request.id].mixed_steps == want[request.id].mixed_steps, request.id

"""engine=vllm on the compiled CPU path (torch.compile, no enforce_eager): same tokens as transformers.

Slow (about 60 s, mostly compilation): run with ``pytest -m slow``.
"""

from __future__ import annotations

import pytest

from harness.engines.base import Request
from harness.moi import MixSpec

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_compiled_path_matches_transformers(tiny_model_cfg):
    from harness.engines.transformers_engine import TransformersEngine
    from harness.engines.vllm_engine import VLLMEngine

    model_cfg = {**tiny_model_cfg, "max_model_len": 512}
    specs = [MixSpec(), MixSpec("direct_mixture"), MixSpec("moi", 0.5), MixSpec("moi", 2.0),
             MixSpec("moi", 1.0, support="full")]
    requests = [
        Request(id=str(i), prompt="the answer number is " * (i + 1), mix=specs[i % len(specs)], temperature=0,
                max_tokens=16)
        for i in range(10)
    ]
    engine = VLLMEngine(model_cfg, {"enforce_eager": False, "kv_cache_memory_bytes": 16 << 20, "max_num_seqs": 4})
    try:
        got = {r.id: c for r, c in engine.generate(requests)}
    finally:
        engine.close()
    want = {r.id: c for r, c in TransformersEngine(model_cfg, {}).generate(requests)}
    for request in requests:
        assert got[request.id].token_ids == want[request.id].token_ids, request.id

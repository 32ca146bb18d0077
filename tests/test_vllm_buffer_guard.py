"""MoI writes its mixtures into vLLM's persistent ``inputs_embeds`` buffer, the one the model (and
CUDA graph replay) reads; a vLLM whose ``_preprocess`` returned a copy would decode unmixed, so
the runner checks it once per engine and fails loudly otherwise."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.engines.base import Request
from harness.methods import make_spec


def fake_runner(buffer: torch.Tensor):
    return SimpleNamespace(inputs_embeds=SimpleNamespace(gpu=buffer), moi=SimpleNamespace(inputs_embeds_checked=False),
                           _moi_buffer_checked=False)


def test_the_persistent_buffer_passes_and_a_copy_fails():
    from harness.engines.vllm.runner import MoIRunnerMixin

    buffer = torch.zeros(16, 8)
    runner = fake_runner(buffer)
    MoIRunnerMixin._moi_check_buffer(runner, buffer[:5])
    assert runner._moi_buffer_checked and runner.moi.inputs_embeds_checked
    for wrong in (buffer[:5].clone(), buffer[2:7], buffer[:, :4]):
        with pytest.raises(RuntimeError, match="not its persistent inputs_embeds buffer"):
            MoIRunnerMixin._moi_check_buffer(fake_runner(buffer), wrong)


@pytest.mark.vllm
def test_an_engine_whose_vllm_hands_out_a_copy_fails_loudly(tiny_model_cfg, monkeypatch):
    from harness.engines.vllm.cpu import MoICPUModelRunner
    from harness.engines.vllm.engine import VLLMEngine
    from harness.engines.vllm.runner import MoIRunnerMixin

    mro = MoICPUModelRunner.__mro__
    owner = next(cls for cls in mro[mro.index(MoIRunnerMixin) + 1 :] if "_preprocess" in cls.__dict__)
    original = owner.__dict__["_preprocess"]

    def copying(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return (out[0], None if out[1] is None else out[1].clone(), *out[2:])

    monkeypatch.setattr(owner, "_preprocess", copying)
    engine = VLLMEngine({**tiny_model_cfg, "max_model_len": 256}, {"enforce_eager": True, "kv_cache_memory_bytes": 8 << 20})
    try:
        standard = Request(id="s", prompt="the answer", method=make_spec(), temperature=0, max_tokens=4)
        assert len(list(engine.generate([standard]))) == 1  # nothing mixes: nothing to check
        mixed = Request(id="m", prompt="the answer", method=make_spec("moi", beta=1.0), temperature=0, max_tokens=4)
        with pytest.raises(Exception) as err:
            list(engine.generate([mixed]))
        assert "not its persistent inputs_embeds buffer" in "".join(map(str, [err.value, err.value.__cause__, err.value.__context__]))
    finally:
        engine.close()

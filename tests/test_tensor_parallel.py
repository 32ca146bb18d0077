"""Tensor-parallel sizes that cannot shard a model are refused in one line, before loading."""

from __future__ import annotations

import pytest

from harness.engines.vllm.settings import MoIConfigError, check_tensor_parallel, valid_tensor_parallel_sizes
from harness.errors import ConfigError

TINY = {"num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 256}
QWEN2_05B = {"num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864}
QWEN25_32B = {"num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 27648}


def test_valid_sizes_divide_the_heads_the_kv_heads_and_the_mlp():
    assert valid_tensor_parallel_sizes(TINY) == [1, 2]
    # 7 divides the 14 heads but neither divides nor is a multiple of the 2 KV heads; 14 does not divide 4864
    assert valid_tensor_parallel_sizes(QWEN2_05B) == [1, 2]
    assert valid_tensor_parallel_sizes(QWEN25_32B) == [1, 2, 4, 8]
    nested = {"text_config": {"num_attention_heads": 32, "num_key_value_heads": 16, "intermediate_size": 21504}}
    assert valid_tensor_parallel_sizes(nested) == [1, 2, 4, 8, 16, 32]
    assert valid_tensor_parallel_sizes({"model_type": "unknown"}) == []  # nothing to check: vLLM decides


def test_a_size_that_cannot_shard_is_refused_naming_the_valid_ones():
    check_tensor_parallel(QWEN2_05B, 2, "qwen")
    with pytest.raises(MoIConfigError) as err:
        check_tensor_parallel(QWEN2_05B, 8, "qwen")
    message = str(err.value)
    assert "tensor_parallel_size=8" in message and "14 attention heads" in message and "valid sizes: 1, 2" in message
    assert "\n" not in message
    check_tensor_parallel({}, 8, "unknown")


@pytest.mark.vllm
@pytest.mark.parametrize("where", ["engine", "every visible GPU"])
def test_engine_refuses_before_loading(tiny_model_cfg, monkeypatch, where):
    import harness.engines.vllm.engine as engine_module

    engine_cfg = {"enforce_eager": True}
    if where == "engine":
        engine_cfg["tensor_parallel_size"] = 4
    else:  # model.tensor_parallel_size=null on a machine with 8 GPUs
        monkeypatch.setattr(engine_module, "visible_gpus", lambda: 8)
    loaded = []
    monkeypatch.setattr("vllm.LLM", lambda **kw: loaded.append(kw))
    with pytest.raises(ConfigError) as err:
        engine_module.VLLMEngine({**tiny_model_cfg, "tensor_parallel_size": None}, engine_cfg)
    message = str(err.value)
    assert "model tiny: tensor_parallel_size=" in message and "valid sizes: 1, 2" in message and "\n" not in message
    assert not loaded

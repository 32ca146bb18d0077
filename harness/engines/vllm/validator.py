"""Admission-time validation of per-request MoI settings.

vLLM calls ``validate_params`` of every custom logits processor when a request is admitted
(``InputProcessor``), before it reaches a worker: a malformed ``moi_*`` field raises
``VLLMValidationError``, which the OpenAI-compatible server answers with HTTP 400 and goes on
serving.
Enable with ``logits_processors=["harness.engines.vllm.validator:MoIValidator"]``. The processor
itself leaves logits unchanged.
"""

from __future__ import annotations

import torch
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from harness.engines.vllm.settings import env_default, request_spec


class MoIValidator(LogitsProcessor):
    """Refuses requests whose ``moi_*`` fields are malformed; otherwise a no-op."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        extra = sampling_params.extra_args or {}
        if any(key.startswith("moi_") for key in extra):
            try:
                request_spec(extra, env_default())
            except ValueError as err:
                raise VLLMValidationError(f"invalid MoI request settings: {err}") from None

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        pass

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        pass

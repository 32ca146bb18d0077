"""Engines by the name used in configs (``engine=NAME``). Imported lazily: vLLM is heavy."""

from __future__ import annotations

import importlib

from harness.engines.base import Completion, Engine, Request
from harness.errors import ConfigError

__all__ = ["ENGINES", "Completion", "Engine", "Request", "engine_class"]

ENGINES = {
    "transformers": "harness.engines.transformers_engine:TransformersEngine",
    "vllm": "harness.engines.vllm.engine:VLLMEngine",
    "openai": "harness.engines.openai_engine:OpenAIEngine",
}


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name``; raises ConfigError listing the valid names."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; valid engines: {', '.join(sorted(ENGINES))}")
    module, attr = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), attr)

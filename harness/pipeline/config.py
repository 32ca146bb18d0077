"""Checking a resolved run config: bad values stop a run at start with one line naming the value
and the valid choices.

Works on the plain dict of a resolved Hydra config (``OmegaConf.to_container(cfg, resolve=True)``).
"""

from __future__ import annotations

import math

from harness.errors import ConfigError
from harness.methods import MethodSpec, method_names, spec_from_config


def method_spec(cfg: dict) -> MethodSpec:
    """The decoding method of a run (raises ConfigError naming a bad value and the valid ones)."""
    method = cfg["method"]
    name = method.get("name")
    if name not in method_names():
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}")
    try:
        return spec_from_config(method)
    except ValueError as err:
        raise ConfigError(f"method {name}: {err}") from None


def max_tokens(cfg: dict) -> int:
    """``sampling.max_tokens``, or the task's default when null."""
    value = cfg["sampling"].get("max_tokens")
    return int(value if value is not None else cfg["task"]["max_tokens"])


def validate(cfg: dict) -> None:
    """Raise ConfigError for any value that cannot run."""
    from harness.engines import ENGINES
    from harness.tasks import task_names

    method_spec(cfg)
    sampling = cfg["sampling"]
    temperature = sampling.get("temperature")
    if not _number(temperature) or temperature < 0:
        raise ConfigError(f"sampling.temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    top_p = sampling.get("top_p")
    if not _number(top_p) or not 0 < top_p <= 1:
        raise ConfigError(f"sampling.top_p must be in (0, 1], got {top_p!r}")
    top_k = sampling.get("top_k")
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise ConfigError(f"sampling.top_k must be an integer (<= 0 disables it), got {top_k!r}")
    tokens = sampling.get("max_tokens")
    if tokens is not None and (not isinstance(tokens, int) or tokens < 1):
        raise ConfigError(f"sampling.max_tokens must be a positive integer or null, got {tokens!r}")
    task = cfg["task"]
    if task.get("name") not in task_names():
        raise ConfigError(f"unknown task {task.get('name')!r}; valid tasks: {', '.join(task_names())}")
    limit = task.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"task.limit must be a positive integer or null, got {limit!r}")
    n_samples = task.get("n_samples", 1)
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"task.n_samples must be a positive integer, got {n_samples!r}")
    engine = cfg["engine"].get("name")
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; valid engines: {', '.join(sorted(ENGINES))}")
    if not isinstance(cfg.get("seed"), int):
        raise ConfigError(f"seed must be an integer, got {cfg.get('seed')!r}")
    grading = cfg.get("grading") or {}
    if not isinstance(grading.get("workers", 1), int) or grading.get("workers", 1) < 1:
        raise ConfigError(f"grading.workers must be a positive integer, got {grading.get('workers')!r}")
    if max_tokens(cfg) < 1:
        raise ConfigError(f"task.max_tokens must be a positive integer, got {task.get('max_tokens')!r}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

"""Checking a resolved run config, and the identity that names its run directory.

Works on the plain dict of a resolved Hydra config (``OmegaConf.to_container(cfg, resolve=True)``).
Bad values stop a run at start with one line naming the value and the valid choices.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from harness.moi import METHODS, MixSpec


class ConfigError(ValueError):
    """A config value that cannot run; the message names it and the valid choices."""


def mix_spec(cfg: dict) -> MixSpec:
    """The MoI settings of a run (raises ConfigError for bad values)."""
    method = cfg["method"]
    name = method.get("name")
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    try:
        beta = method.get("beta", 1.0)
        return MixSpec(
            method=name,
            beta=float(beta) if isinstance(beta, (int, float)) and not isinstance(beta, bool) else beta,
            support=method.get("support", "topk"),
            k=method.get("k", 20),
            reference_quirks=method.get("reference_quirks", False),
        )
    except ValueError as err:
        raise ConfigError(f"method {name}: {err}") from None


def max_tokens(cfg: dict) -> int:
    """``sampling.max_tokens``, or the task's default when null."""
    value = cfg["sampling"].get("max_tokens")
    return int(value if value is not None else cfg["task"]["max_tokens"])


def validate(cfg: dict) -> None:
    """Raise ConfigError for any value that cannot run."""
    from harness.engines import ENGINES
    from tasks import task_names

    mix_spec(cfg)
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


def identity(cfg: dict) -> dict:
    """What determines a run's samples: two configs with the same identity share a directory.

    Performance knobs (batch sizes, workers, memory) and grader settings are left out; so are
    settings a method ignores (Standard has no beta), so equivalent runs are never duplicated.
    """
    spec = mix_spec(cfg)
    method = {"name": spec.method}
    if spec.method != "standard":
        method.update(support=spec.support, reference_quirks=spec.reference_quirks)
        if spec.support == "topk":
            method["k"] = spec.k
    if spec.method == "moi":
        method["beta"] = spec.beta
    model = cfg["model"]
    model_id = {"name": model.get("name"), "dtype": model.get("dtype"), "revision": model.get("revision")}
    if model.get("build"):
        model_id.update(build=model["build"], build_seed=model.get("build_seed", 0))
    else:
        model_id["path"] = model.get("path")
    model_id["prompting"] = model.get("prompting")
    task = {k: v for k, v in cfg["task"].items() if k not in ("grader", "max_tokens")}
    sampling = dict(cfg["sampling"], max_tokens=max_tokens(cfg))
    return {
        "model": model_id,
        "task": task,
        "method": method,
        "sampling": sampling,
        "seed": cfg["seed"],
        "engine": cfg["engine"]["name"],
    }


def run_name(cfg: dict) -> str:
    """A readable, unique directory name: settings, then a hash of the identity."""
    spec = mix_spec(cfg)
    digest = hashlib.sha256(json.dumps(identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:10]
    method = spec.method + (f"-b{spec.beta:g}" if spec.method == "moi" else "")
    sampling = cfg["sampling"]
    return f"{method}_T{sampling['temperature']:g}_p{sampling['top_p']:g}_s{cfg['seed']}_{cfg['engine']['name']}_{digest}"


def run_dir(cfg: dict) -> Path:
    """Where a run lives: ``results_dir/task/model/run_name``."""
    return Path(cfg["results_dir"]) / str(cfg["task"]["name"]) / str(cfg["model"]["name"]) / run_name(cfg)

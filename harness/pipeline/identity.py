"""The run identity: everything that determines a run's samples, and the directory named after it.

Two configs with the same identity share a run directory, so re-running a setting resumes it and
equivalent settings (Standard at two betas) are run once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.pipeline.config import max_tokens, method_spec


def identity(cfg: dict) -> dict:
    """What determines a run's samples: two configs with the same identity share a directory.

    Performance knobs (batch sizes, workers, memory) and grader settings are left out; so are
    settings a method ignores (Standard has no beta), so equivalent runs are never duplicated.
    """
    method = method_spec(cfg).identity()
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
    digest = hashlib.sha256(json.dumps(identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:10]
    method = method_spec(cfg).tag()
    sampling = cfg["sampling"]
    return f"{method}_T{sampling['temperature']:g}_p{sampling['top_p']:g}_s{cfg['seed']}_{cfg['engine']['name']}_{digest}"


def run_dir(cfg: dict) -> Path:
    """Where a run lives: ``results_dir/task/model/run_name``."""
    return Path(cfg["results_dir"]) / str(cfg["task"]["name"]) / str(cfg["model"]["name"]) / run_name(cfg)

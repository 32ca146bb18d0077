"""The run identity: everything that determines a run's samples, and the directory named after it.

Two configs with the same identity share a run directory, so re-running a setting resumes it and
equivalent settings (Standard at two betas) are run once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.pipeline.config import max_tokens, method_spec
from harness.tasks.data import local_path, sha256_file

# Task keys that are not part of the identity: which of a run's samples an invocation needs (a
# view: ``limit``, ``n_samples``), what a dry run assumes (``expected_size``), how to grade
# (``grader``), and ``max_tokens`` (the identity has the effective value, under ``sampling``).
VIEW_KEYS = ("limit", "n_samples")
NOT_IDENTITY = (*VIEW_KEYS, "expected_size", "grader", "max_tokens")
_FILE_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str) -> str | None:
    """The sha256 of a local data file (cached while its size and time stamp stay the same)."""
    found = local_path(path)
    if not found.is_file():
        return None
    stat = found.stat()
    key = (str(found.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(found)
    return _FILE_DIGESTS[key]


def task_identity(task: dict) -> dict:
    """The task part of the identity: everything but the view and the grader settings, with the
    sha256 of local data files (a changed file is another setting)."""
    out = {k: v for k, v in task.items() if k not in NOT_IDENTITY}
    data = dict(out.get("data") or {})
    for key in ("path", "zip_path"):
        if data.get(key):
            data[f"{key}_sha256"] = file_digest(data[key])
    if data:
        out["data"] = data
    return out


def identity(cfg: dict) -> dict:
    """What determines a run's samples: two configs with the same identity share a directory.

    Performance knobs (batch sizes, workers, memory), grader settings and the view (how many
    problems and samples per problem an invocation needs: a run grows into more) are left out;
    so are settings a method ignores (Standard has no beta), so equivalent runs are never duplicated.
    """
    method = method_spec(cfg).identity()
    model = cfg["model"]
    model_id = {"name": model.get("name"), "dtype": model.get("dtype"), "revision": model.get("revision"),
                # the context caps every sample's max_tokens (prompt + completion <= max_model_len)
                "max_model_len": model.get("max_model_len")}
    if model.get("build"):
        model_id.update(build=model["build"], build_seed=model.get("build_seed", 0))
    else:
        model_id["path"] = model.get("path")
    model_id["prompting"] = model.get("prompting")
    sampling = dict(cfg["sampling"], max_tokens=max_tokens(cfg))
    return {
        "model": model_id,
        "task": task_identity(cfg["task"]),
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

"""Reading stored runs into pandas: one row per run, or one row per graded sample.

Everything here reads run directories only (``summary.json``, ``samples.jsonl``), so tables can
be rebuilt anywhere, without a GPU. A run's *setting* is its identity (``summary.json``'s
``identity``: everything that determined its samples), flattened into dotted columns
(``method.beta``, ``sampling.temperature``, ``task.data.path``...); its *view* is which of its
samples the summary covers (``view``: the problem ids and the samples per problem). Three keys
derive from them, and everything downstream groups by these keys only, so two results are never
pooled unless every field of their identity agrees:

- ``setting_key``: the identity without the seed (runs that differ only by seed are pooled);
- ``config_key``: the identity without the seed and the task (a row of the results table: one
  configuration across tasks);
- ``task_key``: the task part of the identity and the view (a column: one task on one problem
  set with one number of samples per problem).

Run directories written before identities were recorded ("legacy": their summary has no
``identity``) are read too: their setting is rebuilt from the summary's own fields (model, task,
method, beta, temperature, top-p, seed, engine) and their view from their samples.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness.methods import get_method
from harness.stats import clustered_stderr, ids_digest
from harness.storage import SAMPLES, read_jsonl
from harness.tasks import task_order

SHORT = ["model", "task", "method", "beta", "temperature", "top_p", "seed", "engine"]
STATS = ["accuracy", "stderr", "n", "complete", "mean_completion_tokens", "mixed_steps"]


def run_dirs(root: str | Path) -> list[Path]:
    """Every run directory under ``root`` (those holding a summary.json), in sorted order."""
    return sorted(p.parent for p in Path(root).rglob("summary.json"))


def flatten(value, prefix: str = "") -> dict:
    """A nested identity as dotted keys; lists become JSON text (so that values can be grouped)."""
    if isinstance(value, dict):
        out = {}
        for key in sorted(value):
            out |= flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list):
        return {prefix: json.dumps(value, sort_keys=True)}
    return {prefix: value}


def _key(fields: dict) -> str:
    return json.dumps(fields, sort_keys=True, default=str)


def legacy_identity(summary: dict) -> dict:
    """The setting of a run written before identities were recorded, from its summary's fields."""
    method = {"name": summary.get("method")}
    if summary.get("beta") is not None:
        method["beta"] = float(summary["beta"])
    return {
        "model": {"name": summary.get("model")},
        "task": {"name": summary.get("task")},
        "method": method,
        "sampling": {"temperature": summary.get("temperature"), "top_p": summary.get("top_p")},
        "seed": summary.get("seed"),
        "engine": summary.get("engine"),
    }


def _view(summary: dict, records: list[dict] | None) -> dict:
    view = summary.get("view")
    if view:
        return view
    ids = sorted({str(r["problem_id"]) for r in records or []})
    sizes = {}
    for r in records or []:
        sizes[str(r["problem_id"])] = sizes.get(str(r["problem_id"]), 0) + 1
    return {"problem_ids": ids, "problems": len(ids), "n_samples": max(sizes.values(), default=0),
            "problem_ids_sha256": ids_digest(ids)}


def _run_row(path: Path, records: list[dict] | None = None) -> dict:
    summary = json.loads((path / "summary.json").read_text())
    identity = summary.get("identity") or legacy_identity(summary)
    if not summary.get("view") and records is None:
        records = read_jsonl(path / SAMPLES)
    view = _view(summary, records)
    fields = flatten(identity)
    setting = {k: v for k, v in fields.items() if k != "seed"}
    row = {
        **fields,
        "run": str(path),
        "legacy": "identity" not in summary,
        "setting_key": _key(setting),
        "config_key": _key({k: v for k, v in setting.items() if not k.startswith("task.")}),
        "task_key": _key({**{k: v for k, v in setting.items() if k.startswith("task.")},
                          "view.problems": view.get("problem_ids_sha256"), "view.n_samples": view.get("n_samples")}),
        "problem_ids": tuple(view.get("problem_ids") or ()),
        "n_problems": view.get("problems"),
        "n_samples": view.get("n_samples"),
        "model": fields.get("model.name"),
        "task": fields.get("task.name"),
        "method": fields.get("method.name"),
        "beta": fields.get("method.beta"),
        "temperature": fields.get("sampling.temperature"),
        "top_p": fields.get("sampling.top_p"),
        "seed": fields.get("seed"),
        "engine": fields.get("engine"),
        "accuracy": summary["accuracy"],
        "stderr": summary["stderr"],
        "n": summary["n"],
        "complete": summary.get("complete", True),
        "mean_completion_tokens": summary.get("mean_completion_tokens"),
        "mixed_steps": (summary.get("mixed_steps") or {}).get("total", 0),
    }
    return row


def load_runs(root: str | Path) -> pd.DataFrame:
    """One row per run: its flattened setting, its keys and view, accuracy and sizes."""
    rows = [_run_row(p) for p in run_dirs(root)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*SHORT, "run", "setting_key", "config_key", "task_key", *STATS])
    return frame


def view_records(run) -> list[dict]:
    """The sample records in a run's view (a row of :func:`load_runs`): its problems, its first
    ``n_samples`` samples per problem."""
    wanted = set(run.problem_ids)
    return [r for r in read_jsonl(Path(run.run) / SAMPLES)
            if str(r["problem_id"]) in wanted and int(r.get("sample_index", 0)) < (run.n_samples or 0)]


def load_samples(root: str | Path, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per graded sample of each run's view (its problems, its first ``n_samples`` samples
    per problem), with the run's keys and short settings."""
    runs = load_runs(root) if runs is None else runs
    frames = []
    for run in runs.itertuples(index=False):
        records = view_records(run)
        frame = pd.DataFrame({
            "problem_id": [str(r["problem_id"]) for r in records],
            "sample_index": [int(r.get("sample_index", 0)) for r in records],
            "correct": [bool(r.get("correct")) for r in records],
        })
        for key in [*SHORT, "run", "setting_key", "config_key", "task_key"]:
            frame[key] = getattr(run, key)
        frames.append(frame)
    columns = [*SHORT, "run", "setting_key", "config_key", "task_key", "problem_id", "sample_index", "correct"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


# -- names and order --------------------------------------------------------------------------------
def method_label(name: str) -> str:
    """What tables call a method: its registered label (its name if it is not registered)."""
    try:
        return get_method(name).label
    except ValueError:
        return str(name)


def method_rank(name: str) -> tuple:
    try:
        return (get_method(name).order, str(name))
    except ValueError:
        return (1000, str(name))


def searched_params(name: str) -> tuple[str, ...]:
    """The parameters a grid searches for a method (``Method.searched``)."""
    try:
        return get_method(name).searched
    except ValueError:
        return ()


def task_columns(tasks) -> list[str]:
    """Task names in the paper's order, then any others alphabetically."""
    return sorted(set(tasks), key=task_order)


NO_BETA = -1.0  # the sortable stand-in for "this method has no beta"


def beta_key(beta) -> float:
    """A sortable, groupable beta: methods without one (None or NaN) become ``NO_BETA``, first."""
    return NO_BETA if beta is None or (isinstance(beta, float) and math.isnan(beta)) else float(beta)


def beta_from_key(key: float) -> float | None:
    """The beta a :func:`beta_key` stands for (None for ``NO_BETA``)."""
    return None if key == NO_BETA else float(key)


def clustered_se(samples: pd.DataFrame) -> float:
    """Standard error (in percentage points) of the mean accuracy of pooled samples, problems as
    the sampling unit (``harness.stats.clustered_stderr``)."""
    return 100 * clustered_stderr(samples.groupby("problem_id")["correct"].apply(list).to_dict())

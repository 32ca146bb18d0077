"""Reading stored runs into pandas: one row per run, or one row per graded sample.

Everything here reads run directories only (``config.yaml``, ``summary.json``,
``samples.jsonl``), so tables can be rebuilt anywhere, without a GPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness.stats import clustered_stderr
from harness.storage import SAMPLES, read_jsonl

RUN_COLUMNS = ["model", "task", "method", "beta", "temperature", "top_p", "seed", "engine"]
TASK_ORDER = ["aime", "countdown", "gpqa_diamond", "livecodebench"]
TASK_LABELS = {"aime": "AIME", "countdown": "CountDown4", "gpqa_diamond": "GPQA-D", "livecodebench": "LiveCodeBench"}
METHOD_ORDER = ["standard", "direct_mixture", "moi"]
METHOD_LABELS = {"standard": "Standard", "direct_mixture": "Direct Mixture", "moi": "MoI"}


def run_dirs(root: str | Path) -> list[Path]:
    """Every run directory under ``root`` (those holding a summary.json), in sorted order."""
    return sorted(p.parent for p in Path(root).rglob("summary.json"))


def _run_row(path: Path) -> dict:
    summary = json.loads((path / "summary.json").read_text())
    row = {key: summary.get(key) for key in RUN_COLUMNS}
    row.update(
        run=str(path),
        accuracy=summary["accuracy"],
        stderr=summary["stderr"],
        n=summary["n"],
        complete=summary.get("complete", True),
        mean_completion_tokens=summary.get("mean_completion_tokens"),
        mixed_steps=summary.get("mixed_steps", {}).get("total", 0),
    )
    return row


def load_runs(root: str | Path) -> pd.DataFrame:
    """One row per run: its settings, accuracy, standard error and sizes."""
    rows = [_run_row(p) for p in run_dirs(root)]
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, "run", "accuracy", "stderr", "n", "complete",
                                       "mean_completion_tokens", "mixed_steps"])


def load_samples(root: str | Path) -> pd.DataFrame:
    """One row per graded sample: its run's settings, problem id, sample index, correct."""
    frames = []
    for path in run_dirs(root):
        settings = _run_row(path)
        records = read_jsonl(path / SAMPLES)
        frame = pd.DataFrame(
            {
                "problem_id": [str(r["problem_id"]) for r in records],
                "sample_index": [int(r.get("sample_index", 0)) for r in records],
                "correct": [bool(r.get("correct")) for r in records],
            }
        )
        for key in [*RUN_COLUMNS, "run"]:
            frame[key] = settings[key]
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*RUN_COLUMNS, "run", "problem_id", "sample_index", "correct"])
    return pd.concat(frames, ignore_index=True)


def task_columns(tasks) -> list[str]:
    """Tasks in the paper's order, then any others alphabetically."""
    present = set(tasks)
    return [t for t in TASK_ORDER if t in present] + sorted(present - set(TASK_ORDER))


NO_BETA = -1.0  # the sortable stand-in for "this method has no beta"


def beta_key(beta) -> float:
    """A sortable, groupable beta: methods without one (None or NaN) become ``NO_BETA``, first."""
    return NO_BETA if beta is None or (isinstance(beta, float) and math.isnan(beta)) else float(beta)


def beta_from_key(key: float) -> float | None:
    """The beta a :func:`beta_key` stands for (None for ``NO_BETA``)."""
    return None if key == NO_BETA else float(key)


def method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def clustered_se(samples: pd.DataFrame) -> float:
    """Standard error (in percentage points) of the mean accuracy of pooled samples, problems as
    the sampling unit (``harness.stats.clustered_stderr``)."""
    return 100 * clustered_stderr(samples.groupby("problem_id")["correct"].apply(list).to_dict())

"""What the methods do to the text, beside accuracy (``moi-table RUNS_DIR behaviour=true``).

On a small real model accuracy is near zero everywhere, but the methods still differ: one row per
(model, task, method, beta, temperature, top-p), pooled over seeds, with

- **format %**: samples that wrote an answer in the task's format: CountDown4 a parseable
  expression in ``<answer>`` tags or ``\\boxed{}`` (the grader's ``format_ok``), AIME a ``\\boxed{}``
  (the grader's ``source``); ``-`` for tasks whose grader records neither;
- **mean tokens** per completion and **length-capped %** (``finish_reason == "length"``);
- **mixed %**: the share of fed-back tokens that went back as mixtures (0 for Standard).

:func:`examples` picks a few completions per row (the same problems for every method), shown
on one line each with newlines as ``⏎`` (runs of them counted), so the methods can be compared
side by side. Reads run directories only.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from harness.analysis.runs import METHOD_LABELS, TASK_LABELS, beta_key, method_rank, run_dirs, task_columns
from harness.errors import DataError
from harness.storage import SAMPLES, read_jsonl

ROW_KEYS = ["model", "task", "method", "beta", "temperature", "top_p"]


def format_ok(details: dict | None) -> bool | None:
    """Whether a graded sample followed the task's answer format (None: the grader cannot tell)."""
    details = details or {}
    if "format_ok" in details:
        return bool(details["format_ok"])
    if "source" in details:
        return details["source"] == "boxed"
    return None


def load(root: str | Path) -> pd.DataFrame:
    """One row per graded sample of every run under ``root``: settings, tokens, finish, format."""
    import json

    rows = []
    for path in run_dirs(root):
        summary = json.loads((path / "summary.json").read_text())
        settings = {key: summary.get(key) for key in ROW_KEYS + ["seed"]}
        for record in read_jsonl(path / SAMPLES):
            tokens = int(record.get("completion_tokens") or 0)
            rows.append({
                **settings,
                "run": str(path),
                "problem_id": str(record["problem_id"]),
                "sample_index": int(record.get("sample_index", 0)),
                "correct": bool(record.get("correct")),
                "format_ok": format_ok(record.get("grade_details")),
                "tokens": tokens,
                "length_capped": record.get("finish_reason") == "length",
                "mixed_steps": record.get("mixed_steps"),
                "fed_back": max(tokens - 1, 0),
                "completion": record.get("completion", ""),
            })
    if not rows:
        raise DataError(f"no runs with samples under {root}")
    return pd.DataFrame(rows)


def _order(frame: pd.DataFrame, then: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows in the paper's order: model, task, method, beta, temperature, top-p (then ``then``)."""
    tasks = task_columns(frame["task"].unique())
    frame = frame.assign(_task=frame["task"].map(tasks.index), _method=frame["method"].map(method_rank),
                         _beta=frame["beta"].map(beta_key))
    frame = frame.sort_values(["model", "_task", "_method", "_beta", "temperature", "top_p", *then], kind="stable")
    return frame.drop(columns=["_task", "_method", "_beta"]).reset_index(drop=True)


def table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (seeds pooled): n, accuracy, format, tokens, length-capped and mixed shares."""
    rows = []
    frame = samples.copy()
    frame["beta"] = frame["beta"].astype(object).where(frame["beta"].notna(), None)
    for key, group in frame.groupby(ROW_KEYS, dropna=False, sort=False):
        known = group["format_ok"].dropna()
        mixed = group["mixed_steps"].dropna()
        fed_back = group.loc[mixed.index, "fed_back"].sum()
        rows.append({
            **dict(zip(ROW_KEYS, key)),
            "n": len(group),
            "seeds": group["seed"].nunique(),
            "accuracy": 100.0 * group["correct"].mean(),
            "format": 100.0 * known.astype(bool).mean() if len(known) else math.nan,
            "mean_tokens": group["tokens"].mean(),
            "length_capped": 100.0 * group["length_capped"].mean(),
            "mixed": 100.0 * mixed.sum() / fed_back if fed_back else (0.0 if len(mixed) else math.nan),
        })
    return _order(pd.DataFrame(rows))


def _num(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:g}"


def to_markdown(frame: pd.DataFrame) -> str:
    header = ["Model", "Task", "Method", "beta", "T", "top-p", "n", "seeds", "Acc %", "Format %", "Mean tokens",
              "Length-capped %", "Mixed %"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        cells = [row.model, TASK_LABELS.get(row.task, row.task), METHOD_LABELS.get(row.method, row.method),
                 "-" if row.beta is None or row.beta != row.beta else f"{row.beta:g}", f"{row.temperature:g}",
                 f"{row.top_p:g}", str(row.n), str(row.seeds), _num(row.accuracy), _num(row.format),
                 _num(row.mean_tokens), _num(row.length_capped), _num(row.mixed)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "Pooled over seeds. Format %: answers in the task's format (CountDown4: a parseable expression in "
        "<answer> tags or \\boxed{}; AIME: a \\boxed{} answer). Length-capped %: completions that hit max_tokens. "
        "Mixed %: fed-back tokens that went back as mixtures.",
    ]
    return "\n".join(lines + notes) + "\n"


def one_line(text: str, width: int) -> str:
    """A completion on one line: newlines as ``⏎`` (a run of n as ``⏎×n``), cut to ``width`` characters."""
    def newlines(match: re.Match) -> str:
        n = len(match.group(0))
        return " ⏎ " if n == 1 else f" ⏎×{n} "

    flat = re.sub(r"\n+", newlines, text.replace("\r", ""))
    flat = re.sub(r"[ \t]{2,}", " ", flat).strip()
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def examples(samples: pd.DataFrame, per_task: int = 1, width: int = 160) -> str:
    """The first ``per_task`` problems of each task, one line per setting (its lowest seed's first
    sample), so every method is shown on the same problems."""
    frame = _order(samples, then=("seed", "sample_index")).assign(_beta=samples["beta"].map(beta_key))
    setting = ["model", "method", "_beta", "temperature", "top_p"]
    lines = []
    for task in task_columns(frame["task"].unique()):
        of_task = frame[frame["task"] == task]
        for problem in sorted(of_task["problem_id"].unique(), key=lambda p: (len(p), p))[:per_task]:
            lines.append(f"{TASK_LABELS.get(task, task)}, problem {problem}:")
            for _, hit in of_task[of_task["problem_id"] == problem].drop_duplicates(setting).iterrows():
                label = METHOD_LABELS.get(hit["method"], hit["method"])
                if hit["method"] == "moi":
                    label += f" b={hit['beta']:g}"
                capped = ", capped" if hit["length_capped"] else ""
                lines.append(f"  {label:<16} ({hit['tokens']:>4} tok{capped}): {one_line(hit['completion'], width)}")
    return "\n".join(lines) + "\n"

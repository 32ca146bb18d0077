"""The results table of every run under a directory (``moi-table RUNS_DIR``).

One row per (model, method, beta, temperature, top-p), one column per task plus Avg; each entry
is the mean accuracy (%) over all samples of all seeds with its standard error (problems as the
sampling unit); Avg is the mean over the tasks, for rows that have every task. Then a "Gain vs.
Standard" row per model: per task, the best MoI row minus the best Standard row. The command
writes ``table.md`` and ``table.csv`` beside the runs (or into ``out``); the same runs always give
byte-identical files.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.analysis.runs import (
    METHOD_LABELS,
    TASK_LABELS,
    beta_key,
    clustered_se,
    load_samples,
    method_rank,
    task_columns,
)
from harness.errors import DataError

ROW_KEYS = ["model", "method", "beta", "temperature", "top_p"]


def entry_stats(samples: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy and clustered standard error per (row keys, task), in percent."""
    rows = []
    frame = samples.copy()
    frame["beta"] = frame["beta"].astype(object).where(frame["beta"].notna(), None)
    for key, group in frame.groupby([*ROW_KEYS, "task"], dropna=False, sort=True):
        rows.append({
            **dict(zip([*ROW_KEYS, "task"], key)),
            "accuracy": 100.0 * float(group["correct"].mean()),
            "stderr": clustered_se(group),
            "n_samples": len(group),
            "n_problems": group["problem_id"].nunique(),
            "n_runs": group["run"].nunique(),
        })
    return pd.DataFrame(rows)


def wide_table(stats: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per row key; columns TASK, TASK_se, avg, avg_se; sorted as the paper lays it out."""
    tasks = task_columns(stats["task"].unique())
    rows = []
    for key, group in stats.groupby(ROW_KEYS, dropna=False, sort=False):
        row = dict(zip(ROW_KEYS, key))
        by_task = group.set_index("task")
        for task in tasks:
            row[task] = by_task.loc[task, "accuracy"] if task in by_task.index else math.nan
            row[f"{task}_se"] = by_task.loc[task, "stderr"] if task in by_task.index else math.nan
        complete = all(not math.isnan(row[t]) for t in tasks)  # Avg only over every task
        row["avg"] = sum(row[t] for t in tasks) / len(tasks) if complete else math.nan
        row["avg_se"] = math.sqrt(sum(row[f"{t}_se"] ** 2 for t in tasks)) / len(tasks) if complete else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    table["_method"] = table["method"].map(method_rank)
    table["_beta"] = table["beta"].map(beta_key)
    table = table.sort_values(["model", "_method", "_beta", "temperature", "top_p"], kind="stable")
    return table.drop(columns=["_method", "_beta"]).reset_index(drop=True), tasks


def gains(table: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Per model and task: the best MoI row minus the best Standard row (the paper's Table 1 picks
    the best cell per task too); Avg: the mean of the task gains."""
    rows = []
    for model, group in table.groupby("model", sort=True):
        moi, standard = group[group.method == "moi"], group[group.method == "standard"]
        if moi.empty or standard.empty:
            continue
        row = {"model": model, "method": "gain_vs_standard"}
        for task in tasks:
            row[task] = moi[task].max() - standard[task].max()
        present = [row[t] for t in tasks if not math.isnan(row[t])]
        row["avg"] = sum(present) / len(present) if present else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value: float, se: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if se is None else f"{value:.2f} ± {se:.2f}"


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.2f}"


def _fmt_num(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:g}"


def to_markdown(table: pd.DataFrame, gain: pd.DataFrame, tasks: list[str]) -> str:
    header = ["Model", "Method", "beta", "T", "top-p", *[TASK_LABELS.get(t, t) for t in tasks], "Avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, group in table.groupby("model", sort=False):
        for _, row in group.iterrows():
            cells = [model, METHOD_LABELS.get(row.method, row.method), _fmt_num(row.beta),
                     _fmt_num(row.temperature), _fmt_num(row.top_p)]
            cells += [_fmt(row[t], row[f"{t}_se"]) for t in tasks] + [_fmt(row["avg"], row["avg_se"])]
            lines.append("| " + " | ".join(cells) + " |")
        for _, row in gain[gain.model == model].iterrows():
            cells = [model, "Gain vs. Standard", "", "", ""] + [_signed(row[c]) for c in [*tasks, "avg"]]
            lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "Accuracy in %, mean over all samples and seeds ± standard error (problems as the sampling unit).",
        "Avg: mean over the tasks (rows with every task). Gain vs. Standard: per task, the best MoI row "
        "minus the best Standard row of the model; its Avg is the mean of those gains.",
    ]
    return "\n".join(lines + notes) + "\n"


def build(root: str | Path) -> tuple[str, pd.DataFrame]:
    """The markdown table and the CSV frame for every run under ``root``."""
    samples = load_samples(root)
    if samples.empty:
        raise DataError(f"no runs with samples under {root}")
    table, tasks = wide_table(entry_stats(samples))
    gain = gains(table, tasks)
    return to_markdown(table, gain, tasks), pd.concat([table, gain], ignore_index=True)

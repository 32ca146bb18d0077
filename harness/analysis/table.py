"""The results table of every run under a directory (``moi-table RUNS_DIR``).

One row per configuration (``config_key``: the setting without task and seed), one column per task
and problem set (``task_key``), plus Avg. Each entry is the mean accuracy (%) over the samples of
all seeds of runs that share both keys, with its standard error (problems as the sampling unit);
runs are never pooled across keys. Columns say how many problems and samples per problem they
cover (and entries how many seeds, where that differs within a column); identity fields that vary
among the rows become columns of their own, so a reader sees why two rows differ. Avg is the mean
over the columns, for rows that have every column and one column per task.

Then, per model and per method other than the baseline (Standard), "Gain vs. Standard": per
column, the method's best row minus the baseline's best row (the paper's Table 1 picks the best
configuration per task too), and McNemar tests of the same pairs (samples paired by problem, seed
and sample index). A model without both gets an empty gains row and a note. The command writes
``table.md`` and ``table.csv`` beside the runs (or into ``out``); the same runs give
byte-identical files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness.analysis.runs import (
    clustered_se,
    load_runs,
    load_samples,
    method_label,
    method_rank,
    searched_params,
)
from harness.errors import DataError
from harness.stats import mcnemar_p
from harness.tasks import task_label, task_order

BASELINE = "standard"
SHORT_NAMES = {"sampling.temperature": "T", "sampling.top_p": "top-p", "sampling.top_k": "top-k",
               "sampling.max_tokens": "max tokens"}
HIDDEN = ("model.name", "method.name")  # shown as Model and Method


def entry_stats(samples: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy and clustered standard error per (config_key, task_key), in percent."""
    rows = []
    for (config, task), group in samples.groupby(["config_key", "task_key"], sort=True):
        rows.append({
            "config_key": config,
            "task_key": task,
            "accuracy": 100.0 * float(group["correct"].mean()),
            "stderr": clustered_se(group),
            "n_samples": len(group),
            "n_problems": group["problem_id"].nunique(),
            "n_seeds": group["seed"].nunique(),
        })
    return pd.DataFrame(rows)


def _varying(keys: list[str], prefix_skip: str) -> list[str]:
    """Fields (dotted) whose values differ among the given JSON keys."""
    decoded = [json.loads(k) for k in keys]
    fields = sorted({f for d in decoded for f in d if not f.startswith(prefix_skip)})
    return [f for f in fields if len({json.dumps(d.get(f), sort_keys=True) for d in decoded}) > 1]


def _columns(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per task_key: its task, label (with what tells variants apart) and coverage."""
    info = runs.groupby("task_key", sort=False).agg(task=("task", "first"), problems=("n_problems", "first"),
                                                    samples=("n_samples", "first")).reset_index()
    labels = []
    for row in info.itertuples():
        label = task_label(row.task)
        same_task = info[info.task == row.task]
        if len(same_task) > 1:  # several variants of one task: say what this one sets
            mine = json.loads(row.task_key)
            detail = ", ".join(f"{f.removeprefix('task.')}={mine[f]}" for f in _varying(list(same_task.task_key), "view.")
                               if mine.get(f) is not None)
            label += f" [{detail}]" if detail else ""
        per = "sample" if row.samples == 1 else "samples"
        labels.append(f"{label} ({row.problems} problems × {row.samples} {per})")
    info["label"] = labels
    for label, same in info.groupby("label"):  # still alike: the problem sets differ
        if len(same) > 1:
            for index in same.index:
                info.loc[index, "label"] = f"{label} [problems {json.loads(info.task_key[index])['view.problems'][:8]}]"
    info["_order"] = [task_order(t) for t in info.task]
    return info.sort_values(["_order", "label"], kind="stable").drop(columns="_order").reset_index(drop=True)


def wide_table(runs: pd.DataFrame, stats: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``(table, columns, shown)``: one row per configuration with each column's accuracy,
    standard error and seeds, Avg; the columns; the identity fields shown beside Model and Method."""
    columns = _columns(runs)
    configs = runs.groupby("config_key", sort=False).agg(model=("model", "first"), method=("method", "first")).reset_index()
    searched = sorted({f"method.{p}" for m in configs.method for p in searched_params(m)})
    shown = searched + ["sampling.temperature", "sampling.top_p"]
    # What sets a model's rows apart: a method's parameters where they differ among its own rows
    # (between methods the Method column says it), any other field where it differs at all.
    within = {f for _, same in configs.groupby("model") for f in _varying(list(same.config_key), "method.")}
    within |= {f for _, same in configs.groupby(["model", "method"]) for f in _varying(list(same.config_key), "task.")
               if f.startswith("method.")}
    shown += [f for f in sorted(within) if f not in shown and f not in HIDDEN]
    rows = []
    for cfg in configs.itertuples():
        fields = json.loads(cfg.config_key)
        row = {"config_key": cfg.config_key, "model": cfg.model, "method": cfg.method, **{f: fields.get(f) for f in shown}}
        mine = stats[stats.config_key == cfg.config_key].set_index("task_key")
        for col in columns.itertuples():
            present = col.task_key in mine.index
            row[col.task_key] = mine.loc[col.task_key, "accuracy"] if present else math.nan
            row[f"{col.task_key}|se"] = mine.loc[col.task_key, "stderr"] if present else math.nan
            row[f"{col.task_key}|seeds"] = int(mine.loc[col.task_key, "n_seeds"]) if present else 0
        one_per_task = columns.task.nunique() == len(columns)
        values = [row[k] for k in columns.task_key]
        complete = one_per_task and all(not math.isnan(v) for v in values)
        row["avg"] = sum(values) / len(values) if complete else math.nan
        row["avg|se"] = (math.sqrt(sum(row[f"{k}|se"] ** 2 for k in columns.task_key)) / len(values)) if complete else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    order = sorted(range(len(table)), key=lambda i: (
        str(table.model[i]), method_rank(table.method[i]), tuple(_sortable(table.loc[i, f]) for f in shown), table.config_key[i]))
    table = table.iloc[order].reset_index(drop=True)
    return table, columns, shown


def _sortable(value) -> tuple:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (0, "")
    return (1, value) if isinstance(value, (int, float)) else (2, str(value))


def comparisons(table: pd.DataFrame, columns: pd.DataFrame, samples: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per model and non-baseline method: per column, best method row minus best baseline row, and
    the McNemar p-value of that pair; plus one-line notes for models that lack a pair."""
    rows, notes = [], []
    for model, group in table.groupby("model", sort=True):
        baseline = group[group.method == BASELINE]
        others = sorted(set(group.method) - {BASELINE}, key=method_rank)
        if baseline.empty:
            if others:
                notes.append(f"{model}: no {method_label(BASELINE)} run, so no gains or McNemar tests")
            continue
        for method in others:
            mine = group[group.method == method]
            row = {"model": model, "method": method}
            for col in columns.task_key:
                if mine[col].isna().all() or baseline[col].isna().all():
                    row[col], row[f"{col}|p"] = math.nan, math.nan
                    continue
                best, base = mine.loc[mine[col].idxmax()], baseline.loc[baseline[col].idxmax()]
                row[col] = best[col] - base[col]
                row[f"{col}|p"] = _mcnemar(samples, best.config_key, base.config_key, col)
            present = [row[c] for c in columns.task_key if not math.isnan(row[c])]
            row["avg"] = sum(present) / len(present) if present else math.nan
            rows.append(row)
    return pd.DataFrame(rows), notes


def _mcnemar(samples: pd.DataFrame, config: str, baseline: str, task_key: str) -> float:
    key = ["problem_id", "seed", "sample_index"]
    pick = samples[samples.task_key == task_key]
    a = pick[pick.config_key == config][key + ["correct"]]
    b = pick[pick.config_key == baseline][key + ["correct"]]
    paired = a.merge(b, on=key, suffixes=("_a", "_b"))
    if paired.empty:
        return math.nan
    return mcnemar_p(int((paired.correct_a & ~paired.correct_b).sum()), int((~paired.correct_a & paired.correct_b).sum()))


def _fmt(value, se=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if se is None else f"{value:.2f} ± {se:.2f}"


def _fmt_field(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def to_markdown(table: pd.DataFrame, columns: pd.DataFrame, shown: list[str], gains: pd.DataFrame, notes: list[str]) -> str:
    names = [SHORT_NAMES.get(f, f.removeprefix("method.") if f.startswith("method.") else f) for f in shown]
    header = ["Model", "Method", *names, *columns.label, "Avg"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # the usual number of seeds per column; entries with another number say theirs
    usual = {col: int(table[col + "|seeds"][table[col + "|seeds"] > 0].mode().min()) for col in columns.task_key}
    for model, group in table.groupby("model", sort=False):
        for _, row in group.iterrows():
            cells = [str(model), method_label(row.method), *[_fmt_field(row[f]) for f in shown]]
            for col in columns.task_key:
                text = _fmt(row[col], row[f"{col}|se"])
                if row[f"{col}|seeds"] and row[f"{col}|seeds"] != usual[col]:
                    text += f" ({row[f'{col}|seeds']} seeds)"
                cells.append(text)
            lines.append("| " + " | ".join(cells + [_fmt(row["avg"], row["avg|se"])]) + " |")
        for _, row in (gains[gains.model == model] if not gains.empty else gains).iterrows():
            label = f"Gain vs. {method_label(BASELINE)}: {method_label(row.method)}"
            cells = [str(model), label, *[""] * len(shown)]
            cells += [_signed(row[c], row[f"{c}|p"]) for c in columns.task_key] + [_signed(row["avg"])]
            lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted(set(usual.values()))
    footer = [
        "",
        "Accuracy in %, mean over all samples and seeds ± standard error (problems as the sampling unit); "
        f"seeds per entry: {', '.join(map(str, seeds)) or '-'} (other numbers are given in brackets).",
        "Avg: mean over the columns (rows with every column, one per task). Gain vs. Standard: per column, the best "
        "row of the method minus the best Standard row of the model (McNemar p-value in brackets); its Avg is the mean "
        "of those gains.",
    ]
    footer += [f"Note: {note}." for note in notes]
    return "\n".join(lines + footer) + "\n"


def _signed(value, p=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:+.2f}"
    return text if p is None or (isinstance(p, float) and math.isnan(p)) else f"{text} (p={p:.3g})"


def build(root: str | Path) -> tuple[str, pd.DataFrame]:
    """The markdown table and the CSV frame for every run under ``root``."""
    runs = load_runs(root)
    samples = load_samples(root, runs)
    if samples.empty:
        raise DataError(f"no runs with samples under {root}")
    runs = runs[runs.run.isin(set(samples.run))]
    table, columns, shown = wide_table(runs, entry_stats(samples))
    gains, notes = comparisons(table, columns, samples)
    markdown = to_markdown(table, columns, shown, gains, notes)
    labels = dict(zip(columns.task_key, columns.label))
    frame = pd.concat([table.assign(kind="result"), gains.assign(kind="gain_vs_standard")], ignore_index=True)
    frame = frame.rename(columns=lambda c: _csv_name(c, labels))
    return markdown, frame


def _csv_name(column: str, labels: dict[str, str]) -> str:
    key, _, suffix = column.partition("|")
    return labels[key] + (f" {suffix}" if suffix else "") if key in labels else column

"""What the methods do to the text, beside accuracy (``moi-table RUNS_DIR behaviour=true``).

On a small real model accuracy is near zero everywhere, but the methods still differ: one row per
setting (a run's identity without its seed: runs are pooled over seeds and nothing else), with

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

from harness.analysis.runs import beta_key, load_runs, method_label, method_rank, task_columns, view_records
from harness.errors import DataError
from harness.tasks import task_label

SHOWN = ["model", "task", "method", "beta", "temperature", "top_p"]  # what a row shows; rows are settings


def format_ok(details: dict | None) -> bool | None:
    """Whether a graded sample followed the task's answer format (None: the grader cannot tell)."""
    details = details or {}
    if "format_ok" in details:
        return bool(details["format_ok"])
    if "source" in details:
        return details["source"] == "boxed"
    return None


def load(root: str | Path) -> pd.DataFrame:
    """One row per graded sample in the view of every run under ``root``: its run's setting
    (``setting_key``: the identity without the seed) and shown fields, tokens, finish, format, and
    the method's per-step histograms (``method_stats``, e.g. MoI's ``entropy_hist``)."""
    runs = load_runs(root)
    rows = []
    for run in runs.itertuples(index=False):
        for record in view_records(run):
            tokens = int(record.get("completion_tokens") or 0)
            rows.append({
                **{key: getattr(run, key) for key in SHOWN},
                "seed": run.seed,
                "setting_key": run.setting_key,
                "run": run.run,
                "problem_id": str(record["problem_id"]),
                "sample_index": int(record.get("sample_index", 0)),
                "correct": bool(record.get("correct")),
                "format_ok": format_ok(record.get("grade_details")),
                "tokens": tokens,
                "length_capped": record.get("finish_reason") == "length",
                "mixed_steps": record.get("mixed_steps"),
                "fed_back": max(tokens - 1, 0),
                "completion": record.get("completion", ""),
                "method_stats": record.get("method_stats") or {},
            })
    if not rows:
        raise DataError(f"no runs with samples under {root}")
    return pd.DataFrame(rows)


def _order(frame: pd.DataFrame, then: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows in the paper's order: model, task, method, beta, temperature, top-p (then ``then``)."""
    tasks = task_columns(frame["task"].unique())
    frame = frame.assign(_task=frame["task"].map(tasks.index), _method=frame["method"].map(method_rank),
                         _beta=frame["beta"].map(beta_key))
    frame = frame.sort_values(["model", "_task", "_method", "_beta", "temperature", "top_p", "setting_key", *then],
                              kind="stable")
    return frame.drop(columns=["_task", "_method", "_beta"]).reset_index(drop=True)


def table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (seeds pooled, nothing else): n, accuracy, format, tokens, length-capped
    and mixed shares."""
    rows = []
    for setting, group in samples.groupby("setting_key", sort=False):
        known = group["format_ok"].dropna()
        mixed = group["mixed_steps"].dropna()
        fed_back = group.loc[mixed.index, "fed_back"].sum()
        first = group.iloc[0]
        rows.append({
            **{key: first[key] for key in SHOWN},
            "setting_key": setting,
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
        cells = [row.model, task_label(row.task), method_label(row.method),
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
    setting = ["setting_key"]
    lines = []
    for task in task_columns(frame["task"].unique()):
        of_task = frame[frame["task"] == task]
        for problem in sorted(of_task["problem_id"].unique(), key=lambda p: (len(p), p))[:per_task]:
            lines.append(f"{task_label(task)}, problem {problem}:")
            for _, hit in of_task[of_task["problem_id"] == problem].drop_duplicates(setting).iterrows():
                label = method_label(hit["method"])
                if hit["method"] == "moi":
                    label += f" b={hit['beta']:g}"
                capped = ", capped" if hit["length_capped"] else ""
                lines.append(f"  {label:<16} ({hit['tokens']:>4} tok{capped}): {one_line(hit['completion'], width)}")
    return "\n".join(lines) + "\n"


def step_histograms(samples: pd.DataFrame) -> pd.DataFrame:
    """Per setting, the method's per-step histograms pooled over its samples (e.g. MoI's entropy H
    and weight on the sampled token: ``Method.histograms``): one row per bin with its range,
    count and share of the setting's steps. Empty when no method recorded any."""
    from harness.methods import get_method

    rows = []
    for setting, group in samples.groupby("setting_key", sort=False):
        first = group.iloc[0]
        try:
            declared = get_method(first["method"]).histograms
        except ValueError:
            continue
        for name, (low, high, bins) in declared.items():
            counts = [0] * bins
            for stats in group["method_stats"]:
                for i, count in enumerate((stats or {}).get(f"{name}_hist") or []):
                    if i < bins:
                        counts[i] += int(count)
            total = sum(counts)
            if not total:
                continue
            width = (high - low) / bins
            for i, count in enumerate(counts):
                rows.append({**{key: first[key] for key in SHOWN}, "setting_key": setting, "stat": name,
                             "low": low + i * width, "high": low + (i + 1) * width, "count": count,
                             "share": count / total})
    columns = [*SHOWN, "setting_key", "stat", "low", "high", "count", "share"]
    return _order(pd.DataFrame(rows, columns=columns)) if rows else pd.DataFrame(columns=columns)


def step_figure(hist: pd.DataFrame, path: Path) -> None:
    """One panel per statistic (MoI: entropy H, weight on the sampled token), one line per
    setting: the share of steps in each bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = list(dict.fromkeys(hist["stat"]))
    fig, axes = plt.subplots(1, len(stats), figsize=(4.6 * len(stats), 3.3), dpi=120, squeeze=False)
    titles = {"entropy": "normalized entropy H of p per step", "sampled_weight": "weight on the sampled token per step"}
    for ax, stat in zip(axes[0], stats):
        part = hist[hist["stat"] == stat]
        for _, line in part.groupby("setting_key", sort=False):
            first = line.iloc[0]
            label = method_label(first["method"]) + ("" if first["beta"] != first["beta"] or first["beta"] is None
                                                     else f" b={first['beta']:g}")
            centres = (line["low"] + line["high"]) / 2
            ax.plot(centres, 100 * line["share"], marker=".", label=f"{task_label(first['task'])}, {label}")
        ax.set_xlabel(stat)
        ax.set_ylabel("% of steps")
        ax.set_title(titles.get(stat, stat), fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def step_markdown(hist: pd.DataFrame) -> str:
    """Per setting and statistic: steps counted, the mean (from bin centres) and the share of
    steps in the lowest and highest tenth of the range."""
    lines = ["| Model | Task | Method | beta | T | top-p | statistic | steps | mean | % in lowest tenth | % in highest tenth |",
             "|" + "---|" * 11]
    for (_, stat), part in hist.groupby(["setting_key", "stat"], sort=False):
        first = part.iloc[0]
        low, high = part["low"].min(), part["high"].max()
        centres = (part["low"] + part["high"]) / 2
        mean = float((centres * part["share"]).sum())
        bottom = 100 * part.loc[part["high"] <= low + (high - low) / 10 + 1e-12, "share"].sum()
        top = 100 * part.loc[part["low"] >= high - (high - low) / 10 - 1e-12, "share"].sum()
        beta = "-" if first["beta"] is None or first["beta"] != first["beta"] else f"{first['beta']:g}"
        lines.append(f"| {first['model']} | {task_label(first['task'])} | {method_label(first['method'])} | {beta} | "
                     f"{first['temperature']:g} | {first['top_p']:g} | {stat} | {int(part['count'].sum())} | "
                     f"{mean:.3f} | {bottom:.1f} | {top:.1f} |")
    notes = ["", "Per-step statistics the method recorded (MoI: entropy = H, the normalized entropy of p; "
             "sampled_weight = the weight on the sampled token), pooled over the setting's samples; the mean is "
             "taken over bin centres. The figure is steps.png."]
    return "\n".join(lines + notes) + "\n"

"""The paper's Tables 1, A1, A4, Figure 3 and McNemar tests, regenerated from stored runs and set
beside the published numbers (``moi-paper RUNS_DIR``).

Which runs feed which table is given by the experiments' grids (``configs/experiment/``, read by
``harness.cli.paper`` into :class:`Experiments`, with the compared methods from
``configs/paper.yaml``: the paper's treatment, MoI, against its baseline, Standard):

- **Table 1**: runs in the ``paper_table1`` grid (``smoke`` with ``family=smoke``). Per (model,
  method, task) the best configuration by mean accuracy over seeds (``harness.analysis.selection``),
  with its searched parameters, temperature and top-p (on GPQA-Diamond and LiveCodeBench the
  grid's single configuration); "Gain vs. Standard" is the treatment minus the baseline.
- **Table A1**: per (model, method of the A1 experiment's ``derive``) the configuration with the
  best mean over the ``derive.over`` tasks (AIME + CountDown4) in the Table 1 grid, and its
  accuracy on every task (GPQA and LiveCodeBench runs come from ``paper_tableA1``).
- **Table A4**: AIME runs at the Table A1 configuration over the seeds of ``paper_tableA4``: mean
  and standard deviation across seeds.
- **Figure 3**: for each (model, task) searched over beta, the treatment's accuracy at each beta
  (mean over the grid's temperatures, top-ps and seeds) minus its mean over betas, averaged over models.
- **McNemar**: treatment vs baseline at their Table 1 configurations, samples paired by (problem,
  seed, sample), exact two-sided binomial test on the discordant pairs.

Selection and pooling go by the run keys of :mod:`harness.analysis.runs` (``config_key``,
``task_key``), never by a fixed list of fields. Every table sits beside the published numbers
(``results/reference/*.csv``) with the difference and whether it lies within two standard errors.
The same runs give byte-identical files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from harness.analysis.figures import figure3, figure3_data
from harness.analysis.runs import (
    clustered_se,
    load_runs,
    load_samples,
    method_label,
    method_rank,
    task_columns,
)
from harness.analysis.selection import best_configuration, best_per_task
from harness.errors import DataError
from harness.stats import mcnemar_p

PACKAGE = Path(__file__).resolve().parents[1]
TASK_CSV = {"aime": "aime", "countdown": "countdown4", "gpqa_diamond": "gpqa_diamond", "livecodebench": "livecodebench"}


@dataclass(frozen=True)
class Experiments:
    """The grid cells of the experiments behind Tables 1, A1 and A4, their family's name, the A1
    experiment's ``derive`` section (methods, tasks, seeds) and the compared methods."""

    family: str
    table1: list[dict]
    table_a1: list[dict]
    table_a4: list[dict]
    derive: dict = field(default_factory=lambda: {"methods": ["standard", "moi"], "over": ["aime", "countdown"]})
    treatment: str = "moi"
    baseline: str = "standard"


# -- which runs belong to an experiment ---------------------------------------------------------
VIEW_KEYS = ("task.limit", "task.n_samples")  # which samples an invocation needs: not a setting


def _grid_column(key: str) -> str | None:
    """The run column a grid key constrains (``task`` and ``method`` by name, other keys dotted;
    None for the view keys, which say how much of a run a job needs, not which run)."""
    return None if key in VIEW_KEYS else key


def in_grid(runs: pd.DataFrame, cells: list[dict]) -> pd.Series:
    """Which runs match some cell on the cell's own keys (a key a cell does not set matches anything;
    a parameter the run's method does not have, such as beta for Standard, matches anything)."""

    def value_of(row: dict, column: str):
        value = row.get(column)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    def matches(row: dict, cell: dict) -> bool:
        for key, wanted in cell.items():
            column = _grid_column(key)
            if column is None or column not in row:
                continue  # not part of any stored setting (e.g. a data path of legacy runs)
            have = value_of(row, column)
            if have is None and column.startswith("method."):
                continue
            if have != (float(wanted) if isinstance(wanted, (int, float)) and isinstance(have, float) else wanted):
                return False
        return True

    records = runs.to_dict(orient="records")
    return pd.Series([any(matches(r, c) for c in cells) for r in records], index=runs.index, dtype=bool)


def seeds_of(cells: list[dict]) -> list[int] | None:
    seeds = sorted({c["seed"] for c in cells if "seed" in c})
    return seeds or None


# -- statistics ------------------------------------------------------------------------------------
def samples_of(samples: pd.DataFrame, config_key: str, task_key: str, seeds: list[int] | None) -> pd.DataFrame:
    """The samples of one configuration on one task (and problem set), over the given seeds."""
    mask = (samples.config_key == config_key) & (samples.task_key == task_key)
    if seeds is not None:
        mask &= samples.seed.isin(seeds)
    return samples[mask]


def mcnemar(treatment: pd.DataFrame, baseline: pd.DataFrame) -> dict:
    """Exact McNemar test of paired outcomes (pairs keyed by problem, seed and sample index)."""
    key = ["problem_id", "seed", "sample_index"]
    paired = treatment[key + ["correct"]].merge(baseline[key + ["correct"]], on=key, suffixes=("_t", "_b"))
    b = int((paired.correct_t & ~paired.correct_b).sum())
    c = int((~paired.correct_t & paired.correct_b).sum())
    return {"pairs": len(paired), "treatment_only": b, "baseline_only": c, "p_value": mcnemar_p(b, c)}


# -- tables ------------------------------------------------------------------------------------------
def _paper_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by model, then the methods' table order, then the paper's task order."""
    if frame.empty:
        return frame
    tasks = task_columns(frame.task.unique())
    keys = frame.assign(_m=frame.method.map(method_rank), _t=frame.task.map(tasks.index))
    return keys.sort_values(["model", "_m", "_t"], kind="stable").drop(columns=["_m", "_t"]).reset_index(drop=True)


def paper_names(root: Path) -> dict[str, str]:
    """Model config name -> the name the paper uses (``model.paper_name`` of the runs' configs)."""
    names = {}
    for config in sorted(root.rglob("config.yaml")):
        model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
        if model.get("name"):
            names[model["name"]] = model.get("paper_name") or model["name"]
    return names


def reference_dir() -> Path:
    """The paper's published tables: ``harness/reference`` once installed, ``results/reference`` in a checkout."""
    installed = PACKAGE / "reference"
    return installed if installed.is_dir() else PACKAGE.parent / "results" / "reference"


def reference(name: str) -> pd.DataFrame:
    return pd.read_csv(reference_dir() / name)


def _paper_value(ref: pd.DataFrame, model: str, method: str, column: str) -> float:
    row = ref[(ref.model == model) & (ref.method == method_label(method))]
    return float(row.iloc[0][column]) if len(row) and column in row else math.nan


def _compare(ours: float, se: float, paper: float) -> tuple[float, object]:
    if math.isnan(paper) or math.isnan(ours):
        return math.nan, None
    diff = ours - paper
    return diff, bool(abs(diff) <= 2 * se) if se > 0 else bool(diff == 0)


def _searched(config_key: str) -> dict:
    """A configuration's settings in the paper's terms: beta (or None), temperature, top-p."""
    config = json.loads(config_key)
    return {"beta": config.get("method.beta"), "temperature": config.get("sampling.temperature"),
            "top_p": config.get("sampling.top_p")}


def table1(runs: pd.DataFrame, samples: pd.DataFrame, names: dict[str, str], cells: list[dict]) -> pd.DataFrame:
    chosen = best_per_task(runs[in_grid(runs, cells)], seeds_of(cells))
    ref = reference("paper_table1.csv")
    rows = []
    for r in chosen.itertuples():
        picked = samples_of(samples, r.config_key, r.task_key, seeds_of(cells))
        ours, se = 100 * r.accuracy, clustered_se(picked)
        paper = _paper_value(ref, names.get(r.model, r.model), r.method, TASK_CSV.get(r.task, r.task))
        diff, within = _compare(ours, se, paper)
        rows.append({"model": names.get(r.model, r.model), "method": r.method, "task": r.task, "accuracy": ours,
                     "stderr": se, **_searched(r.config_key), "n_seeds": int(r.n_seeds), "paper": paper, "diff": diff,
                     "within_2se": within, "config_key": r.config_key, "task_key": r.task_key})
    return _paper_order(pd.DataFrame(rows))


def table_a1(runs: pd.DataFrame, samples: pd.DataFrame, names: dict[str, str], experiments: Experiments) -> pd.DataFrame:
    grid1 = experiments.table1
    seeds, over = seeds_of(grid1), list(experiments.derive["over"])
    pool = runs[in_grid(runs, grid1 + experiments.table_a1)]
    ref = reference("paper_tableA1.csv")
    rows = []
    for model in sorted(runs.model.unique()):
        for method in experiments.derive["methods"]:
            choice = best_configuration(runs[in_grid(runs, grid1)], model, method, over, seeds)
            if choice is None:
                continue
            for task_key, task in pool[pool.config_key == choice["config_key"]].groupby("task_key").task.first().items():
                picked = samples_of(samples, choice["config_key"], task_key, seeds if task in over else None)
                if picked.empty:
                    continue
                ours, se = 100 * float(picked.correct.mean()), clustered_se(picked)
                paper = _paper_value(ref, names.get(model, model), method, TASK_CSV.get(task, task))
                diff, within = _compare(ours, se, paper)
                rows.append({"model": names.get(model, model), "method": method, "task": task, "accuracy": ours,
                             "stderr": se, **_searched(choice["config_key"]), "paper": paper, "diff": diff,
                             "within_2se": within})
    return _paper_order(pd.DataFrame(rows))


def table_a4(runs: pd.DataFrame, names: dict[str, str], experiments: Experiments) -> pd.DataFrame:
    ref = reference("paper_tableA4_aime64.csv")
    grid1, over = experiments.table1, list(experiments.derive["over"])
    seeds = seeds_of(experiments.table_a4) or []
    tasks = {c.get("task") for c in experiments.table_a4} - {None}
    rows = []
    for model in sorted(runs.model.unique()):
        for method in experiments.derive["methods"]:
            choice = best_configuration(runs[in_grid(runs, grid1)], model, method, over, seeds_of(grid1))
            if choice is None:
                continue
            mask = (runs.config_key == choice["config_key"]) & runs.task.isin(tasks) & runs.complete & runs.seed.isin(seeds)
            picked = runs[mask]
            if picked.empty:
                continue
            task_key = picked.task_key.value_counts().index[0]  # one problem set: the one most seeds ran
            accuracies = 100 * picked[picked.task_key == task_key].sort_values("seed").accuracy
            mean, sd = float(accuracies.mean()), float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0
            se = sd / math.sqrt(len(accuracies)) if len(accuracies) > 1 else 0.0
            paper = _paper_value(ref, names.get(model, model), method, "mean")
            diff, within = _compare(mean, se, paper)
            rows.append({"model": names.get(model, model), "method": method, "n_seeds": len(accuracies),
                         "mean": mean, "sd": sd, **_searched(choice["config_key"]), "paper_mean": paper,
                         "paper_sd": _paper_value(ref, names.get(model, model), method, "sd"),
                         "diff": diff, "within_2se": within})
    return pd.DataFrame(rows)


def mcnemar_table(chosen: pd.DataFrame, samples: pd.DataFrame, experiments: Experiments) -> pd.DataFrame:
    seeds, over = seeds_of(experiments.table1), list(experiments.derive["over"])
    pair = (experiments.treatment, experiments.baseline)
    rows = []
    for (model, task), group in chosen.groupby(["model", "task"], sort=True):
        by_method = {r.method: r for r in group.itertuples()}
        if not set(pair) <= set(by_method):
            continue
        parts = [samples_of(samples, by_method[m].config_key, by_method[m].task_key, seeds if task in over else None)
                 for m in pair]
        rows.append({"model": model, "task": task, **mcnemar(*parts)})
    return pd.DataFrame(rows)


# -- output --------------------------------------------------------------------------------------
def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(frame: pd.DataFrame, columns: list[str], title: str) -> str:
    if frame.empty:
        return f"## {title}\n\n(no runs)\n"
    lines = [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        values = row._asdict()
        cells = []
        for column in columns:
            value = values.get(column)
            if column == "method":
                value = method_label(value)
            elif column == "within_2se":
                value = "-" if value is None else ("yes" if value else "no")
            elif column == "beta" and (value is None or (isinstance(value, float) and math.isnan(value))):
                value = "-"
            elif column in ("temperature", "top_p", "beta") and isinstance(value, float):
                value = f"{value:g}"
            elif column == "p_value":
                value = f"{value:.4g}"
            cells.append(_num(value) if not isinstance(value, str) else value)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table1_layout(frame: pd.DataFrame, experiments: Experiments) -> str:
    """Table 1 in the paper's layout: ours (paper) per task, with the Gain vs. baseline row."""
    if frame.empty:
        return "## Table 1 (paper layout)\n\n(no runs)\n"
    tasks = task_columns(frame.task.unique())
    header = ["Model", "Method", *tasks, "Avg"]
    lines = ["## Table 1 (paper layout): ours (paper)", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, group in frame.groupby("model", sort=True):
        values = {}
        for method in sorted(group.method.unique(), key=method_rank):
            part = group[group.method == method].groupby("task").first()
            ours = [part.accuracy.get(t, math.nan) for t in tasks]
            paper = [part.paper.get(t, math.nan) for t in tasks]
            values[method] = ours
            avg = sum(ours) / len(ours) if not any(math.isnan(v) for v in ours) else math.nan
            cells = [f"{_num(o)} ({_num(p)})" for o, p in zip(ours, paper)] + [_num(avg)]
            lines.append("| " + " | ".join([model, method_label(method), *cells]) + " |")
        treatment, baseline = values.get(experiments.treatment), values.get(experiments.baseline)
        label = f"Gain vs. {method_label(experiments.baseline)}"
        if treatment is None or baseline is None:
            lines.append(f"| {model} | {label} | " + " | ".join("-" for _ in tasks) + " | - |")
            continue
        gain = [m - s for m, s in zip(treatment, baseline)]
        avg = sum(gain) / len(gain) if not any(math.isnan(g) for g in gain) else math.nan
        lines.append("| " + " | ".join([model, label, *[_signed(g) for g in gain], _signed(avg)]) + " |")
    return "\n".join(lines) + "\n"


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.2f}"


def build(root: Path, out: Path, experiments: Experiments) -> list[Path]:
    """Write every table and the figure for a family of experiments; return the files written."""
    runs = load_runs(root)
    if runs.empty:
        raise DataError(f"no runs under {root}")
    samples = load_samples(root, runs)
    names = paper_names(root)
    grid1 = experiments.table1
    out.mkdir(parents=True, exist_ok=True)
    t1 = table1(runs, samples, names, grid1)
    a1 = table_a1(runs, samples, names, experiments)
    a4 = table_a4(runs, names, experiments)
    fig = figure3_data(runs[in_grid(runs, grid1)], experiments.treatment)
    mc = mcnemar_table(t1, samples, experiments) if not t1.empty else pd.DataFrame()
    written = []
    frames = {"table1": t1.drop(columns=["config_key", "task_key"], errors="ignore"), "tableA1": a1, "tableA4": a4,
              "figure3": fig, "mcnemar": mc}
    for name, frame in frames.items():
        path = out / f"{name}.csv"
        frame.to_csv(path, index=False, float_format="%.4f", lineterminator="\n")
        written.append(path)
    matched = bool(in_grid(runs, grid1).any())  # (the A1 and A4 grids are derived from it)
    family = experiments.family
    source = f"experiments `{family}_*`" if matched else f"no run matches the grids of the `{family}` experiments"
    treatment, baseline = method_label(experiments.treatment), method_label(experiments.baseline)
    cmp_cols = ["model", "method", "task", "accuracy", "stderr", "beta", "temperature", "top_p", "paper", "diff", "within_2se"]
    report = "\n".join([
        "# The paper's tables, regenerated\n",
        f"From the runs under `{root}` ({source}). Accuracy in %; stderr: problems as the sampling unit; "
        "within_2se: |ours - paper| <= 2 stderr.\n",
        table1_layout(t1, experiments),
        markdown(t1, cmp_cols, "Table 1: best configuration per (model, method, task) vs the paper"),
        markdown(a1, cmp_cols, "Table A1: one configuration per (model, method), best over "
                 + " + ".join(experiments.derive["over"])),
        markdown(a4, ["model", "method", "n_seeds", "mean", "sd", "beta", "temperature", "top_p", "paper_mean",
                      "paper_sd", "diff", "within_2se"], "Table A4: AIME across seeds"),
        markdown(mc, ["model", "task", "pairs", "treatment_only", "baseline_only", "p_value"],
                 f"McNemar: {treatment} vs {baseline} at their Table 1 configurations"),
        "## Figure 3\n\n" + ("![Figure 3](figure3.png)\n" if not fig.empty else "(no runs searched over beta)\n"),
    ])
    (out / "tables.md").write_text(report)
    written.append(out / "tables.md")
    if not fig.empty:
        figure3(fig, out / "figure3.png")
        written.append(out / "figure3.png")
    return written

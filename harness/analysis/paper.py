"""``python -m harness.paper RUNS_DIR``: the paper's Tables 1, A1, A4, Figure 3 and McNemar tests,
regenerated from stored runs and set beside the published numbers.

Which runs feed which table is given by the experiments' grids (``configs/experiment/``, read by
``harness.cli.paper``):

- **Table 1**: runs in the ``paper_table1`` grid (``smoke`` with ``--family smoke``). On AIME and CountDown4 the best configuration
  per (model, method) by mean accuracy over seeds (``harness.analysis.selection``), with its beta, temperature
  and top-p; on GPQA-Diamond and LiveCodeBench the grid's single configuration. "Gain vs. Standard"
  is MoI minus Standard.
- **Table A1**: per (model, Standard or MoI) the configuration with the best mean over AIME +
  CountDown4 in the Table 1 grid, and its accuracy on all four tasks (GPQA and LiveCodeBench runs
  come from ``paper_tableA1``).
- **Table A4**: AIME runs at the Table A1 configuration over the seeds of ``paper_tableA4``: mean
  and standard deviation across seeds.
- **Figure 3**: for each (model, task) searched over beta, the MoI accuracy at each beta (mean
  over the grid's temperatures, top-ps and seeds) minus its mean over betas, averaged over models.
- **McNemar**: MoI vs Standard at their Table 1 configurations, samples paired by (problem, seed, sample),
  exact two-sided binomial test on the discordant pairs.

Every table sits beside the published numbers (``results/reference/*.csv``) with the difference
and whether it lies within two standard errors. The same runs give byte-identical files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from harness.analysis.figures import figure3, figure3_data
from harness.analysis.runs import (
    METHOD_LABELS,
    clustered_se,
    load_runs,
    load_samples,
    method_rank,
    task_columns,
)
from harness.analysis.selection import best_configuration, best_per_task
from harness.errors import DataError
from harness.stats import mcnemar_p

PACKAGE = Path(__file__).resolve().parents[1]
TASK_CSV = {"aime": "aime", "countdown": "countdown4", "gpqa_diamond": "gpqa_diamond", "livecodebench": "livecodebench"}
GRID_COLUMNS = {"method.beta": "beta", "sampling.temperature": "temperature", "sampling.top_p": "top_p", "seed": "seed"}


# -- which runs belong to an experiment ---------------------------------------------------------
def in_grid(runs: pd.DataFrame, cells: list[dict]) -> pd.Series:
    """Which runs match some cell on the cell's own keys among task, method, beta, temperature,
    top-p and seed (a key a cell does not set matches anything; beta only constrains MoI)."""
    patterns: dict[tuple, set] = {}
    for cell in cells:
        constraint = {"task": cell.get("task"), "method": cell.get("method")}
        for key, column in GRID_COLUMNS.items():
            if key in cell and not (column == "beta" and cell.get("method") != "moi"):
                constraint[column] = float(cell[key]) if column != "seed" else int(cell[key])
        constraint = {k: v for k, v in constraint.items() if v is not None}
        columns = tuple(sorted(constraint))
        patterns.setdefault(columns, set()).add(tuple(constraint[c] for c in columns))

    def match(row) -> bool:
        values = row._asdict()
        return any(tuple(values[c] for c in columns) in allowed for columns, allowed in patterns.items())

    return pd.Series([match(row) for row in runs.itertuples(index=False)], index=runs.index, dtype=bool)


def seeds_of(cells: list[dict]) -> list[int] | None:
    seeds = sorted({c["seed"] for c in cells if "seed" in c})
    return seeds or None


# -- statistics ------------------------------------------------------------------------------------
def samples_of(samples: pd.DataFrame, model: str, method: str, task: str, beta, temperature, top_p,
                 seeds: list[int] | None) -> pd.DataFrame:
    mask = (samples.model == model) & (samples.method == method) & (samples.task == task)
    mask &= (samples.temperature == temperature) & (samples.top_p == top_p)
    if method == "moi":
        mask &= samples.beta == beta
    if seeds is not None:
        mask &= samples.seed.isin(seeds)
    return samples[mask]


def mcnemar(moi: pd.DataFrame, standard: pd.DataFrame) -> dict:
    """Exact McNemar test of paired outcomes (pairs keyed by problem, seed and sample index)."""
    key = ["problem_id", "seed", "sample_index"]
    paired = moi[key + ["correct"]].merge(standard[key + ["correct"]], on=key, suffixes=("_moi", "_std"))
    b = int((paired.correct_moi & ~paired.correct_std).sum())
    c = int((~paired.correct_moi & paired.correct_std).sum())
    return {"pairs": len(paired), "moi_only": b, "standard_only": c, "p_value": mcnemar_p(b, c)}


# -- tables ------------------------------------------------------------------------------------------
def _paper_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by model, then Standard / Direct Mixture / MoI, then the paper's task order."""
    if frame.empty:
        return frame
    tasks = task_columns(frame.task.unique())
    keys = frame.assign(_m=frame.method.map(method_rank), _t=frame.task.map(tasks.index))
    return keys.sort_values(["model", "_m", "_t"], kind="stable").drop(columns=["_m", "_t"]).reset_index(drop=True)


def paper_names(root: Path) -> dict[str, str]:
    """Model config name -> the name the paper uses (``model.paper_name``)."""
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
    row = ref[(ref.model == model) & (ref.method == METHOD_LABELS.get(method, method))]
    return float(row.iloc[0][column]) if len(row) and column in row else math.nan


def _compare(ours: float, se: float, paper: float) -> tuple[float, object]:
    if math.isnan(paper) or math.isnan(ours):
        return math.nan, None
    diff = ours - paper
    return diff, bool(abs(diff) <= 2 * se) if se > 0 else bool(diff == 0)


def table1(runs: pd.DataFrame, samples: pd.DataFrame, names: dict[str, str], cells: list[dict]) -> pd.DataFrame:
    chosen = best_per_task(runs[in_grid(runs, cells)], seeds_of(cells))
    ref = reference("paper_table1.csv")
    rows = []
    for r in chosen.itertuples():
        beta = r.beta if r.method == "moi" else None
        picked = samples_of(samples, r.model, r.method, r.task, beta, r.temperature, r.top_p, seeds_of(cells))
        ours, se = 100 * r.accuracy, clustered_se(picked)
        paper = _paper_value(ref, names.get(r.model, r.model), r.method, TASK_CSV.get(r.task, r.task))
        diff, within = _compare(ours, se, paper)
        rows.append({"model": names.get(r.model, r.model), "method": r.method, "task": r.task, "accuracy": ours,
                     "stderr": se, "beta": beta, "temperature": r.temperature, "top_p": r.top_p,
                     "n_seeds": int(r.n_seeds), "paper": paper, "diff": diff, "within_2se": within})
    return _paper_order(pd.DataFrame(rows))


def table_a1(runs: pd.DataFrame, samples: pd.DataFrame, names: dict[str, str], grid1: list[dict],
             grid_a1: list[dict]) -> pd.DataFrame:
    seeds = seeds_of(grid1)
    pool = runs[in_grid(runs, grid1 + grid_a1)]
    ref = reference("paper_tableA1.csv")
    rows = []
    for model in sorted(runs.model.unique()):
        for method in ("moi", "standard"):
            choice = best_configuration(runs[in_grid(runs, grid1)], model, method, ["aime", "countdown"], seeds)
            if choice is None:
                continue
            for task in task_columns(pool.task.unique()):
                picked = samples_of(samples, model, method, task, choice["beta"], choice["temperature"],
                                      choice["top_p"], seeds if task in ("aime", "countdown") else None)
                if picked.empty:
                    continue
                ours, se = 100 * float(picked.correct.mean()), clustered_se(picked)
                paper = _paper_value(ref, names.get(model, model), method, TASK_CSV.get(task, task))
                diff, within = _compare(ours, se, paper)
                rows.append({"model": names.get(model, model), "method": method, "task": task, "accuracy": ours,
                             "stderr": se, **{k: choice[k] for k in ("beta", "temperature", "top_p")},
                             "paper": paper, "diff": diff, "within_2se": within})
    return _paper_order(pd.DataFrame(rows))


def table_a4(runs: pd.DataFrame, names: dict[str, str], grid1: list[dict], grid4: list[dict]) -> pd.DataFrame:
    ref = reference("paper_tableA4_aime64.csv")
    rows = []
    for model in sorted(runs.model.unique()):
        for method in ("standard", "moi"):
            choice = best_configuration(runs[in_grid(runs, grid1)], model, method, ["aime", "countdown"], seeds_of(grid1))
            if choice is None:
                continue
            mask = (runs.model == model) & (runs.method == method) & (runs.task == "aime") & runs.complete
            mask &= (runs.temperature == choice["temperature"]) & (runs.top_p == choice["top_p"])
            mask &= runs.seed.isin(seeds_of(grid4) or [])
            if method == "moi":
                mask &= runs.beta == choice["beta"]
            accuracies = 100 * runs[mask].sort_values("seed").accuracy
            if accuracies.empty:
                continue
            mean, sd = float(accuracies.mean()), float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0
            se = sd / math.sqrt(len(accuracies)) if len(accuracies) > 1 else 0.0
            paper = _paper_value(ref, names.get(model, model), method, "mean")
            diff, within = _compare(mean, se, paper)
            rows.append({"model": names.get(model, model), "method": method, "n_seeds": len(accuracies),
                         "mean": mean, "sd": sd, "beta": choice["beta"], "temperature": choice["temperature"],
                         "top_p": choice["top_p"], "paper_mean": paper,
                         "paper_sd": _paper_value(ref, names.get(model, model), method, "sd"),
                         "diff": diff, "within_2se": within})
    return pd.DataFrame(rows)


def mcnemar_table(chosen: pd.DataFrame, samples: pd.DataFrame, names: dict[str, str], grid: list[dict]) -> pd.DataFrame:
    seeds = seeds_of(grid)
    rows = []
    inverse = {v: k for k, v in names.items()}
    for (model, task), group in chosen.groupby(["model", "task"], sort=True):
        by_method = {r.method: r for r in group.itertuples()}
        if not {"moi", "standard"} <= set(by_method):
            continue
        model_id = inverse.get(model, model)
        parts = {}
        for method in ("moi", "standard"):
            r = by_method[method]
            parts[method] = samples_of(samples, model_id, method, task, r.beta, r.temperature, r.top_p,
                                         seeds if task in ("aime", "countdown") else None)
        rows.append({"model": model, "task": task, **mcnemar(parts["moi"], parts["standard"])})
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
                value = METHOD_LABELS.get(value, value)
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


def table1_layout(frame: pd.DataFrame) -> str:
    """Table 1 in the paper's layout: ours (paper) per task, with the Gain vs. Standard row."""
    if frame.empty:
        return "## Table 1 (paper layout)\n\n(no runs)\n"
    tasks = task_columns(frame.task.unique())
    header = ["Model", "Method", *tasks, "Avg"]
    lines = ["## Table 1 (paper layout): ours (paper)", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, group in frame.groupby("model", sort=True):
        values = {}
        for method in sorted(group.method.unique(), key=method_rank):
            part = group[group.method == method].set_index("task")
            ours = [part.accuracy.get(t, math.nan) for t in tasks]
            paper = [part.paper.get(t, math.nan) for t in tasks]
            values[method] = (ours, paper)
            avg = sum(ours) / len(ours) if not any(math.isnan(v) for v in ours) else math.nan
            cells = [f"{_num(o)} ({_num(p)})" for o, p in zip(ours, paper)] + [_num(avg)]
            lines.append("| " + " | ".join([model, METHOD_LABELS.get(method, method), *cells]) + " |")
        if "moi" in values and "standard" in values:
            gain = [m - s for m, s in zip(values["moi"][0], values["standard"][0])]
            avg = sum(gain) / len(gain) if not any(math.isnan(g) for g in gain) else math.nan
            lines.append("| " + " | ".join([model, "Gain vs. Standard", *[f"{g:+.2f}" for g in gain], f"{avg:+.2f}"]) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Experiments:
    """The grid cells of the experiments behind Tables 1, A1 and A4, and their family's name."""

    family: str
    table1: list[dict]
    table_a1: list[dict]
    table_a4: list[dict]


def build(root: Path, out: Path, experiments: Experiments) -> list[Path]:
    """Write every table and the figure for a family of experiments; return the files written."""
    runs = load_runs(root)
    if runs.empty:
        raise DataError(f"no runs under {root}")
    samples = load_samples(root)
    names = paper_names(root)
    family = experiments.family
    grid1, grid_a1, grid_a4 = experiments.table1, experiments.table_a1, experiments.table_a4
    out.mkdir(parents=True, exist_ok=True)
    t1 = table1(runs, samples, names, grid1)
    a1 = table_a1(runs, samples, names, grid1, grid_a1)
    a4 = table_a4(runs, names, grid1, grid_a4)
    fig = figure3_data(runs[in_grid(runs, grid1)])
    mc = mcnemar_table(t1, samples, names, grid1) if not t1.empty else pd.DataFrame()
    written = []
    frames = {"table1": t1, "tableA1": a1, "tableA4": a4, "figure3": fig, "mcnemar": mc}
    for name, frame in frames.items():
        path = out / f"{name}.csv"
        frame.to_csv(path, index=False, float_format="%.4f", lineterminator="\n")
        written.append(path)
    cmp_cols = ["model", "method", "task", "accuracy", "stderr", "beta", "temperature", "top_p", "paper", "diff", "within_2se"]
    report = "\n".join([
        "# The paper's tables, regenerated\n",
        f"From the runs under `{root}` (experiments `{family}_*`). Accuracy in %; stderr: problems as the sampling unit; "
        "within_2se: |ours - paper| <= 2 stderr.\n",
        table1_layout(t1),
        markdown(t1, cmp_cols, "Table 1: best configuration per (model, method, task) vs the paper"),
        markdown(a1, cmp_cols, "Table A1: one configuration per (model, method), best over AIME + CountDown4"),
        markdown(a4, ["model", "method", "n_seeds", "mean", "sd", "beta", "temperature", "top_p", "paper_mean",
                      "paper_sd", "diff", "within_2se"], "Table A4: AIME across seeds"),
        markdown(mc, ["model", "task", "pairs", "moi_only", "standard_only", "p_value"],
                 "McNemar: MoI vs Standard at their Table 1 configurations"),
        "## Figure 3\n\n![Figure 3](figure3.png)\n",
    ])
    (out / "tables.md").write_text(report)
    written.append(out / "tables.md")
    if not fig.empty:
        figure3(fig, out / "figure3.png")
        written.append(out / "figure3.png")
    return written

"""Figure 3 of the paper: MoI's accuracy deviation from the task mean against beta."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.analysis.runs import task_columns


def figure3_data(runs: pd.DataFrame, method: str = "moi") -> pd.DataFrame:
    """Per (task, beta): the method's accuracy minus its mean over betas, averaged over models, from
    the runs of a grid. Each beta averages the grid's temperatures, top-ps and seeds, and only
    runs that agree on every other field (the same ``family``: setting without seed, beta,
    temperature and top-p) are averaged; a model's families count as one curve each."""
    mine = runs[(runs.method == method) & runs.complete].copy()
    if mine.empty:
        return pd.DataFrame(columns=["task", "beta", "deviation", "n_models"])
    free = ("seed", "method.beta", "sampling.temperature", "sampling.top_p")
    mine["family"] = [json.dumps({k: v for k, v in json.loads(s).items() if k not in free}, sort_keys=True)
                      for s in mine.setting_key]
    per_beta = mine.groupby(["model", "family", "task", "beta"]).accuracy.mean().mul(100).rename("accuracy").reset_index()
    per_beta = per_beta[per_beta.groupby("task").beta.transform("nunique") > 1]  # tasks searched over beta
    per_beta["deviation"] = per_beta.accuracy - per_beta.groupby(["model", "family", "task"]).accuracy.transform("mean")
    out = per_beta.groupby(["task", "beta"]).agg(deviation=("deviation", "mean"), n_models=("model", "nunique"))
    return out.reset_index()


def figure3(data: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    for task in task_columns(data.task.unique()):
        part = data[data.task == task].sort_values("beta")
        ax.plot(part.beta, part.deviation, marker="o", label=task)
    ax.set_xscale("log", base=2)
    betas = sorted(data.beta.unique())
    ax.set_xticks(betas, [f"{b:g}" for b in betas])
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("beta")
    ax.set_ylabel("accuracy - task mean (points)")
    ax.set_title("MoI: deviation from the task mean", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)

"""Choosing configurations from a grid, as the paper did: the best cell by mean accuracy over seeds.

A *configuration* is (method, beta, temperature, top-p); a *cell* is a configuration on one task,
its accuracy the mean over its seeds' runs. Ties go to the smaller beta, then the smaller
temperature, then the smaller top-p, so the choice is deterministic.
"""

from __future__ import annotations

import math

import pandas as pd

CONFIG = ["beta", "temperature", "top_p"]


def _beta_key(beta) -> float:
    return -1.0 if beta is None or (isinstance(beta, float) and math.isnan(beta)) else float(beta)


def cell_means(runs: pd.DataFrame, seeds: list[int] | None = None) -> pd.DataFrame:
    """Mean accuracy (and its seed count) per (model, method, task, beta, temperature, top-p)."""
    frame = runs[runs["complete"]].copy()
    if seeds is not None:
        frame = frame[frame["seed"].isin(seeds)]
    frame["beta"] = frame["beta"].map(_beta_key)
    grouped = frame.groupby(["model", "method", "task", *CONFIG], dropna=False)
    out = grouped.agg(accuracy=("accuracy", "mean"), sd=("accuracy", "std"), n_seeds=("seed", "nunique")).reset_index()
    return out


def _order(frame: pd.DataFrame, score: str) -> pd.DataFrame:
    return frame.sort_values([score, "beta", "temperature", "top_p"], ascending=[False, True, True, True], kind="stable")


def best_cells(runs: pd.DataFrame, seeds: list[int] | None = None) -> pd.DataFrame:
    """Per (model, method, task): the configuration with the best mean accuracy over seeds."""
    means = cell_means(runs, seeds)
    best = _order(means, "accuracy").groupby(["model", "method", "task"], sort=True).head(1)
    return _restore_beta(best.sort_values(["model", "method", "task"]).reset_index(drop=True))


def best_configuration(
    runs: pd.DataFrame | None, model: str, method: str, over: list[str], seeds: list[int] | None = None
) -> dict | None:
    """The configuration of one (model, method) with the best mean accuracy averaged over tasks.

    Only configurations with results on every task in ``over`` compete. Returns a dict with
    ``beta`` (None for non-MoI methods), ``temperature``, ``top_p`` and ``score``, or None.
    """
    if runs is None or runs.empty:
        return None
    means = cell_means(runs[(runs["model"] == model) & (runs["method"] == method)], seeds)
    means = means[means["task"].isin(over)]
    if means.empty:
        return None
    per_config = means.groupby(CONFIG).agg(score=("accuracy", "mean"), n_tasks=("task", "nunique")).reset_index()
    per_config = per_config[per_config["n_tasks"] == len(set(over))]
    if per_config.empty:
        return None
    row = _order(per_config, "score").iloc[0]
    beta = None if row["beta"] < 0 else float(row["beta"])
    return {"beta": beta, "temperature": float(row["temperature"]), "top_p": float(row["top_p"]), "score": float(row["score"])}


def _restore_beta(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["beta"] = frame["beta"].map(lambda b: None if b < 0 else b).astype(object)
    return frame

"""Choosing configurations from a grid, as the paper did: the best by mean accuracy over seeds.

A *configuration* is a run's setting without its task and seed (``config_key``: the method with
all its parameters, the sampling, the model, the engine). On one task (one ``task_key``: the same
problems and samples per problem) its accuracy is the mean over its seeds' runs. Ties go to the
smaller searched parameter (beta), then the smaller temperature, then the smaller top-p, then the
key itself, so the choice is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.analysis.runs import beta_from_key, beta_key, load_runs, searched_params
from harness.errors import ConfigError

ORDER = ["beta", "temperature", "top_p", "config_key"]


def configuration_means(runs: pd.DataFrame, seeds: list[int] | None = None) -> pd.DataFrame:
    """Mean accuracy (and its seed count) per (model, method, task, task_key, config_key)."""
    frame = runs[runs["complete"]].copy()
    if seeds is not None:
        frame = frame[frame["seed"].isin(seeds)]
    frame["beta"] = frame["beta"].map(beta_key)
    keys = ["model", "method", "task", "task_key", "config_key", "beta", "temperature", "top_p"]
    grouped = frame.groupby(keys, dropna=False)
    return grouped.agg(accuracy=("accuracy", "mean"), sd=("accuracy", "std"), n_seeds=("seed", "nunique")).reset_index()


def _order(frame: pd.DataFrame, score: str) -> pd.DataFrame:
    return frame.sort_values([score, *ORDER], ascending=[False, True, True, True, True], kind="stable")


def best_per_task(runs: pd.DataFrame, seeds: list[int] | None = None) -> pd.DataFrame:
    """Per (model, method, task_key): the configuration with the best mean accuracy over seeds."""
    means = configuration_means(runs, seeds)
    best = _order(means, "accuracy").groupby(["model", "method", "task_key"], sort=True).head(1)
    return _restore_beta(best.sort_values(["model", "method", "task", "task_key"]).reset_index(drop=True))


def best_configuration(
    runs: pd.DataFrame | None, model: str, method: str, over: list[str], seeds: list[int] | None = None
) -> dict | None:
    """The configuration of one (model, method) with the best mean accuracy averaged over tasks.

    Only configurations with results on every task in ``over`` compete. Returns a dict with
    ``config_key``, the method's searched parameters (``beta`` for MoI, None for others),
    ``temperature``, ``top_p`` and ``score``, or None.
    """
    if runs is None or runs.empty:
        return None
    means = configuration_means(runs[(runs["model"] == model) & (runs["method"] == method)], seeds)
    means = means[means["task"].isin(over)]
    if means.empty:
        return None
    per_config = means.groupby(["config_key", "beta", "temperature", "top_p"]).agg(
        score=("accuracy", "mean"), n_tasks=("task", "nunique")).reset_index()
    per_config = per_config[per_config["n_tasks"] == len(set(over))]
    if per_config.empty:
        return None
    row = _order(per_config, "score").iloc[0]
    choice = {"config_key": row["config_key"], "beta": beta_from_key(row["beta"]), "temperature": float(row["temperature"]),
              "top_p": float(row["top_p"]), "score": float(row["score"])}
    config = json.loads(row["config_key"])
    choice["searched"] = {name: config.get(f"method.{name}") for name in searched_params(method)}
    return choice


def _restore_beta(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["beta"] = frame["beta"].map(beta_from_key).astype(object)
    return frame


def derived_choices(derive: dict, model: str, results_dir: str, sampling: dict, placeholder: bool = False) -> dict[str, dict]:
    """Each method's configuration for a ``derive`` section (see ``harness.pipeline.grid``): the best
    mean accuracy over ``derive.over`` among the model's runs under ``derive.source``.

    ``placeholder`` (dry runs) returns a stand-in without reading anything: the configuration is
    chosen when the experiment runs. Raises ConfigError when a method has no complete runs.
    """
    source = Path(derive.get("source") or results_dir)
    if placeholder:
        return {method: {"searched": {}, "temperature": sampling["temperature"], "top_p": sampling["top_p"]}
                for method in derive["methods"]}
    runs = load_runs(source) if source.exists() else None
    choices = {}
    for method in derive["methods"]:
        choice = best_configuration(runs, model, method, derive["over"], seeds=derive.get("seeds"))
        if choice is None:
            raise ConfigError(
                f"derive: no complete runs of model {model} with method {method} on {', '.join(derive['over'])} "
                f"under {source}; run the grid they are selected from first"
            )
        choices[method] = choice
    return choices

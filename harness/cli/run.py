"""``moi-run`` (``python -m harness.run``): one evaluation, a Hydra multirun sweep of them, or a grid.

    moi-run model=tiny task=countdown method=moi method.beta=2 task.limit=8
    moi-run -m method=standard,direct_mixture,moi method.beta=0.5,2
    moi-run experiment=paper_table1 model=qwq_32b engine=vllm [dry_run=true]
    moi-run -m experiment=paper_table1 model=qwq_32b shards=8 shard=0,1,2,3,4,5,6,7 hydra/launcher=submitit_slurm ...

Each run lands in its own directory under ``results_dir`` (derived only from its settings), so
re-running the same settings resumes. Jobs of a sweep that share a model and engine settings
reuse the loaded engine. A config with a ``grid`` (see ``harness.pipeline.grid``) runs all its
cells in one job, served concurrently by one engine, each cell in its own run directory;
``shards=N shard=I`` runs the I-th of N disjoint parts of them (``harness.pipeline.shards``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.analysis.selection import derived_choices
from harness.cli.common import config_dir, one_line_errors
from harness.cli.overrides import checked_main
from harness.errors import ConfigError
from harness.pipeline import runner, shards
from harness.pipeline.config import validate
from harness.pipeline.grid import compose_cells, derive_cells, expand
from harness.pipeline.plan import describe_plan

log = logging.getLogger("harness")


def describe(summary: dict) -> str:
    method = summary["method"] + (f"(beta={summary['beta']:g})" if summary.get("beta") is not None else "")
    return (
        f"{summary['task']} | {summary['model']} | {method} | T={summary['temperature']:g} "
        f"top_p={summary['top_p']:g} seed={summary['seed']}: accuracy {summary['accuracy']:.3f} "
        f"± {summary['stderr']:.3f} (n={summary['n']}/{summary['n_expected']}), "
        f"mean tokens {summary['mean_completion_tokens']:.1f}, mixed steps {summary['mixed_steps']['total']}"
        + _context_note(summary)
    )


def _context_note(summary: dict) -> str:
    too_long = (summary.get("finish_reasons") or {}).get("prompt_too_long", 0)
    cut = summary.get("context_cut", 0) - too_long
    notes = [f"{too_long} prompt_too_long"] * bool(too_long) + [f"{cut} cut short by the context"] * bool(cut > 0)
    return f" ({', '.join(notes)})" if notes else ""


def grid_configs(cfg: dict) -> list[dict]:
    """The resolved configs of every cell of the job's grid (derived configurations included)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        cells = expand(cfg["grid"])
        if cfg.get("derive"):
            choices = derived_choices(
                cfg["derive"], cfg["model"]["name"], cfg["results_dir"], cfg["sampling"], placeholder=bool(cfg.get("dry_run"))
            )
            cells = derive_cells(cells, choices)
        return compose_cells(list(HydraConfig.get().overrides.task), cells)
    except ValueError as err:
        raise ConfigError(str(err)) from None


@one_line_errors
def run_job(plain: dict) -> list[dict] | None:
    """One Hydra job: a single run, or every cell of a grid (or of one shard of it)."""
    count, index = shards.settings(plain)
    if plain.get("grid"):
        configs = grid_configs(plain)
    else:
        configs = [{**plain, "shards": 1, "shard": None, "gpus_per_shard": None}]
    if plain.get("dry_run"):
        note = " (configurations selected from stored runs when it runs)" if plain.get("derive") else ""
        report = describe_plan(plain["model"]["name"], configs) + note
        print(report + "\n" + shards.describe(plain, configs, count, index))
        return None
    if plain.get("gpus_per_shard"):
        devices = shards.use_shard_gpus(plain["gpus_per_shard"], index or 0)
        print(f"shard {index or 0}/{count}: CUDA_VISIBLE_DEVICES={devices}")
    if count > 1:
        part = shards.split(configs, count)[index]
        print(part.describe())
        configs = part.runs
    summaries = runner.run(configs) if configs else []
    for summary in summaries:
        print(describe(summary))
    if len(summaries) == 1:
        summary = summaries[0]
        print(f"  -> {Path(plain['results_dir']) / summary['task'] / summary['model'] / summary['run']}")
    return summaries


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> list[dict] | None:
    return run_job(OmegaConf.to_container(cfg, resolve=True))


def main() -> None:
    """``moi-run``: the command line checked (one line for a bad setting), then Hydra."""
    checked_main("config", hydra_main, validate=_validate_job)


def _validate_job(cfg: dict) -> None:
    """A job's own settings (a grid's cells are checked as they are composed)."""
    if not cfg.get("grid"):
        validate(cfg)

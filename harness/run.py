"""``python -m harness.run``: run one evaluation, a Hydra multirun sweep of them, or a grid.

    python -m harness.run model=tiny task=countdown method=moi method.beta=2 task.limit=8
    python -m harness.run -m method=standard,direct_mixture,moi method.beta=0.5,2
    python -m harness.run experiment=paper_table1 model=qwq_32b engine=vllm [dry_run=true]

Each run lands in its own directory under ``results_dir`` (derived only from its settings), so
re-running the same settings resumes. Jobs of a sweep that share a model and engine settings
reuse the loaded engine. A config with a ``grid`` (see ``harness.grid``) runs all its cells in
one job, served concurrently by one engine, each cell in its own run directory.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from harness import config as run_config
from harness.config import ConfigError
from harness.engines import Engine, engine_class
from harness.grid import compose_cells, derive_cells, expand
from harness.models import ModelError
from harness.runner import describe_plan, execute, needs_engine, prepare
from tasks.data import DataError

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
USER_ERRORS = (ConfigError, DataError, ModelError)
log = logging.getLogger("harness")

_cached: dict = {"key": None, "engine": None}


def get_engine(cfg: dict) -> Engine:
    """The engine for a config, reusing the one already loaded when model and engine match."""
    key = json.dumps({"model": cfg["model"], "engine": cfg["engine"]}, sort_keys=True, default=str)
    if _cached["key"] != key:
        release_engine()
        log.info("loading engine %s with model %s", cfg["engine"]["name"], cfg["model"]["name"])
        _cached["engine"] = engine_class(cfg["engine"]["name"])(cfg["model"], cfg["engine"])
        _cached["key"] = key
    return _cached["engine"]


def release_engine() -> None:
    """Free the cached engine (and its accelerator memory)."""
    if _cached["engine"] is not None:
        _cached["engine"].close()
    _cached.update(key=None, engine=None)


def describe(summary: dict) -> str:
    method = summary["method"] + (f"(beta={summary['beta']:g})" if summary.get("beta") is not None else "")
    return (
        f"{summary['task']} | {summary['model']} | {method} | T={summary['temperature']:g} "
        f"top_p={summary['top_p']:g} seed={summary['seed']}: accuracy {summary['accuracy']:.3f} "
        f"± {summary['stderr']:.3f} (n={summary['n']}/{summary['n_expected']}), "
        f"mean tokens {summary['mean_completion_tokens']:.1f}, mixed steps {summary['mixed_steps']['total']}"
    )


def run(configs: list[dict]) -> list[dict]:
    """Run (or resume) evaluations from resolved config dicts with one engine; return summaries.

    Configs that name the same run (e.g. Standard at two betas) are run once.
    """
    unique = {}
    for cfg in configs:
        run_config.validate(cfg)
        unique.setdefault(run_config.run_dir(cfg), cfg)
    configs = list(unique.values())
    cells = [prepare(cfg) for cfg in configs]
    engine_keys = {json.dumps([c["model"], c["engine"]], sort_keys=True, default=str) for c in configs}
    if len(engine_keys) != 1:
        raise ConfigError("all cells of a grid must share the model and the engine settings")
    engine = get_engine(configs[0]) if needs_engine(cells) else None
    return execute(cells, engine, progress=bool(configs[0].get("progress", True)))


def grid_configs(cfg: dict) -> list[dict]:
    """The resolved configs of every cell of the job's grid."""
    from hydra.core.hydra_config import HydraConfig

    try:
        cells = expand(cfg["grid"])
        if cfg.get("derive"):
            cells = derive_cells(cfg, cells, placeholder=bool(cfg.get("dry_run")))
        return compose_cells(list(HydraConfig.get().overrides.task), cells)
    except ValueError as err:
        raise ConfigError(str(err)) from None


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> list[dict] | None:
    plain = OmegaConf.to_container(cfg, resolve=True)
    try:
        configs = grid_configs(plain) if plain.get("grid") else [plain]
        if plain.get("dry_run"):
            note = " (configurations selected from stored runs when it runs)" if plain.get("derive") else ""
            print(describe_plan(plain["model"]["name"], configs) + note)
            return None
        summaries = run(configs)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for summary in summaries:
        print(describe(summary))
    if len(summaries) == 1:
        summary = summaries[0]
        print(f"  -> {Path(plain['results_dir']) / summary['task'] / summary['model'] / summary['run']}")
    return summaries


if __name__ == "__main__":
    main()

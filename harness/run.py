"""``python -m harness.run``: run one evaluation (or a Hydra multirun sweep of them).

    python -m harness.run model=tiny task=countdown method=moi method.beta=2 task.limit=8
    python -m harness.run -m method=standard,direct_mixture,moi method.beta=0.5,2

Each run lands in its own directory under ``results_dir`` (derived only from its settings), so
re-running the same settings resumes. Jobs of a sweep that share a model and engine settings
reuse the loaded engine.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.config import ConfigError
from harness.engines import Engine, engine_class
from harness.models import ModelError
from harness.runner import execute, needs_engine, prepare
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


def run(cfg: dict) -> dict:
    """Run (or resume) one evaluation from a resolved config dict; return its summary."""
    cell = prepare(cfg)
    engine = get_engine(cfg) if needs_engine([cell]) else None
    [summary] = execute([cell], engine, progress=bool(cfg.get("progress", True)))
    return summary


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    plain = OmegaConf.to_container(cfg, resolve=True)
    try:
        summary = run(plain)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(describe(summary))
    print(f"  -> {Path(plain['results_dir']) / summary['task'] / summary['model'] / summary['run']}")
    return summary


if __name__ == "__main__":
    main()

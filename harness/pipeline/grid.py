"""Grids of runs declared in config, served by one engine.

An experiment config (``configs/experiment/``) may declare ``grid``: a list of sub-grids, each a
mapping from an override key to the list of its values; every combination is one *cell*, a run
exactly as ``python -m harness.run <the job's overrides> <the cell's overrides>`` would make it
(same config, same run directory, so resume, re-grading and tables work the same). Keys naming
a config group (``task``, ``method``, ...) select a group file; dotted keys set a value.

``derive`` makes a grid depend on stored results: for each method listed, the configuration
(beta, temperature, top-p) with the best mean accuracy over some tasks is looked up among the
model's runs in ``derive.source`` (by the analysis layer) and added to every cell (Table A1's
transfer rule).
"""

from __future__ import annotations

import itertools

from omegaconf import OmegaConf

GROUPS = ("model", "task", "method", "engine")


def expand(grid: list[dict]) -> list[dict]:
    """Every cell of a grid: a list of sub-grids, each {key: [values]} -> [{key: value}]."""
    cells = []
    for number, sub in enumerate(grid):
        if not isinstance(sub, dict) or not sub:
            raise ValueError(f"grid entry {number} must be a mapping of keys to lists of values, got {sub!r}")
        keys = list(sub)
        values = []
        for key in keys:
            options = sub[key]
            if not isinstance(options, list) or not options:
                raise ValueError(f"grid entry {number}: {key} must be a non-empty list, got {options!r}")
            values.append(options)
        cells += [dict(zip(keys, combination)) for combination in itertools.product(*values)]
    return cells


JOB_SETTINGS = ("grid", "derive", "dry_run", "shards", "shard", "gpus_per_shard", "estimate")


def _job_setting(key: str) -> bool:
    """Keys that shape the job (its grid, shards, dry-run report), never a cell: cells keep their defaults."""
    return any(key == name or key.startswith(name + ".") for name in JOB_SETTINGS)


def compose_cells(base_overrides: list[str], cells: list[dict]) -> list[dict]:
    """Resolved configs of the cells, composed with Hydra once per combination of groups.

    ``base_overrides`` are the job's own overrides (the experiment, the model...). Group keys of a
    cell are composed; value keys are set on a copy, as a command-line override would set them.
    """
    from hydra import compose

    base = [o for o in base_overrides if not _job_setting(o.split("=", 1)[0].lstrip("+~"))]
    composed: dict[tuple, object] = {}
    configs = []
    for cell in cells:
        groups = tuple((k, str(v)) for k, v in cell.items() if k in GROUPS)
        if groups not in composed:
            overridden = {k for k, _ in groups}
            keep = [o for o in base if o.split("=", 1)[0] not in overridden]
            template = compose("config", overrides=keep + [f"{k}={v}" for k, v in groups])
            for key in ("grid", "derive"):  # cells never carry them, and copying a big grid per cell is slow
                OmegaConf.update(template, key, None, merge=False)
            composed[groups] = template
        cfg = composed[groups].copy()
        for key, value in cell.items():
            if key not in GROUPS:
                if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                    raise ValueError(f"grid key {key!r} is not a config key")
                OmegaConf.update(cfg, key, value, merge=False)
        configs.append(OmegaConf.to_container(cfg, resolve=True))
    return configs


def derive_cells(cells: list[dict], choices: dict[str, dict]) -> list[dict]:
    """The cells once per derived method, each with that method's chosen configuration added.

    ``choices`` maps a method to its configuration (``temperature``, ``top_p`` and ``searched``: the
    method's searched parameters, e.g. MoI's beta), as
    :func:`harness.analysis.selection.derived_choices` selects it from stored runs.
    """
    out = []
    for method, choice in choices.items():
        settings = {"method": method, "sampling.temperature": choice["temperature"], "sampling.top_p": choice["top_p"]}
        settings |= {f"method.{name}": value for name, value in (choice.get("searched") or {}).items() if value is not None}
        out += [{**cell, **settings} for cell in cells]
    return out

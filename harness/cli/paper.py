"""``moi-paper RUNS_DIR`` (``python -m harness.paper``): the paper's Tables 1, A1, A4, Figure 3 and
McNemar tests regenerated from stored runs, beside the published numbers.

    moi-paper results/paper_runs                       # experiments paper_table1, _tableA1, _tableA4
    moi-paper results/smoke family=smoke out=reports/  # the smoke family, written elsewhere

Which runs feed which table is given by the experiments' grids (``configs/experiment/``); see
:mod:`harness.analysis.paper`. Settings: ``configs/paper.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from harness.analysis.paper import Experiments, build
from harness.cli.common import compose, config_dir, one_line_errors, runs_folder, split_args, wants_help
from harness.errors import UserError
from harness.methods import method_names
from harness.pipeline.grid import expand


def experiment_names(family: str) -> tuple[str, str, str]:
    """The experiments of Tables 1, A1 and A4: ``FAMILY_table1`` (or just ``FAMILY``), ``FAMILY_tableA1``
    and ``FAMILY_tableA4``."""
    folder = Path(config_dir()) / "experiment"
    first = f"{family}_table1" if (folder / f"{family}_table1.yaml").exists() else family
    return first, f"{family}_tableA1", f"{family}_tableA4"


def experiments(family: str, treatment: str = "moi", baseline: str = "standard") -> Experiments:
    """The grid cells of a family's three experiments and the A1 experiment's ``derive`` section,
    read from their configs, with the methods the tables compare."""
    folder = Path(config_dir()) / "experiment"
    configs = []
    for name in experiment_names(family):
        path = folder / f"{name}.yaml"
        if not path.exists():
            families = sorted(p.stem.removesuffix("_tableA1") for p in folder.glob("*_tableA1.yaml"))
            raise UserError(f"family {family!r} has no experiment config {name}.yaml; valid families: {', '.join(families)}")
        configs.append(yaml.safe_load(path.read_text()) or {})
    for method in (treatment, baseline):
        if method not in method_names():
            raise UserError(f"unknown method {method!r}; valid methods: {', '.join(method_names())}")
    grids = [expand(c.get("grid") or []) for c in configs]
    derive = configs[1].get("derive") or {}
    return Experiments(family, *grids, derive={"methods": derive.get("methods", [treatment, baseline]),
                                               "over": derive.get("over", ["aime", "countdown"])},
                       treatment=treatment, baseline=baseline)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv, __doc__):
        return 0
    plain, settings = split_args(argv, {"out": "out", "family": "family"})
    cfg = compose("paper", settings)
    runs_dir = runs_folder("moi-paper", plain, cfg["runs_dir"])
    grids = experiments(str(cfg["family"]), str(cfg["treatment"]), str(cfg["baseline"]))
    for path in build(runs_dir, Path(cfg["out"]) if cfg["out"] else runs_dir / "paper", grids):
        print(path)
    return 0

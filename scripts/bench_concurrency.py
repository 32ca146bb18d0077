"""Concurrent grid execution vs the same cells one after another, on one engine, in one run.

    python scripts/bench_concurrency.py [--experiment smoke_table1] [OVERRIDE ...]

Composes every cell of an experiment's grid, loads one engine, then runs the cells (a) one after
another, each cell on its own, into one results folder, and (b) all at once, served concurrently,
into another; prints the wall time of each and their ratio, and checks both produced the same
samples. Extra arguments are Hydra overrides (e.g. ``engine=transformers sampling.max_tokens=64``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def configs(experiment: str, overrides: list[str], results_dir: Path) -> list[dict]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.pipeline.grid import compose_cells, expand

    base = [f"experiment={experiment}", f"results_dir={results_dir}", "progress=false", *overrides]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("config", overrides=base), resolve=True)
        return compose_cells(base, expand(cfg["grid"]))


def samples(root: Path) -> dict:
    out = {}
    for path in sorted(root.rglob("samples.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            out[(path.parent.name, record["key"])] = record["completion"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="smoke")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from harness.pipeline.runner import execute, get_engine, prepare, release_engine

    with tempfile.TemporaryDirectory() as tmp:
        one_by_one, together = Path(tmp) / "one_by_one", Path(tmp) / "together"
        sequential, concurrent = (configs(args.experiment, args.overrides, d) for d in (one_by_one, together))
        engine = get_engine(sequential[0])
        warm = [prepare(c) for c in configs(args.experiment, args.overrides, Path(tmp) / "warm")[:1]]
        execute(warm, engine, progress=False)

        start = time.perf_counter()
        for cfg in sequential:
            execute([prepare(cfg)], engine, progress=False)
        t_sequential = time.perf_counter() - start

        start = time.perf_counter()
        execute([prepare(cfg) for cfg in concurrent], engine, progress=False)
        t_concurrent = time.perf_counter() - start

        a, b = samples(one_by_one), samples(together)
        same = sum(a[k] == b.get(k) for k in a)
        release_engine()
    engine_name = sequential[0]["engine"]["name"]
    print(f"\n{args.experiment}: {len(sequential)} cells, {len(a)} samples, engine={engine_name}")
    print("| execution | wall s |\n|---|---|")
    print(f"| one cell after another | {t_sequential:.1f} |")
    print(f"| all cells concurrently | {t_concurrent:.1f} |")
    print(f"\nspeed-up of concurrent execution: {t_sequential / t_concurrent:.2f}x")
    print(f"identical completions: {same}/{len(a)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the shard and SLURM tests share: running commands from the checkout, reading run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def command(args: list[str], env: dict | None = None, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in the checkout with this environment's commands first on PATH."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return command(["make", "--no-print-directory", f"VENV={BIN.parent}", *args], env=env, timeout=timeout)


def run_dirs(root: Path) -> dict[str, Path]:
    """Every run directory under ``root``, by its path relative to ``root``."""
    return {str(p.parent.relative_to(root)): p.parent for p in Path(root).rglob("config.yaml") if ".sweeps" not in p.parts}


def raw_keys(run: Path) -> list[str]:
    """The keys of every line of a run's samples.jsonl, duplicates included."""
    path = run / "samples.jsonl"
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def completions(run: Path) -> dict[str, tuple]:
    """Each sample's completion, seed, token count and grade, by key."""
    out = {}
    for line in (run / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[record["key"]] = (record["completion"], record["seed"], record["completion_tokens"], record["correct"])
    return out


def assert_same_runs(results: Path, reference: Path, only: set[str] | None = None) -> None:
    """``results`` holds exactly the reference's runs (or those of ``only``), each complete, every key once,
    with the reference's completions."""
    got, expected = run_dirs(results), run_dirs(reference)
    if only is not None:
        expected = {name: path for name, path in expected.items() if name in only}
    assert sorted(got) == sorted(expected)
    for name, run in got.items():
        keys = raw_keys(run)
        assert len(keys) == len(set(keys)), f"{name}: duplicated samples"
        assert completions(run) == completions(expected[name]), f"{name}: completions differ from the unsharded run"
        assert json.loads((run / "summary.json").read_text())["complete"], name
        assert not (run / "generations.jsonl").exists(), name


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.2)


def smoke_configs(results: Path, *extra: str) -> list[dict]:
    """The smoke grid's cells, composed as ``moi-run experiment=smoke`` composes them (inside a Hydra context)."""
    from hydra import compose
    from omegaconf import OmegaConf

    from harness.pipeline import grid

    base = ["experiment=smoke", f"results_dir={results}", *extra]
    cells = grid.expand(OmegaConf.to_container(compose("config", overrides=base), resolve=True)["grid"])
    return grid.compose_cells(base, cells)


def smoke_shards(results: Path, count: int) -> list[set[str]]:
    """The run directories (relative to ``results``) of each of ``count`` shards of the smoke grid."""
    from hydra import initialize_config_dir

    from harness.pipeline import shards
    from harness.pipeline.identity import run_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        parts = shards.split(smoke_configs(results), count)
    return [{str(run_dir(c).relative_to(results)) for c in part.runs} for part in parts]

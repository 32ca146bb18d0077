"""Grid shards: disjoint, complete, deterministic parts balanced by tokens; the dry run's report;
bad settings; shards on one node, each with its own GPUs."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime

import pytest
from helpers import REPO, assert_same_runs, command, make, run_dirs, smoke_configs
from hydra import initialize_config_dir

from harness.errors import ConfigError
from harness.pipeline import grid, shards
from harness.pipeline.identity import run_dir


@pytest.fixture
def hydra_context():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        yield


def test_shards_are_disjoint_complete_and_the_same_whatever_the_order(hydra_context, tmp_path):
    configs = smoke_configs(tmp_path)
    everything = {run_dir(c) for c in configs}
    for count in (1, 2, 3, 5):
        parts = shards.split(configs, count)
        members = [{run_dir(c) for c in p.runs} for p in parts]
        assert sum(len(m) for m in members) == len(everything) and set().union(*members) == everything
        shuffled = configs[::-1]
        random.Random(count).shuffle(shuffled)
        assert [{run_dir(c) for c in p.runs} for p in shards.split(shuffled, count)] == members
    # a job setting never reaches a cell: the cells of a shard job are the unsharded cells
    assert smoke_configs(tmp_path, "shards=2", "shard=1", "estimate.throughput=5") == configs


def test_shards_balance_generated_tokens_not_cells(hydra_context, tmp_path):
    """One AIME cell (4 problems x 32768 tokens) weighs as much as four CountDown cells (4 x 8192)."""
    base = ["experiment=smoke", f"results_dir={tmp_path}", "sampling.max_tokens=null"]
    cells = [{"task": "aime", "task.data.path": "tasks/offline/aime24.jsonl", "task.limit": 4, "seed": 0}]
    cells += [{"task": "countdown", "task.data.path": "tasks/offline/countdown4_256.jsonl", "task.limit": 4, "seed": s}
              for s in range(4)]
    parts = shards.split(grid.compose_cells(base, cells), 2)
    assert [len(p.runs) for p in parts] == [1, 4]
    assert [p.tokens for p in parts] == [4 * 32768, 4 * 4 * 8192] and shards.balance(parts) == 1.0
    assert parts[0].runs[0]["task"]["name"] == "aime"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["shards=2"], "error: shards=2 needs shard=I, one of 0..1; run them all with -m shard=0,1"),
        (["shards=2", "shard=2"], "error: shard must be an integer in 0..1 (shards=2), got 2"),
        (["shards=0"], "error: shards must be a positive integer, got 0"),
        (["gpus_per_shard=0"], "error: gpus_per_shard must be a positive integer or null, got 0"),
        (["dry_run=true", "estimate.gpu=v100"],
         "error: estimate.gpu 'v100' has no default throughput; valid: a100, h100, h200 (or set estimate.throughput=TOKENS_PER_S)"),
    ],
)
def test_bad_shard_settings_stop_with_one_line(override, message):
    result = command([str(REPO / ".venv/bin/moi-run"), "experiment=smoke", *override], check=False, timeout=120)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [message]


def test_shard_gpus_of_one_node():
    assert [shards.shard_gpus(list("01234567"), 2, i) for i in range(5)] == ["0,1", "2,3", "4,5", "6,7", "0,1"]
    assert shards.shard_gpus(["4", "5", "6", "7"], 2, 1) == "6,7"
    assert shards.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    with pytest.raises(ConfigError, match=r"gpus_per_shard=2 needs 2 GPUs; this process sees 1 \(0\)"):
        shards.shard_gpus(["0"], 2, 0)


def test_dry_run_reports_each_shard_and_an_estimate():
    result = command([str(REPO / ".venv/bin/moi-run"), "experiment=smoke", "dry_run=true", "shards=2",
                      "estimate.throughput=0.5"], timeout=120)
    lines = result.stdout.splitlines()
    assert lines[0] == "model tiny: 38 cells, 92 requests, at most 2944 generated tokens"
    assert lines[1].startswith("  estimate (not a measurement): at most 1.6 GPU-hours (1.6 h of one engine) at 0.5 "
                               "generated tokens/s per engine (estimate.throughput), 1 GPU per engine")
    assert lines[2] == "  2 shards balanced by token bound: largest 1472 tokens = 1.000 x the mean 1472"
    assert lines[3:] == [f"  shard {i}/2: 19 runs, 46 requests, at most 1472 tokens; at most 0.8 GPU-hours (0.8 h of one engine)"
                         for i in (0, 1)]
    one = command([str(REPO / ".venv/bin/moi-run"), "experiment=smoke", "dry_run=true", "shards=2", "shard=1",
                   "estimate.throughput=0.5"], timeout=120)
    assert one.stdout.splitlines() == lines[:3] + lines[4:]  # only its own shard


@pytest.mark.slow
def test_make_reproduce_dry_run_with_8_shards_is_balanced_with_gpu_hours():
    """`make reproduce DRY_RUN=1 SHARDS=8`: every model's Table 1 and A4 grids in 8 shards within 10% of the mean."""
    out = make("reproduce", "DRY_RUN=1", "SHARDS=8", timeout=600).stdout
    jobs = re.findall(r"model (\S+): (\d+) cells.*\n  estimate \(not a measurement\): at most ([\d.]+) GPU-hours.*\n"
                      r"  8 shards balanced by token bound: largest (\d+) tokens = ([\d.]+) x the mean (\d+)(.*)\n"
                      r"((?:  shard \d/8: .*GPU-hours.*\n){8})", out)
    models = ("qwq_32b", "nemotron_super_49b", "gemma3_27b", "dapo_qwen_32b")
    assert sorted(j[0] for j in jobs) == sorted(models * 3), out[-3000:]
    for model, cells, gpu_hours, largest, ratio, mean, note, _ in jobs:
        assert float(gpu_hours) > 0
        assert float(ratio) == pytest.approx(int(largest) / int(mean), abs=1e-3)
        if cells in ("966", "128"):  # Table 1, Table A4: balanced
            assert float(ratio) <= 1.10, (model, cells, ratio)
        else:  # Table A1: 4 runs cannot fill 8 shards, and the report says so
            assert cells == "4" and "4 empty" in note
    table1 = [j for j in jobs if j[1] == "966"]
    print("\n".join(f"{m}: largest shard {r} x the mean token bound, {h} GPU-hours" for m, _, h, _, r, _, _, _ in table1))


@pytest.mark.slow
def test_shards_on_one_node_run_at_once_each_with_its_own_gpus(tmp_path, tiny_model_path):
    """The local launch of README's "Shards on one node": submitit_local starts both shards at once, each in a
    process of its own given the node's 4 GPUs (CUDA_VISIBLE_DEVICES=0,1,2,3), which it narrows to its two."""
    base = [f"model.path={tiny_model_path}", "task.data.path=tasks/offline/countdown4_256.jsonl", "task.limit=2",
            "sampling.max_tokens=8", "progress=false", "grid=[{method:[standard,moi],method.beta:[2],seed:[0,1,2]}]"]
    moi_run = str(REPO / ".venv/bin/moi-run")
    command([moi_run, *base, f"results_dir={tmp_path / 'unsharded'}"])
    results = tmp_path / "runs"
    command([moi_run, "-m", *base, "shards=2", "shard=0,1", "gpus_per_shard=2", "hydra/launcher=submitit_local",
             "hydra.launcher.gpus_per_node=4", f"results_dir={results}"])
    assert_same_runs(results, tmp_path / "unsharded")
    devices = {}
    for name, run in run_dirs(results).items():
        devices.setdefault(json.loads((run / "manifest.json").read_text())["hardware"]["cuda_visible_devices"], set()).add(name)
    assert sorted(devices) == ["0,1", "2,3"] and sorted(map(len, devices.values())) == [3, 3]
    logs = [log.read_text() for log in (results / ".sweeps").rglob("*_log.out")]
    assert sorted(re.search(r"^shard (\d)/2: CUDA_VISIBLE_DEVICES=(\S+)$", log, re.M).groups() for log in logs) == [
        ("0", "0,1"), ("1", "2,3")]
    started = [datetime.strptime(re.search(r"submitit INFO \((.*?)\) - Starting", log).group(1), "%Y-%m-%d %H:%M:%S,%f")
               for log in logs]
    assert abs((started[0] - started[1]).total_seconds()) < 6  # at once (one after the other: a whole job, 10 s or more, apart)

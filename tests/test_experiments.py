"""Every experiment config composes and dry-runs, and the Soft Thinking vs MoI comparison runs end to
end on the tiny model (its CPU-sized twin), with gains and McNemar tests in the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))


def test_every_experiment_dry_runs():
    result = subprocess.run(
        [sys.executable, "-m", "harness.run", "-m", f"experiment={','.join(EXPERIMENTS)}", "dry_run=true"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [line for line in result.stdout.splitlines() if " cells, " in line]
    assert len(reports) == len(EXPERIMENTS), result.stdout


@pytest.mark.vllm
def test_soft_thinking_vs_moi_runs_and_the_table_compares_each_method(tmp_path):
    from harness.analysis.table import build

    runs = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "harness.run", "experiment=smoke_soft_thinking_vs_moi", f"results_dir={runs}",
         f"cache_dir={tmp_path / 'cache'}", "progress=false"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    markdown, _ = build(runs)
    assert "| tiny | Gain vs. Standard: MoI |" in markdown and "| tiny | Gain vs. Standard: Soft Thinking |" in markdown
    assert "(p=" in markdown  # McNemar tests of each pair
    soft = [json.loads(line) for path in runs.rglob("soft_thinking_*/samples.jsonl") for line in path.read_text().splitlines()]
    assert soft and all(s["method"]["name"] == "soft_thinking" for s in soft)
    assert all(s["method_stats"]["cold_stop"] for s in soft if s["completion_tokens"] > 8)
    summary = json.loads(next(runs.rglob("soft_thinking_*/summary.json")).read_text())
    assert summary["method_stats"]["cold_stop"]["samples"] == summary["n"]

"""The paper's tables from synthetic run directories whose right answers are known."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.analysis import paper
from harness.analysis.runs import load_runs, load_samples
from harness.analysis.selection import best_configuration, best_per_task
from harness.cli.paper import experiments

GRIDS = experiments("paper")

AIME = {  # (method, beta, temperature): per-seed outcomes of problems p0..p3
    ("standard", None, 0.6): [[1, 0, 0, 0], [1, 1, 0, 0]],   # 37.5
    ("standard", None, 0.8): [[1, 1, 1, 0], [1, 1, 0, 0]],   # 62.5  best standard
    ("moi", 0.5, 0.6): [[1, 1, 1, 0], [1, 1, 1, 0]],         # 75    best MoI (ties beta 2: smaller beta wins)
    ("moi", 1.0, 0.6): [[1, 1, 0, 0], [1, 1, 0, 0]],         # 50
    ("moi", 2.0, 0.6): [[0, 1, 1, 1], [0, 1, 1, 1]],         # 75
    ("direct_mixture", None, 0.6): [[0, 0, 0, 0], [0, 0, 0, 0]],
}
COUNTDOWN = {
    ("standard", None, 0.6): [[1, 1, 1, 1]] * 2,             # 100
    ("standard", None, 0.8): [[0, 0, 0, 0]] * 2,             # 0
    ("moi", 0.5, 0.6): [[1, 0, 0, 0]] * 2,                   # 25
    ("moi", 1.0, 0.6): [[1, 1, 1, 1]] * 2,                   # 100
    ("moi", 2.0, 0.6): [[1, 1, 0, 0]] * 2,                   # 50
    ("direct_mixture", None, 0.6): [[1, 1, 0, 0]] * 2,
}
GPQA = {  # one seed; (moi, 2.0) is not in the Table 1 grid (beta 1 only there)
    ("standard", None, 0.6): [1, 1, 0, 0],
    ("direct_mixture", None, 0.6): [1, 0, 0, 0],
    ("moi", 1.0, 0.6): [1, 1, 1, 0],
    ("moi", 2.0, 0.6): [1, 1, 1, 1],
}


@pytest.fixture
def runs(tmp_path, write_run):
    for task, table in (("aime", AIME), ("countdown", COUNTDOWN)):
        for (method, beta, temperature), seeds in table.items():
            for seed, correct in enumerate(seeds):
                write_run(tmp_path, model="m", paper_name="QwQ-32B", task=task, method=method, beta=beta,
                          temperature=temperature, top_p=0.95, seed=seed, correct=correct)
    for (method, beta, temperature), correct in GPQA.items():
        write_run(tmp_path, model="m", paper_name="QwQ-32B", task="gpqa_diamond", method=method, beta=beta,
                  temperature=temperature, top_p=0.95, seed=0, correct=correct)
    return tmp_path


def by_key(frame, *columns):
    return {tuple(getattr(r, c) for c in columns): r for r in frame.itertuples()}


def test_best_cells_and_tie_breaking(runs):
    chosen = by_key(best_per_task(load_runs(runs)), "method", "task")
    assert (chosen[("standard", "aime")].temperature, chosen[("standard", "aime")].accuracy) == (0.8, 0.625)
    assert (chosen[("moi", "aime")].beta, chosen[("moi", "aime")].accuracy) == (0.5, 0.75)  # ties beta 2
    assert (chosen[("moi", "countdown")].beta, chosen[("moi", "countdown")].n_seeds) == (1.0, 2)
    assert chosen[("moi", "gpqa_diamond")].beta == 2.0  # without a grid filter every run competes


def test_best_configuration_over_tasks(runs):
    frame = load_runs(runs)
    standard = best_configuration(frame, "m", "standard", ["aime", "countdown"])
    assert {k: standard[k] for k in ("beta", "temperature", "top_p", "score", "searched")} == {
        "beta": None, "temperature": 0.6, "top_p": 0.95, "score": pytest.approx((0.375 + 1.0) / 2), "searched": {}}
    moi = best_configuration(frame, "m", "moi", ["aime", "countdown"])
    assert (moi["beta"], moi["score"], moi["searched"]) == (1.0, pytest.approx(0.75), {"beta": 1.0})
    assert best_configuration(frame, "m", "moi", ["aime", "livecodebench"]) is None  # no config has both
    assert best_configuration(frame, "other", "moi", ["aime"]) is None


def test_table1_selects_in_the_grid_with_standard_errors(runs):
    frame = load_runs(runs)
    names = paper.paper_names(runs)
    t1 = by_key(paper.table1(frame, load_samples(runs), names, GRIDS.table1),
                "method", "task")
    moi_aime = t1[("moi", "aime")]
    assert (moi_aime.model, moi_aime.accuracy, moi_aime.beta, moi_aime.temperature) == ("QwQ-32B", 75.0, 0.5, 0.6)
    # pooled over both seeds, per-problem means 1, 1, 1, 0: sd 0.5 over sqrt(4) problems
    assert moi_aime.stderr == pytest.approx(25.0)
    assert (moi_aime.paper, moi_aime.diff, moi_aime.within_2se) == (80.0, -5.0, True)
    std_cd = t1[("standard", "countdown")]
    assert (std_cd.accuracy, std_cd.stderr, std_cd.paper, std_cd.within_2se) == (100.0, 0.0, 79.25, False)
    assert t1[("moi", "gpqa_diamond")].accuracy == 75.0  # the grid's beta-1 cell, not the beta-2 run
    assert pd.isna(t1[("direct_mixture", "aime")].beta)
    layout = paper.table1_layout(paper.table1(frame, load_samples(runs), names, GRIDS.table1), GRIDS)
    assert "| QwQ-32B | MoI | 75.00 (80.00) | 100.00 (80.01) | 75.00 (60.10) | 83.33 |" in layout
    assert "| QwQ-32B | Gain vs. Standard | +12.50 | +0.00 | +25.00 | +12.50 |" in layout


def test_table_a1_transfers_the_selected_configuration(runs):
    frame = load_runs(runs)
    a1 = by_key(paper.table_a1(frame, load_samples(runs), paper.paper_names(runs), GRIDS), "method", "task")
    # MoI's best mean over AIME + CountDown4 is beta 1 (75), so GPQA is read at beta 1, not its best (beta 2)
    assert [a1[("moi", t)].accuracy for t in ("aime", "countdown", "gpqa_diamond")] == [50.0, 100.0, 75.0]
    assert {a1[("moi", t)].beta for t in ("aime", "countdown", "gpqa_diamond")} == {1.0}
    assert [a1[("standard", t)].accuracy for t in ("aime", "countdown", "gpqa_diamond")] == [37.5, 100.0, 50.0]
    assert a1[("moi", "aime")].paper == 78.44 and ("direct_mixture", "aime") not in a1


def test_table_a4_mean_and_sd_across_seeds(runs):
    a4 = by_key(paper.table_a4(load_runs(runs), paper.paper_names(runs), GRIDS), "method")
    standard = a4[("standard",)]
    assert (standard.n_seeds, standard.mean) == (2, 37.5)
    assert standard.sd == pytest.approx(math.sqrt(((25 - 37.5) ** 2 + (50 - 37.5) ** 2) / 1))
    assert (a4[("moi",)].mean, a4[("moi",)].sd, a4[("moi",)].paper_mean) == (50.0, 0.0, 77.66)


def test_figure3_deviation_from_the_task_mean(runs):
    data = by_key(paper.figure3_data(load_runs(runs)[paper.in_grid(load_runs(runs), GRIDS.table1)]), "task", "beta")
    assert data[("aime", 0.5)].deviation == pytest.approx(75 - 200 / 3)
    assert data[("aime", 1.0)].deviation == pytest.approx(50 - 200 / 3)
    assert data[("countdown", 1.0)].deviation == pytest.approx(100 - 175 / 3)
    assert data[("countdown", 0.5)].n_models == 1


def test_mcnemar_pairs_samples(runs):
    frame = load_runs(runs)
    samples = load_samples(runs)
    names = paper.paper_names(runs)
    grid = GRIDS.table1
    tests = by_key(paper.mcnemar_table(paper.table1(frame, samples, names, grid), samples, GRIDS), "task")
    aime = tests[("aime",)]  # MoI beta 0.5 vs Standard T 0.8: only seed 1 problem p2 differs
    assert (aime.pairs, aime.treatment_only, aime.baseline_only, aime.p_value) == (8, 1, 0, 1.0)


def test_outputs_are_byte_identical(runs, tmp_path):
    first = paper.build(runs, tmp_path / "one", GRIDS)
    second = paper.build(runs, tmp_path / "two", GRIDS)
    assert [p.name for p in first] == [p.name for p in second]
    assert {"table1.csv", "tableA1.csv", "tableA4.csv", "mcnemar.csv", "figure3.csv", "tables.md", "figure3.png"} <= {
        p.name for p in first}
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_tables_name_the_experiments_only_when_the_runs_came_from_them(runs, tmp_path, write_run):
    paper.build(runs, tmp_path / "paper", GRIDS)
    assert "experiments `paper_*`" in (tmp_path / "paper" / "tables.md").read_text()
    other = tmp_path / "other"
    write_run(other, task="aime", method="moi", beta=3.0, temperature=0.7, correct=[1, 0])
    paper.build(other, tmp_path / "other_paper", GRIDS)
    text = (tmp_path / "other_paper" / "tables.md").read_text()
    assert "experiments `paper_*`" not in text and "no run matches the grids of the `paper` experiments" in text


def test_partial_run_sets_give_empty_gains_not_a_crash(tmp_path, write_run):
    write_run(tmp_path, task="aime", method="direct_mixture", correct=[1, 0, 1, 0])
    written = paper.build(tmp_path, tmp_path / "paper", GRIDS)
    text = (tmp_path / "paper" / "tables.md").read_text()
    assert "| m | Gain vs. Standard | - | - |" in text and any(p.name == "tables.md" for p in written)

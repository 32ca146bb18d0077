"""The results table on synthetic run directories whose right answers are known."""

from __future__ import annotations

import itertools
import json
import math
from math import comb
from pathlib import Path

import pytest

from harness.analysis import table
from harness.cli.table import main as table_main
from harness.stats import clustered_stderr, pass_at_k, summarize
from harness.storage import RunDir, read_jsonl


@pytest.fixture
def runs(tmp_path, write_run) -> Path:
    def make(model, task, method, beta, seed, correct):
        write_run(tmp_path, model=model, task=task, method=method, beta=beta, seed=seed, correct=correct)

    # model A: standard 50% / 25% on two tasks; MoI beta 1 75% / 50%; MoI beta 2 100% / 0%.
    make("A", "countdown", "standard", None, 0, [True, False, True, False])
    make("A", "aime", "standard", None, 0, [True, False, False, False])
    make("A", "countdown", "moi", 1.0, 0, [True, True, True, False])
    make("A", "aime", "moi", 1.0, 0, [True, True, False, False])
    make("A", "countdown", "moi", 2.0, 0, [True, True, True, True])
    make("A", "aime", "moi", 2.0, 0, [False, False, False, False])
    # model B: two seeds of direct mixture pooled: (2/4 + 4/4) / 2 = 75%
    make("B", "countdown", "direct_mixture", None, 0, [True, True, False, False])
    make("B", "countdown", "direct_mixture", None, 1, [True, True, True, True])
    return tmp_path


def rows_of(frame):
    """Result rows by (model, method, beta)."""
    results = frame[frame.kind == "result"]
    return {(r["model"], r["method"], None if r["method.beta"] != r["method.beta"] else r["method.beta"]): r
            for _, r in results.iterrows()}


AIME = "AIME (4 problems × 1 sample)"
CD = "CountDown4 (4 problems × 1 sample)"


def test_entries_gain_and_layout(runs):
    markdown, frame = table.build(runs)
    rows = rows_of(frame)
    std = rows[("A", "standard", None)]
    assert (std[AIME], std[CD], std["avg"]) == (25.0, 50.0, 37.5)
    moi1, moi2 = rows[("A", "moi", 1.0)], rows[("A", "moi", 2.0)]
    assert (moi1[AIME], moi1[CD], moi1["avg"]) == (50.0, 75.0, 62.5)
    assert (moi2[AIME], moi2[CD], moi2["avg"]) == (0.0, 100.0, 50.0)
    dm = rows[("B", "direct_mixture", None)]
    assert dm[CD] == 75.0
    # standard error with problems as the unit: per-problem means over both seeds
    assert dm[f"{CD} se"] == pytest.approx(100 * clustered_stderr({"p0": [1, 1], "p1": [1, 1], "p2": [0, 1], "p3": [0, 1]}))
    assert std[f"{CD} se"] == pytest.approx(100 * math.sqrt(0.5 * 0.5 / 3) * math.sqrt(4 / 4))
    gains = frame[frame.kind == "gain_vs_standard"]
    [gain] = gains[gains.model == "A"].to_dict(orient="records")
    assert (gain[AIME], gain[CD], gain["avg"]) == (25.0, 50.0, 37.5)  # per task: beta 1 on AIME, beta 2 on CD
    assert gains[gains.model == "B"].empty  # no standard row for B
    lines = markdown.splitlines()
    assert lines[0] == f"| Model | Method | beta | T | top-p | {AIME} | {CD} | Avg |"
    a_rows = [line for line in lines if line.startswith("| A |")]
    assert [line.split(" | ")[1] for line in a_rows] == ["Standard", "MoI", "MoI", "Gain vs. Standard: MoI"]
    assert "| A | MoI | 1 | 0.6 | 0.95 | 50.00 ± 28.87 | 75.00 ± 25.00 | 62.50 ± 19.09 |" in lines
    assert "| A | Gain vs. Standard: MoI |  |  |  | +25.00 (p=1) | +50.00 (p=0.5) | +37.50 |" in lines
    assert [line for line in lines if line.startswith("| B |")] == [  # no AIME run: no Avg; its 2 seeds are said
        f"| B | Direct Mixture | - | 0.6 | 0.95 | - | 75.00 ± {dm[f'{CD} se']:.2f} (2 seeds) | - |"
    ]
    assert "Note: B: no Standard run, so no gains or McNemar tests." in lines


def test_runs_that_differ_in_any_identity_field_are_never_pooled(tmp_path, write_run):
    """Defect 1: MoI topk and full at the same beta (and k, quirks, engine...) were one row."""
    write_run(tmp_path, task="aime", method="moi", beta=1.0, correct=[1, 1, 1, 1], method_params={"support": "topk", "k": 20})
    write_run(tmp_path, task="aime", method="moi", beta=1.0, correct=[0, 0, 0, 0], method_params={"support": "full"})
    write_run(tmp_path, task="aime", method="moi", beta=1.0, correct=[1, 0, 0, 0], method_params={"support": "topk", "k": 5})
    write_run(tmp_path, task="aime", method="standard", correct=[1, 1, 0, 0])
    markdown, frame = table.build(tmp_path)
    results = frame[(frame.kind == "result") & (frame.method == "moi")]
    assert sorted(results[AIME]) == [0.0, 25.0, 100.0]  # three MoI rows, none the mean of another
    assert "| beta | T | top-p | k | support |" in markdown.splitlines()[0]  # the fields that set the rows apart
    assert any("| full |" in line for line in markdown.splitlines())


def test_different_problem_sets_are_different_columns(tmp_path, write_run):
    write_run(tmp_path, task="aime", method="standard", correct=[1, 0, 0, 0])
    write_run(tmp_path, task="aime", method="standard", correct=[1, 1], seed=1)  # a 2-problem view
    write_run(tmp_path, task="aime", method="standard", correct=[1, 1, 1, 1], task_params={"data": {"path": "other.jsonl"}})
    markdown, frame = table.build(tmp_path)
    header = markdown.splitlines()[0]
    assert "AIME (2 problems × 1 sample)" in header and "AIME (4 problems × 1 sample)" in header
    assert "AIME [data.path=other.jsonl] (4 problems × 1 sample)" in header


def test_a_directory_without_pairs_gives_a_table_and_a_note(tmp_path, write_run):
    """Defect 2: harness.table crashed (AttributeError) when no model had both MoI and Standard."""
    write_run(tmp_path, task="countdown", method="direct_mixture", correct=[1, 0])
    assert table_main([str(tmp_path)]) == 0
    markdown = (tmp_path / "table.md").read_text()
    assert "| m | Direct Mixture |" in markdown and "Note: m: no Standard run" in markdown


def test_runs_of_earlier_versions_are_still_read(tmp_path, write_run):
    write_run(tmp_path, task="aime", method="moi", beta=2.0, correct=[1, 1, 0, 0], legacy=True)
    write_run(tmp_path, task="aime", method="standard", correct=[1, 0, 0, 0], legacy=True)
    _, frame = table.build(tmp_path)
    rows = rows_of(frame)
    assert rows[("m", "moi", 2.0)][AIME] == 50.0 and rows[("m", "standard", None)][AIME] == 25.0


def test_table_files_are_byte_identical_across_runs(runs, tmp_path):
    out1, out2 = tmp_path / "one", tmp_path / "two"
    assert table_main([str(runs), "--out", str(out1)]) == 0
    assert table_main([str(runs), f"out={out2}"]) == 0
    for name in ("table.md", "table.csv"):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes()
    assert "gain_vs_standard" in (out1 / "table.csv").read_text()


def brute_force_pass_at_k(results: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(results, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 1), (5, 2, 2), (6, 1, 3), (4, 0, 2), (4, 4, 4), (10, 3, 5)])
def test_pass_at_k_equals_the_brute_force_count(n, c, k):
    results = [True] * c + [False] * (n - c)
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(results, k))
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_summaries_average_pass_at_k_over_problems():
    samples = [{"problem_id": p, "correct": ok} for p, oks in (("a", [1, 0, 0, 0]), ("b", [0, 0, 0, 0])) for ok in oks]
    assert summarize(samples)["pass_at_k"] == pytest.approx({"1": (1 / 4 + 0) / 2, "2": (1 / 2 + 0) / 2, "4": 0.5})


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - (3 * 2) / (4 * 3))
    assert pass_at_k(5, 4, 2) == 1.0


def test_storage_drops_a_torn_line_and_never_duplicates(tmp_path):
    run = RunDir(tmp_path)
    run.append_sample({"key": "a#0", "v": 1})
    run.append_sample({"key": "b#0", "v": 2})
    run.close()
    with open(run.samples_path, "ab") as handle:  # a write cut short by SIGKILL
        handle.write(b'{"key": "c#0", "v": ')
    assert [r["key"] for r in run.samples()] == ["a#0", "b#0"]
    run.append_sample({"key": "c#0", "v": 3})  # appending first truncates the torn tail
    run.append_sample({"key": "a#0", "v": 99})  # a duplicate line is ignored by readers
    run.close()
    lines = run.samples_path.read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == ["a#0", "b#0", "c#0", "a#0"]
    assert [(r["key"], r["v"]) for r in read_jsonl(run.samples_path)] == [("a#0", 1), ("b#0", 2), ("c#0", 3)]

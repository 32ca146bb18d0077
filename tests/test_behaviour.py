"""The behaviour table and the example completions, on synthetic runs whose numbers are known."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis import behaviour
from harness.cli.table import main as table_main
from harness.storage import RunDir, write_json


def make_run(root: Path, task: str, method: str, beta, seed: int, samples: list[dict]) -> None:
    """A run directory holding ``samples`` (each: completion, tokens, finish, details, mixed)."""
    run = RunDir(root / task / "m" / f"{method}-{beta}-{seed}")
    for i, s in enumerate(samples):
        run.append_sample({
            "key": f"p{i}#0", "problem_id": f"p{i}", "sample_index": 0, "correct": s.get("correct", False),
            "completion": s["text"], "completion_tokens": s["tokens"], "finish_reason": s["finish"],
            "grade_details": s["details"], "mixed_steps": s["mixed"], "method_stats": s.get("stats", {}),
        })
    run.close()
    write_json(run.path / "summary.json", {"model": "m", "task": task, "method": method, "beta": beta,
                                           "temperature": 0.6, "top_p": 0.95, "seed": seed, "engine": "vllm",
                                           "accuracy": 0.0, "stderr": 0.0, "n": len(samples)})


def sample(text="x", tokens=10, finish="stop", details=None, mixed=0, correct=False, stats=None) -> dict:
    return {"text": text, "tokens": tokens, "finish": finish, "details": details or {}, "mixed": mixed, "correct": correct,
            "stats": stats or {}}


def hist(*bins: int) -> list[int]:
    """A 20-bin histogram with one count in each of ``bins``."""
    counts = [0] * 20
    for b in bins:
        counts[b] += 1
    return counts


@pytest.fixture
def runs(tmp_path) -> Path:
    ok, bad = {"format_ok": True}, {"format_ok": False}
    make_run(tmp_path, "countdown", "standard", None, 0, [
        sample("<answer> 1 + 2 </answer>", 10, details=ok, correct=True), sample("no tags", 30, "length", bad),
    ])
    make_run(tmp_path, "countdown", "standard", None, 1, [  # a second seed, pooled with the first
        sample("again", 20, details=bad), sample("again", 40, "length", bad),
    ])
    make_run(tmp_path, "countdown", "direct_mixture", None, 0, [
        sample("To:\n\n\n\nA", 64, "length", bad, mixed=63), sample("\n" * 60, 64, "length", bad, mixed=63),
    ])
    make_run(tmp_path, "aime", "moi", 2.0, 0, [
        sample("so \\boxed{3}", 8, details={"source": "boxed"}, mixed=7,
               stats={"entropy_hist": hist(0, 0, 0, 19), "sampled_weight_hist": hist(19, 19, 19, 10)}),
        sample("it is 3", 4, details={"source": "text"}, mixed=3,
               stats={"entropy_hist": hist(0, 0, 0, 0), "sampled_weight_hist": hist(19, 19, 19, 19)}),
    ])
    return tmp_path


def test_rates_pool_seeds_and_follow_each_graders_format(runs):
    frame = behaviour.table(behaviour.load(runs))
    rows = {(r.task, r.method): r for r in frame.itertuples()}
    std = rows[("countdown", "standard")]
    assert (std.n, std.seeds, std.accuracy, std.format, std.mean_tokens, std.length_capped, std.mixed) == (
        4, 2, 25.0, 25.0, 25.0, 50.0, 0.0)
    dm = rows[("countdown", "direct_mixture")]
    assert (dm.format, dm.length_capped, dm.mixed) == (0.0, 100.0, 100.0)
    moi = rows[("aime", "moi")]
    assert (moi.beta, moi.format, moi.mean_tokens, moi.mixed) == (2.0, 50.0, 6.0, 100.0)
    assert [(r.task, r.method) for r in frame.itertuples()] == [  # the paper's task and method order
        ("aime", "moi"), ("countdown", "standard"), ("countdown", "direct_mixture")]


def test_format_is_unknown_for_graders_that_do_not_record_it():
    assert behaviour.format_ok({"verdict_detail": 1}) is None and behaviour.format_ok(None) is None
    assert behaviour.format_ok({"format_ok": True}) and not behaviour.format_ok({"source": "text"})


def test_examples_show_every_method_on_the_same_problem_on_one_line(runs):
    text = behaviour.examples(behaviour.load(runs), per_task=1, width=40)
    lines = text.splitlines()
    assert lines[0] == "AIME, problem p0:" and lines[1].startswith("  MoI b=2") and "so \\boxed{3}" in lines[1]
    countdown = lines[lines.index("CountDown4, problem p0:") + 1:]
    assert [line.split("(")[0].strip() for line in countdown] == ["Standard", "Direct Mixture"]
    assert countdown[0].endswith("<answer> 1 + 2 </answer>")  # seed 0's first sample
    assert countdown[1].endswith("To: ⏎×4 A") and "capped" in countdown[1]
    assert behaviour.one_line("a\nb" + "\n" * 60 + "c " * 50, 20) == "a ⏎ b ⏎×60 c c c c …"


def test_the_table_command_writes_them_beside_the_results(runs, capsys):
    assert table_main([str(runs), "behaviour=true", "examples=1"]) == 0
    out = capsys.readouterr().out
    assert "| Format % |" in out and "CountDown4, problem p0:" in out
    assert {"table.md", "behaviour.md", "behaviour.csv", "examples.txt", "steps.md", "steps.csv", "steps.png"} <= {
        p.name for p in runs.iterdir()}
    assert "| m | CountDown4 | Standard | - | 0.6 | 0.95 | 4 | 2 | 25.0 | 25.0 | 25.0 | 50.0 | 0.0 |" in (
        runs / "behaviour.md").read_text()


def test_runs_that_differ_in_any_identity_field_are_never_pooled(runs):
    import json

    other = runs / "countdown" / "m" / "standard-None-1"  # seed 1 of Standard, now with another max_tokens
    summary = json.loads((other / "summary.json").read_text())
    summary["identity"] = {"model": {"name": "m"}, "task": {"name": "countdown"}, "method": {"name": "standard"},
                           "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 99}, "seed": 1, "engine": "vllm"}
    write_json(other / "summary.json", summary)
    rows = behaviour.table(behaviour.load(runs))
    std = rows[(rows.task == "countdown") & (rows.method == "standard")]
    assert sorted(std.n) == [2, 2] and list(std.seeds) == [1, 1]


def test_moi_step_histograms_pool_samples_per_setting(runs, tmp_path):
    steps = behaviour.step_histograms(behaviour.load(runs))
    assert set(steps.method) == {"moi"} and set(steps.stat) == {"entropy", "sampled_weight"}
    entropy = steps[steps.stat == "entropy"]
    assert entropy["count"].sum() == 8 and entropy.iloc[0]["count"] == 7 and entropy.iloc[-1]["count"] == 1
    assert abs(entropy["share"].sum() - 1) < 1e-9 and (entropy.low.iloc[1], entropy.high.iloc[1]) == (0.05, 0.1)
    text = behaviour.step_markdown(steps)
    assert "| m | AIME | MoI | 2 | 0.6 | 0.95 | entropy | 8 | 0.144 | 87.5 | 12.5 |" in text
    behaviour.step_figure(steps, tmp_path / "steps.png")
    assert (tmp_path / "steps.png").read_bytes()[:4] == b"\x89PNG"

"""The runner end to end: run directories, resume after SIGKILL, clear errors, engine reuse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COUNTDOWN = "task.data.path=tasks/offline/countdown4_256.jsonl"


def harness_run(args: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "harness.run", *args], cwd=REPO, capture_output=True, text=True, timeout=600, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"harness.run failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def base_args(tiny_model_path: str, results: Path) -> list[str]:
    return [f"model.path={tiny_model_path}", COUNTDOWN, f"results_dir={results}", "progress=false"]


def only_run(results: Path) -> Path:
    [run] = [p.parent for p in results.rglob("config.yaml")]
    return run


def raw_keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()]


def test_run_writes_a_complete_run_directory(tiny_model_path, tmp_path):
    args = base_args(tiny_model_path, tmp_path) + ["method=moi", "method.beta=0.5", "task.limit=3",
                                                   "task.n_samples=2", "sampling.max_tokens=16"]
    first = harness_run(args)
    assert "accuracy" in first.stdout
    run = only_run(tmp_path)
    assert run.name.startswith("moi-b0.5_T0.6_p0.95_s0_transformers_")
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "manifest.json", "samples.jsonl", "summary.json"}
    assert not (run / "generations.jsonl").exists()
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6
    for sample in samples:
        assert {"prompt", "completion", "prompt_tokens", "completion_tokens", "finish_reason", "sampling",
                "correct", "extracted", "verdict", "mixed_steps"} <= set(sample)
        assert sample["mixed_steps"] == sample["completion_tokens"] - 1
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["kind"] == "file" and len(manifest["dataset"]["sha256"]) == 64
    assert manifest["model"]["fingerprint"] and manifest["packages"]["torch"]
    assert {"sha", "dirty"} <= set(manifest["git"]) and manifest["seeds"]["run_seed"] == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n"] == 6 and summary["complete"] and summary["mixed_steps"]["total"] > 0
    # the same settings again: resumes into the same directory and generates nothing
    again = harness_run(args)
    assert "samples to generate" not in again.stdout + again.stderr
    assert only_run(tmp_path) == run and len(raw_keys(run / "samples.jsonl")) == 6
    # re-grading in place (e.g. after a grader fix) rewrites grades and the summary, nothing else
    tampered = [dict(s, correct=True, verdict="stale") for s in samples]
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in tampered))
    from harness.cli import grade

    assert grade.main([str(run), "--no-progress"]) == 0
    regraded = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [(s["key"], s["verdict"], s["completion"]) for s in regraded] == [
        (s["key"], s["verdict"], s["completion"]) for s in samples]
    assert json.loads((run / "summary.json").read_text())["correct"] == summary["correct"]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_model_path, tmp_path):
    settings = ["method=moi", "method.beta=2", "task.limit=8", "task.n_samples=2", "sampling.max_tokens=32",
                "engine.batch_size=2"]
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    harness_run(base_args(tiny_model_path, reference_dir) + settings)
    reference = {json.loads(x)["key"]: json.loads(x) for x in (only_run(reference_dir) / "samples.jsonl").read_text().splitlines()}

    process = subprocess.Popen(
        [sys.executable, "-m", "harness.run", *base_args(tiny_model_path, killed_dir), *settings],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 300
    journal = None
    while time.time() < deadline:
        found = list(killed_dir.rglob("generations.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 5:
            journal = found[0]
            break
        time.sleep(0.05)
    assert journal is not None, "the run never started writing"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    run = journal.parent
    written = len(raw_keys(journal))
    assert written < len(reference), "killed too late to test anything"

    harness_run(base_args(tiny_model_path, killed_dir) + settings)
    keys = raw_keys(run / "samples.jsonl")
    assert len(keys) == len(set(keys)) == len(reference)  # nothing missing, nothing duplicated
    resumed = {json.loads(x)["key"]: json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()}
    for key, sample in reference.items():
        for field in ("completion", "seed", "completion_tokens", "finish_reason", "correct", "verdict", "mixed_steps"):
            assert resumed[key][field] == sample[field], (key, field)


def compose(overrides: list[str]) -> dict:
    """The resolved config ``harness.run`` would see for these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("config", overrides=overrides), resolve=True)


@pytest.mark.parametrize(
    "override,message",
    [
        (["method=moi", "method.beta=-1"], "method moi: beta must be a finite number >= 0, got -1"),
        (["method.name=mixture"], "unknown method 'mixture'; valid methods: standard, direct_mixture, moi"),
        (["method=moi", "method.support=all"], "method moi: support must be one of topk, full, got 'all'"),
        (["sampling.temperature=-0.5"], "sampling.temperature must be a number >= 0 (0 = greedy), got -0.5"),
        (["sampling.top_p=1.5"], "sampling.top_p must be in (0, 1], got 1.5"),
        (["sampling.top_p=0"], "sampling.top_p must be in (0, 1], got 0"),
        (["engine.name=tgi"], "unknown engine 'tgi'; valid engines: openai, transformers, vllm"),
        (["task.name=mmlu"], "unknown task 'mmlu'; valid tasks:"),
        (["task.limit=0"], "task.limit must be a positive integer or null, got 0"),
        (["sampling.max_tokens=-3"], "sampling.max_tokens must be a positive integer or null, got -3"),
    ],
)
def test_bad_values_are_named_with_the_valid_choices(override, message):
    from harness.errors import ConfigError
    from harness.pipeline.config import validate

    with pytest.raises(ConfigError) as err:
        validate(compose(override))
    assert message in str(err.value)


@pytest.mark.parametrize(
    "override,message",
    [
        (["method=moi", "method.beta=-1"], "error: method moi: beta must be a finite number >= 0, got -1"),
        (["task.data.path=/nonexistent/puzzles.jsonl"], "error: data file not found: /nonexistent/puzzles.jsonl"),
    ],
)
def test_bad_input_stops_the_cli_with_one_clear_line(tiny_model_path, tmp_path, override, message):
    keys = {item.split("=")[0] for item in override}
    args = [a for a in base_args(tiny_model_path, tmp_path) if a.split("=")[0] not in keys]
    result = harness_run(args + override, check=False)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [message], result.stderr


@pytest.mark.parametrize(
    "group,value,valid",
    [("model", "gpt5", "tiny"), ("task", "mmlu", "countdown"), ("method", "mixture", "moi"), ("engine", "tgi", "transformers")],
)
def test_unknown_config_names_list_the_valid_ones(group, value, valid):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as err:
        compose([f"{group}={value}"])
    assert f"Could not find '{group}/{value}'" in str(err.value)
    assert valid in err.value.options


@pytest.mark.parametrize(
    "engine", [["engine=transformers"], ["engine=vllm", "engine.enforce_eager=true", "engine.kv_cache_memory_bytes=67108864"]],
    ids=["transformers", "vllm"],
)
def test_multirun_reuses_the_engine(tiny_model_path, tmp_path, engine):
    result = harness_run(["-m", *base_args(tiny_model_path, tmp_path), *engine, "method=standard,moi",
                          "method.beta=0.5,2", "task.limit=2", "sampling.max_tokens=8"])
    assert (result.stdout + result.stderr).count("loading engine") == 1
    runs = sorted(p.parent.name for p in tmp_path.rglob("summary.json"))
    assert len(runs) == 3  # standard ignores beta: its two jobs share one run
    assert [r.split("_")[0] for r in runs] == ["moi-b0.5", "moi-b2", "standard"]


def test_a_run_grows_without_regenerating_what_it_has(tiny_model_path, tmp_path):
    """Defect 3: task.limit and task.n_samples were part of the run identity, so growing a run
    regenerated everything. Growing (3 problems, 1 sample) to (5, 2) generates only the 7 new
    samples, keeps a completion edited by hand, and the summary says what it covers."""
    args = base_args(tiny_model_path, tmp_path) + ["method=moi", "sampling.max_tokens=8"]
    harness_run(args + ["task.limit=3", "task.n_samples=1"])
    run = only_run(tmp_path)
    lines = (run / "samples.jsonl").read_text().splitlines()
    edited = dict(json.loads(lines[0]), completion="edited by hand")
    (run / "samples.jsonl").write_text("\n".join([json.dumps(edited), *lines[1:]]) + "\n")
    small = json.loads((run / "summary.json").read_text())
    grown = harness_run(args + ["task.limit=5", "task.n_samples=2"])
    assert "7 samples to generate" in grown.stdout + grown.stderr
    assert only_run(tmp_path) == run  # the same run directory
    records = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert len(records) == len({r["key"] for r in records}) == 10
    assert next(r for r in records if r["key"] == edited["key"])["completion"] == "edited by hand"
    summary = json.loads((run / "summary.json").read_text())
    assert (small["view"]["problems"], small["view"]["n_samples"], small["n"]) == (3, 1, 3)
    assert (summary["view"]["problems"], summary["view"]["n_samples"], summary["n"]) == (5, 2, 10)
    assert summary["view"]["problem_ids"][:3] == small["view"]["problem_ids"]
    assert summary["view"]["problem_ids_sha256"] != small["view"]["problem_ids_sha256"]
    # a smaller view of the grown run reads the stored samples and generates nothing
    again = harness_run(args + ["task.limit=2", "task.n_samples=1"])
    assert "samples to generate" not in again.stdout + again.stderr
    assert json.loads((run / "summary.json").read_text())["n"] == 2


def test_sample_records_stand_alone_and_regrade_without_the_data(tiny_model_path, tmp_path):
    data = tmp_path / "puzzles.jsonl"
    rows = [json.loads(x) for x in (REPO / "tasks/offline/countdown4_256.jsonl").read_text().splitlines()[:3]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [f"model.path={tiny_model_path}", f"task.data.path={data}", f"results_dir={tmp_path / 'runs'}", "progress=false",
            "sampling.max_tokens=8"]
    harness_run(args)
    run = only_run(tmp_path / "runs")
    record = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert record["schema"] == 2 and record["task"] == {"name": "countdown", "version": 1}
    assert set(record["gold"]) == {"nums", "target"} and len(record["data"]["sha256"]) == 64
    assert record["method"] == {"name": "standard"} and record["sampling"]["max_tokens"] == 8
    data.unlink()  # the data is gone: grading again needs only the run
    answer = f"<answer>{record['gold']['nums'][0]} + {record['gold']['nums'][1]}</answer>"
    lines = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    lines[0]["completion"] = answer
    (run / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    from harness.cli import grade

    assert grade.main([str(run), "progress=false"]) == 0
    regraded = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert regraded["verdict"] in ("wrong_numbers", "wrong") and regraded["extracted"] is not None


def test_the_context_caps_max_tokens_and_says_so_once(tiny_model_path, tmp_path):
    """prompt + completion never exceed model.max_model_len: each sample records the limit it got, one
    warning per run says so, and prompts with no room left are recorded as prompt_too_long."""
    def samples_of(results: Path) -> list[dict]:
        return [json.loads(line) for line in (only_run(results) / "samples.jsonl").read_text().splitlines()]

    common = base_args(tiny_model_path, tmp_path / "cut") + ["task.limit=3", "sampling.max_tokens=16"]
    cut = harness_run([*common, "model.max_model_len=137"])
    samples = samples_of(tmp_path / "cut")
    assert len(samples) == 3
    for s in samples:
        assert s["max_tokens_effective"] == min(16, 137 - s["prompt_tokens"]) < 16
        assert s["prompt_tokens"] + s["completion_tokens"] <= 137 and s["finish_reason"] in ("stop", "length")
    assert (cut.stdout + cut.stderr).count("cuts generation short") == 1
    assert json.loads((only_run(tmp_path / "cut") / "summary.json").read_text())["context_cut"] == 3

    lengths = sorted(s["prompt_tokens"] for s in samples)
    context = lengths[0] + 1  # the shortest prompt gets one token, the longer ones none
    common = base_args(tiny_model_path, tmp_path / "long") + ["task.limit=3", "sampling.max_tokens=16"]
    tight = harness_run([*common, f"model.max_model_len={context}"])
    samples = samples_of(tmp_path / "long")
    too_long = [s for s in samples if s["prompt_tokens"] >= context]
    assert too_long and len(too_long) < 3
    for s in too_long:
        assert (s["finish_reason"], s["verdict"], s["completion"], s["correct"]) == ("prompt_too_long", "prompt_too_long", "", False)
        assert s["max_tokens_effective"] == 0
    assert (tight.stdout + tight.stderr).count("leaves no room") == 1
    assert f"{len(too_long)} prompt_too_long" in tight.stdout
    from harness.cli import grade

    assert grade.main([str(only_run(tmp_path / "long")), "--no-progress"]) == 0  # re-grading keeps the verdict
    assert [s["verdict"] for s in samples_of(tmp_path / "long")] == [s["verdict"] for s in samples]

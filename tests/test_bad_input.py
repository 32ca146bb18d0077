"""Bad input of every kind, as a new user types it: exit code 2, one line on stderr that names the
bad value, no traceback, and the run directories already there left byte for byte as they were."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COUNTDOWN = "task.data.path=tasks/offline/countdown4_256.jsonl"


def command(module: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def read_only_folder(tmp_path: Path) -> str:
    """A folder this process cannot create files in: a mode-555 folder, or for root (whom modes do
    not stop) a path under /sys, where nobody can create anything."""
    if os.geteuid() == 0:
        return "/sys/moi-harness-results"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder)


@pytest.fixture(scope="module")
def existing(tiny_model_path, tmp_path_factory) -> tuple[Path, list[str]]:
    """A results folder with one complete run in it, and the settings that made it."""
    results = tmp_path_factory.mktemp("results")
    args = [f"model.path={tiny_model_path}", COUNTDOWN, f"results_dir={results}", "progress=false", "task.limit=2",
            "sampling.max_tokens=4"]
    made = command("harness.run", args)
    assert made.returncode == 0, made.stderr
    return results, args


def data_file(tmp_path: Path, name: str, rows: list) -> str:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def cases(tmp_path: Path, results: Path) -> list[tuple[str, list[str], str]]:
    """(command module, the arguments after the existing run's settings, what the one line must name)."""
    missing = data_file(tmp_path, "missing.jsonl", [{"nums": [1, 2, 3, 4], "target": 10}, {"nums": [5, 6, 7, 8]}])
    empty = data_file(tmp_path, "empty.jsonl", [])
    twice = data_file(tmp_path, "twice.jsonl", [{"id": "a", "nums": [1, 2, 3, 4], "target": 10},
                                                {"id": "b", "nums": [1, 2, 3, 4], "target": 9},
                                                {"id": "a", "nums": [1, 2, 3, 5], "target": 11}])
    not_json = data_file(tmp_path, "not_json.jsonl", [{"nums": [1, 2, 3, 4], "target": 10, "completion": "x"}, "{oops"])
    not_object = data_file(tmp_path, "not_object.jsonl", [[1, 2]])
    run = "harness.run"
    return [
        (run, ["method=mixture"], "unknown method=mixture; valid choices: direct_mixture, moi, soft_thinking, standard"),
        (run, ["method=moi", "method.bta=1"], "unknown key method.bta; did you mean method.beta?"),
        (run, ["task=mmlu"], "unknown task=mmlu; valid choices:"),
        (run, ["model=gpt5"], "unknown model=gpt5; valid choices:"),
        (run, ["engine=tgi"], "unknown engine=tgi; valid choices: openai, transformers, vllm"),
        (run, ["experiment=nope"], "unknown experiment=nope; valid choices:"),
        (run, ["task.limt=3"], "unknown key task.limt; did you mean task.limit?"),
        (run, ["method.beta=[1"], "cannot read the setting 'method.beta=[1'"),
        (run, ["-m", "method=moi", "method.beta=1,-2"], "beta must be a finite number >= 0, got -2"),
        (run, ["-m", "method=standard,mixture"], "unknown method=mixture"),
        (run, ["method=moi", "-m", "method.beta=0.5,nan"], "beta must be a finite number >= 0, got nan"),
        (run, ["method=moi", "method.beta=-1"], "method moi: beta must be a finite number >= 0, got -1"),
        (run, ["sampling.top_p=1.5"], "sampling.top_p must be in (0, 1], got 1.5"),
        (run, ["task.data.path=/nonexistent/puzzles.jsonl"], "data file not found: /nonexistent/puzzles.jsonl"),
        (run, [f"task.data.path={missing}"], f"{missing}:2"),
        (run, [f"task.data.path={empty}"], "no problems"),
        (run, [f"task.data.path={twice}"], "'a'"),
        (run, ["engine=openai", "engine.url=ftp://x"], "engine.url must be an http(s) URL"),
        (run, ["engine=openai", "engine.url=http://127.0.0.1:9/v1", "engine.max_retries=1"], "http://127.0.0.1:9/v1"),
        (run, [f"results_dir={read_only_folder(tmp_path)}"], "cannot write"),
        (run, ["-m", f"results_dir={read_only_folder(tmp_path)}", "method=standard,moi"], "cannot write"),
        ("harness.grade", ["task=countdown", f"file={not_json}"], f"{not_json}:2"),
        ("harness.grade", ["task=countdown", f"file={not_object}"], f"{not_object}:1"),
        ("harness.grade", ["task=countdwn", f"file={not_object}"], "unknown task"),
        ("harness.table", [str(tmp_path / "no-such-folder")], "no-such-folder"),
        ("harness.table", [str(results), "nope=1"], "unknown key nope"),
        ("harness.serve", ["serve.prot=1"], "unknown key serve.prot; did you mean serve.port?"),
        ("harness.serve", ["model=gpt5"], "unknown model=gpt5"),
    ]


def test_every_bad_input_is_one_line_exit_2_and_touches_no_run(existing, tmp_path):
    results, settings = existing
    before = snapshot(results)
    todo = cases(tmp_path, results)

    def attempt(case):
        module, args, _ = case
        base = settings if module == "harness.run" else []
        keys = {a.split("=")[0] for a in args}
        return command(module, [a for a in base if a.split("=")[0] not in keys] + args)

    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(attempt, todo))
    problems = []
    for (module, args, named), result in zip(todo, outcomes):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if result.returncode != 2 or len(lines) != 1 or named not in lines[0] or "Traceback" in result.stderr:
            problems.append(f"{module} {' '.join(args)}: exit {result.returncode}, stderr:\n{result.stderr[-2000:]}")
    assert not problems, "\n\n".join(problems)
    assert snapshot(results) == before


def test_a_full_disk_stops_the_run_in_one_line_and_the_run_resumes(tiny_model_path, tmp_path, monkeypatch, capsys):
    """The journal's file is swapped for /dev/full (a real ENOSPC from the kernel on every write):
    one line naming the file, exit 2; the same command later completes the run exactly."""
    from harness.cli.common import compose
    from harness.cli.run import run_job
    from harness.pipeline import runner
    from harness.storage import jsonl

    overrides = [f"model.path={tiny_model_path}", COUNTDOWN, f"results_dir={tmp_path}", "progress=false",
                 "task.limit=3", "sampling.max_tokens=4"]
    cfg = compose("config", overrides)
    opened = builtins.open

    def full_disk(path, mode="r", *args, **kwargs):
        if str(path).endswith("generations.jsonl") and "a" in mode:
            return opened("/dev/full", mode, *args, **kwargs)
        return opened(path, mode, *args, **kwargs)

    monkeypatch.setattr(jsonl, "open", full_disk, raising=False)
    try:
        with pytest.raises(SystemExit) as stopped:
            run_job(cfg)
        assert stopped.value.code == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading" not in line]
        assert len(lines) == 1 and "generations.jsonl: No space left on device" in lines[0], lines
        assert "run the same command again" in lines[0]
        monkeypatch.undo()
        [summary] = run_job(cfg)
        assert summary["n"] == 3 and summary["complete"]
    finally:
        runner.release_engine()


def test_ctrl_c_stops_in_one_line_keeps_what_was_written_and_the_run_resumes(tiny_model_path, tmp_path, monkeypatch,
                                                                              capsys):
    """Ctrl-C after the first completion: one line, exit 130, the completion kept; the same command then
    generates only the rest."""
    from harness.cli.common import compose
    from harness.cli.run import run_job
    from harness.engines.transformers_engine import TransformersEngine
    from harness.pipeline import runner

    cfg = compose("config", [f"model.path={tiny_model_path}", COUNTDOWN, f"results_dir={tmp_path}", "progress=false",
                             "task.limit=3", "sampling.max_tokens=4", "engine=transformers"])
    generate = TransformersEngine.generate
    asked = []

    def interrupted(self, requests):
        asked.append(len(requests))
        for i, pair in enumerate(generate(self, requests)):
            if i == 1 and len(asked) == 1:  # the first run only
                raise KeyboardInterrupt
            yield pair

    monkeypatch.setattr(TransformersEngine, "generate", interrupted)
    try:
        with pytest.raises(SystemExit) as stopped:
            run_job(cfg)
        assert stopped.value.code == 130
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading" not in line]
        assert len(lines) == 1 and lines[0].startswith("interrupted;") and "resume" in lines[0], lines
        [summary] = run_job(cfg)
        assert summary["n"] == 3 and summary["complete"] and asked == [3, 2]
    finally:
        runner.release_engine()


def test_a_users_last_line_without_its_newline_is_graded(tmp_path):
    """Users' files are read whole: only the harness's own journals drop a torn last line."""
    path = tmp_path / "completions.jsonl"
    path.write_text('{"nums": [1, 2, 3, 4], "target": 24, "completion": "<answer>1 * 2 * 3 * 4</answer>"}\n'
                    '{"nums": [1, 2, 3, 4], "target": 10, "completion": "<answer>1 + 2 + 3 + 4</answer>"}')
    graded = command("harness.grade", ["task=countdown", f"file={path}"])
    assert graded.returncode == 0, graded.stderr
    rows = [json.loads(line) for line in graded.stdout.splitlines() if line.startswith("{")]
    assert [(row["target"], row["verdict"]) for row in rows] == [(24, "correct"), (10, "correct")]

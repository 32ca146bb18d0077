"""Every command in README.md runs, bounded: a stale example fails here.

Each shell command of the README's bash blocks must match exactly one row of ``HOW``, and each row
at least one command, so a command added to the README without saying how it is checked fails
too. Runs use the tiny model, two problems and four tokens; runs of the paper's 32B models and
GPU-only targets are dry runs (their configs compose and their grids are planned); ``make``
targets run the commands they expand to (``make -n``), bounded the same way. The commands that
need a running server are sent to one in ``tests/test_server.py``, and the SLURM and multi-GPU commands are run
on the tiny model by the shards and SLURM tests (named here, and checked to exist).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from readme import commands

REPO = Path(__file__).resolve().parents[1]
BOUND = {"task.limit": "2", "sampling.max_tokens": "4", "progress": "false"}
SERVER_TESTS = REPO / "tests" / "test_server.py"
RESULTS = re.compile(r"results/(runs|demo|smoke|paper_runs)\b")  # where runs land: a temporary folder here

# (pattern the command starts with, how it is checked): "run" runs it bounded; "dry" as a dry run;
# "make" runs what the make target expands to; "server:<test>" is checked against a live server by
# that test of tests/test_server.py; "test:<file>::<test>" is run (the same command on the tiny model) by that
# test; "expand" (a GPU cluster's submission) is expanded by make -n, not run.
HOW = [
    (r"make demo$", "make"),
    (r"make test$", "skip: CI runs it (.ci/run)"),
    (r"moi-run task=countdown ", "run"),
    (r"moi-run -m method=standard,direct_mixture,moi ", "run"),
    (r"moi-table results/runs$", "run"),
    (r"moi-grade results/runs/", "run"),
    (r"moi-grade task=countdown file=my_completions.jsonl$", "run"),
    (r"moi-run model=qwq_32b ", "dry"),
    (r"make serve MODEL=tiny$", "make"),
    (r"moi-serve model=qwq_32b ", "dry"),
    (r"curl -s http://127.0.0.1:8000/v1/completions ", "server:test_the_readmes_requests_work_on_a_live_server"),
    (r"moi-run -m engine=openai ", "server:test_the_readmes_requests_work_on_a_live_server"),
    (r"make reproduce DRY_RUN=1$", "make"),
    (r"make reproduce$", "make"),
    (r"make reproduce-smoke$", "skip: the smoke pipeline end to end is tests/test_paper.py and tests/test_experiments.py"),
    (r"make table RUNS=results/paper_runs$", "make"),
    (r"make reproduce LAUNCHER=slurm SHARDS=8 PARTITION=gpu", "expand"),
    (r"make reproduce DRY_RUN=1 SHARDS=8$", "test:test_shards.py::test_make_reproduce_dry_run_with_8_shards_is_balanced_with_gpu_hours"),
    (r"moi-run experiment=paper_table1 model=qwq_32b dry_run=true shards=8 ", "dry"),
    (r"moi-run -m experiment=paper_table1 model=qwq_32b shards=4 .*submitit_local",
     "test:test_shards.py::test_shards_on_one_node_run_at_once_each_with_its_own_gpus"),
    (r"sudo scripts/slurm_local.sh start", "skip: .ci/run starts the cluster the slurm tests use this way"),
    (r"make reproduce-smoke LAUNCHER=slurm ",
     "test:test_slurm.py::test_make_reproduce_smoke_in_shards_on_slurm_equals_the_unsharded_run"),
    (r"moi-run -m experiment=smoke shards=2 shard=1 .*submitit_slurm", "test:test_slurm.py::"
     "test_a_shard_requeued_at_its_time_limit_then_cancelled_and_submitted_again_misses_and_repeats_nothing"),
    (r"moi-run -m method=standard,moi seed=0,1 .*cache_dir=/tmp/new-cache .*submitit_slurm",
     "test:test_slurm.py::test_jobs_that_need_the_same_caches_start_at_once_and_all_succeed"),
    (r"scripts/slurm_local.sh stop$", "skip: .ci/run stops the cluster this way"),
]


def how(command: str) -> str:
    found = [way for pattern, way in HOW if re.match(pattern, command)]
    assert len(found) == 1, f"README command {command!r} matches {len(found)} rows of HOW (add one)"
    return found[0]


def test_every_readme_command_is_covered_once_and_every_row_is_used():
    listed = commands()
    assert len(listed) >= 10
    for command in listed:
        how(command)
    for pattern, way in HOW:
        assert any(re.match(pattern, c) for c in listed), f"HOW row {pattern!r} matches no README command (stale)"
        if way.startswith("server:"):
            assert f"def {way.split(':', 1)[1]}(" in SERVER_TESTS.read_text()
        if way.startswith("test:"):
            file, name = way[5:].split("::")
            assert f"def {name}(" in (REPO / "tests" / file).read_text(), way


def with_settings(words: list[str], settings: dict[str, str]) -> list[str]:
    """The command's words with these key=value settings in place of its own."""
    return [w for w in words if w.split("=", 1)[0] not in settings] + [f"{k}={v}" for k, v in settings.items()]


def moi(words: list[str], tmp: Path, tiny: str, dry: bool) -> list[str]:
    """A README moi-* command made bounded: module, paths into ``tmp``, the tiny model."""
    name, args = words[0], words[1:]
    args = [RESULTS.sub(str(tmp / "runs"), a) for a in args]
    if name == "moi-run":
        if dry:  # one model of a sweep over the paper's models: the syntax is checked, tests/test_experiments plans them all
            args = [re.sub(r"^model=([^,]+),.*", r"model=\1", a) for a in args]
            args = with_settings(args, {"dry_run": "true"})
        else:
            settings = {**BOUND, "results_dir": str(tmp / "runs")}
            if not any(a.startswith(("model=", "experiment=")) for a in args):
                settings["model.path"] = tiny
            args = with_settings(args, settings)
    elif name == "moi-serve":
        args = with_settings(args, {"model.path": tiny, "serve.dry_run": "true"})
    elif name == "moi-grade":
        args = [_grade_target(a, tmp) for a in args]
    module = {"moi-run": "harness.run", "moi-serve": "harness.serve", "moi-grade": "harness.grade",
              "moi-table": "harness.table", "moi-paper": "harness.paper"}[name]
    return [sys.executable, "-m", module, *args]


def _grade_target(arg: str, tmp: Path) -> str:
    """A run folder the README abbreviates (``moi-b2_...``) as the one the runs made; the user's
    completions file as one written here."""
    if arg.endswith("..."):
        found = sorted(Path(arg[:-3]).parent.glob(Path(arg[:-3]).name + "*"))
        assert found, f"no run folder {arg}"
        return str(found[0])
    if arg == "file=my_completions.jsonl":
        path = tmp / "my_completions.jsonl"
        path.write_text('{"nums": [3, 5, 7, 11], "target": 24, "completion": "<answer>(11 - 7) * (5 + 3) - 8</answer>"}\n'
                        '{"nums": [1, 2, 3, 4], "target": 24, "completion": "<answer>1 * 2 * 3 * 4</answer>"}\n')
        return f"file={path}"
    return arg


def expand_make(words: list[str]) -> list[list[str]]:
    """The moi-* commands a make target runs (``make -n``), as word lists."""
    out = subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = []
    for line in out.stdout.replace("\\\n", " ").splitlines():  # a recipe line continued with a backslash
        parts = shlex.split(line)
        if parts and Path(parts[0]).name.startswith("moi-"):
            found.append([Path(parts[0]).name, *parts[1:]])
    assert found, f"{' '.join(words)} runs no moi-* command:\n{out.stdout}"
    return found


def is_dry(words: list[str]) -> bool:
    """Runs of the paper's models (32B and up) or GPU grids are planned, not run, here."""
    text = " ".join(words)
    return "dry_run=true" in text or bool(re.search(r"model=(qwq|nemotron|gemma|dapo)|experiment=paper", text))


def test_every_readme_command_runs(tiny_model_path, tmp_path):
    import time

    problems, done = [], set()
    for command in commands():
        way = how(command)
        if way.startswith(("skip:", "server:", "test:")):
            continue
        words = shlex.split(command)
        if way == "expand":
            assert any("submitit_slurm" in w for run in expand_make(words) for w in run), command
            continue
        if way == "make":
            runs = expand_make(words)
        else:
            runs = [words]
        for run in runs:
            dry = way == "dry" or is_dry(run)
            argv = moi(run, tmp_path, tiny_model_path, dry)
            if tuple(argv) in done:
                continue
            done.add(tuple(argv))
            start = time.perf_counter()
            result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
            print(f"{time.perf_counter() - start:6.1f} s  {shlex.join(argv[2:])[:150]}")
            if result.returncode != 0:
                problems.append(f"{command}\n  ran: {shlex.join(argv)}\n  exit {result.returncode}: {result.stderr[-1500:]}")
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("text,expected", [
    ("```bash\nmoi-run a=1 \\\n    b=2   # two\n```\n", ["moi-run a=1 b=2"]),
    ("```bash\ncurl -d '{\n  \"a\": 1}'\n```\n```python\nx = 1\n```\n", ["curl -d '{\n  \"a\": 1}'"]),
])
def test_commands_are_read_as_a_shell_reads_them(text, expected):
    assert commands(text) == expected

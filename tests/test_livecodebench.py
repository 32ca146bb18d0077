"""LiveCodeBench: data loading and decoding, prompts, extraction, grading of real offline problems
(stdin and functional), grading through the worker pool, pass@k."""

from __future__ import annotations

import base64
import json
import os
import pickle
import time
import zlib
from pathlib import Path

import pytest
import yaml
from harness.tasks import get_task
from harness.tasks import livecodebench as lcb

from harness.errors import DataError
from harness.pipeline.grading import grade_many
from harness.sandbox import SLOTS, UID_BASE
from harness.sandbox.process import _processes_of

REPO = Path(__file__).resolve().parents[1]
OFFLINE = "tasks/offline/lcb_v5_279.jsonl"


@pytest.fixture(scope="module")
def cfg() -> dict:
    config = yaml.safe_load((REPO / "configs/task/livecodebench.yaml").read_text())
    config["data"]["path"] = OFFLINE
    config["grader"] |= {"time_limit": 2, "memory_mb": 512, "timeout": 30}
    return config


@pytest.fixture(scope="module")
def problems(cfg) -> dict[str, dict]:
    loaded, _ = get_task("livecodebench").load(cfg)
    return {p["id"]: p for p in loaded}


def fenced(code: str) -> str:
    return f"Let me write it.\n\n```python\n{code}\n```\n"


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def test_offline_file_loads(cfg, problems):
    assert len(problems) == 279
    kinds = {p["tests"][0]["testtype"] for p in problems.values() if p["platform"] == "leetcode"}
    assert kinds == {"functional"} and all(p["fn_name"] for p in problems.values() if p["platform"] == "leetcode")
    assert problems["abc365_b"]["fn_name"] is None and problems["abc365_b"]["tests"][0]["testtype"] == "stdin"
    assert sum(p["id"].startswith("untitled-") for p in problems.values()) == 5  # rows without an id


def test_date_window_is_the_official_one(cfg):
    data = cfg["data"] | {"start_date": "2024-09-01", "end_date": "2024-10-01"}
    window, source = load_lcb(data)
    assert window and all("2024-09-01" <= p["contest_date"] < "2024-10-01T00:00:01" for p in window)
    assert source["start_date"] == "2024-09-01"
    assert lcb.in_window("2024-10-01T00:00:00", None, "2024-10-01")
    assert not lcb.in_window("2024-10-01T18:30:00", None, "2024-10-01")  # later that day: outside
    assert not lcb.in_window("", "2024-01-01", None)


def test_private_tests_round_trip():
    tests = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}] * 3
    encoded = lcb.encode_tests(tests)
    assert lcb.decode_tests(encoded) == tests
    assert lcb.decode_tests(json.dumps(tests)) == tests and lcb.decode_tests("") == []


def test_decoding_refuses_pickled_code():
    payload = base64.b64encode(zlib.compress(pickle.dumps(os.getcwd))).decode()
    with pytest.raises(pickle.UnpicklingError):
        lcb.decode_tests(payload)


def hub_row(question_id: str, date: str, functional: bool = False) -> dict:
    kind = "functional" if functional else "stdin"
    return {
        "question_title": question_id, "question_content": "Add.", "platform": "leetcode" if functional else "atcoder",
        "question_id": question_id, "contest_id": "c1", "contest_date": date, "difficulty": "easy",
        "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        " if functional else "",
        "public_test_cases": json.dumps([{"input": "1\n2", "output": "3", "testtype": kind}]),
        "private_test_cases": lcb.encode_tests([{"input": "5\n6", "output": "11", "testtype": kind}]),
        "metadata": json.dumps({"func_name": "add"} if functional else {}),
    }


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """The release files in a hub-like cache folder; downloads are served from it."""
    import huggingface_hub

    snapshot = tmp_path / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    files = {"test.jsonl": [hub_row("p1", "2023-05-01T00:00:00"), hub_row("p2", "2023-09-01T00:00:00", True)],
             "test2.jsonl": [hub_row("p3", "2024-02-01T00:00:00")]}
    for name, rows in files.items():
        (snapshot / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    asked = []

    def download(repo_id, filename, repo_type=None, revision=None):
        asked.append((repo_id, filename, repo_type, revision))
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return asked


def test_hub_release_files_are_read_directly(fake_hub):
    data = {"hub": lcb.HUB_ID, "release": "release_v1", "revision": "main"}
    problems, source = load_lcb(data)
    assert [p["id"] for p in problems] == ["p1", "p2"]
    assert fake_hub == [(lcb.HUB_ID, "test.jsonl", "dataset", "main")]
    assert source["resolved_revision"] == "ab" * 20 and source["files"] == ["test.jsonl"]
    p2 = problems[1]
    assert p2["fn_name"] == "add" and [t["output"] for t in p2["tests"]] == ["3", "11"]  # public, then private
    assert [p["id"] for p in load_lcb(data | {"release": "release_v2"})[0]] == ["p1", "p2", "p3"]
    assert [p["id"] for p in load_lcb(data | {"release": "v2"})[0]] == ["p3"]
    windowed = load_lcb(data | {"release": "release_v2", "start_date": "2023-06-01", "end_date": "2024-01-31"})
    assert [p["id"] for p in windowed[0]] == ["p2"]


def test_hub_problems_grade_against_private_tests(fake_hub, cfg):
    problems, _ = load_lcb({"release": "release_v1"})
    task = get_task("livecodebench")
    right = "class Solution:\n    def add(self, a, b):\n        return a + b"
    public_only = "class Solution:\n    def add(self, a, b):\n        return 3"
    assert task.grade(problems[1], fenced(right), {}, cfg).verdict == "passed"
    grade = task.grade(problems[1], fenced(public_only), {}, cfg)
    assert grade.verdict == "wrong_answer" and grade.details["first_failure"] == 1


def test_unknown_release_and_offline_hub_give_advice(monkeypatch):
    import huggingface_hub

    with pytest.raises(DataError, match="unknown LiveCodeBench release"):
        load_lcb({"release": "release_v9"})

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(DataError, match="lcb_v5_279.jsonl"):
        load_lcb({"release": "release_v2"})


def test_rows_without_tests_are_refused():
    with pytest.raises(DataError):
        lcb.problem_from_row({"question_id": "x", "tests": []})


# ---------------------------------------------------------------------------------------------
# Prompts and extraction
# ---------------------------------------------------------------------------------------------
def test_stdin_prompt_format():
    problem = {"question": "Print 1.", "starter_code": ""}
    expected = (
        "### Question:\nPrint 1.\n\n### Format: " + lcb.FORMAT_WITHOUT_STARTER_CODE
        + "\n```python\n# YOUR CODE HERE\n```\n\n### Answer: (use the provided format with backticks)\n\n"
    )
    assert lcb.question_text(problem) == expected
    assert lcb.build_prompt(problem, "user") == [{"role": "user", "content": lcb.SYSTEM_MESSAGE + "\n\n" + expected}]
    assert lcb.build_prompt(problem, "chat") == [
        {"role": "system", "content": lcb.SYSTEM_MESSAGE}, {"role": "user", "content": expected}
    ]
    with pytest.raises(ValueError):
        lcb.build_prompt(problem, "fancy")


def test_starter_code_prompt_format(problems, cfg):
    problem = problems["3528"]
    messages, meta = get_task("livecodebench").prompt(problem, 0, cfg)
    text = messages[0]["content"]
    assert meta == {} and len(messages) == 1 and text.startswith(lcb.SYSTEM_MESSAGE + "\n\n### Question:\n")
    assert f"### Format: {lcb.FORMAT_WITH_STARTER_CODE}\n```python\n{problem['starter_code']}\n```\n\n" in text
    assert text.endswith("### Answer: (use the provided format with backticks)\n\n")
    assert "Starts with" not in text and "stdin" not in text


def test_extract_last_complete_code_block():
    text = "x\n```python\nfirst()\n```\nthen\n```py\nsecond()\nthird()\n```\nbye"
    assert lcb.extract_code(text) == "second()\nthird()"
    assert lcb.extract_code("```python\nonly()\n```\nand a truncated\n```python\nunfinished(") == "only()"
    assert lcb.extract_code("no code here") is None
    assert lcb.extract_code("```\nplain()\n```") == "plain()"


def test_code_inside_unfinished_thinking_is_not_graded(problems, cfg):
    meta = {"thinking": {"start": "<think>", "end": "</think>", "opened": True}}
    task = get_task("livecodebench")
    code = "n = int(input())\na = list(map(int, input().split()))\nprint(sorted(range(n), key=lambda i: -a[i])[1] + 1)"
    thinking_only = "maybe:\n" + fenced(code)
    assert task.grade(problems["abc365_b"], thinking_only, meta, cfg).verdict == "no_code"
    assert task.grade(problems["abc365_b"], thinking_only + "</think>\n" + fenced(code), meta, cfg).verdict == "passed"
    assert task.grade(problems["abc365_b"], "I give up.", {}, cfg).verdict == "no_code"


# ---------------------------------------------------------------------------------------------
# Real problems from the offline file
# ---------------------------------------------------------------------------------------------
SECOND_BEST = "n = int(input())\na = list(map(int, input().split()))\nprint(sorted(range(n), key=lambda i: -a[i])[1] + 1)"
LARGEST = "n = int(input())\na = list(map(int, input().split()))\nprint(a.index(max(a)) + 1)"
LEAP = "y = int(input())\nprint(366 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 365)"
LEAP_WRONG = "y = int(input())\nprint(366 if y % 4 == 0 else 365)"
MAX_SCORE = """
class Solution:
    def findMaximumScore(self, nums: List[int]) -> int:
        best = total = 0
        for x in nums[:-1]:
            best = max(best, x)
            total += best
        return total
"""
MAX_SCORE_WRONG = MAX_SCORE.replace("total += best", "total += x")
SHORTEST = """
class Solution:
    def shortestDistanceAfterQueries(self, n: int, queries: List[List[int]]) -> List[int]:
        graph = [[i + 1] for i in range(n - 1)] + [[]]
        answers = []
        for u, v in queries:
            graph[u].append(v)
            dist = [-1] * n
            dist[0] = 0
            queue = deque([0])
            while queue:
                x = queue.popleft()
                for y in graph[x]:
                    if dist[y] < 0:
                        dist[y] = dist[x] + 1
                        queue.append(y)
            answers.append(dist[-1])
        return answers
"""
SHORTEST_WRONG = SHORTEST.replace("graph[u].append(v)", "pass")


@pytest.mark.parametrize(
    ("problem_id", "right", "wrong", "failing_test"),
    [("abc365_b", SECOND_BEST, LARGEST, 0), ("abc365_a", LEAP, LEAP_WRONG, 2),
     ("3528", MAX_SCORE, MAX_SCORE_WRONG, 0), ("3517", SHORTEST, SHORTEST_WRONG, 0)],
)
def test_real_problems_right_passes_wrong_fails(problems, cfg, problem_id, right, wrong, failing_test):
    task, problem = get_task("livecodebench"), problems[problem_id]
    grade = task.grade(problem, fenced(right), {}, cfg)
    assert (grade.correct, grade.verdict, grade.extracted) == (True, "passed", right)
    assert grade.details["passed_tests"] == grade.details["total_tests"] == len(problem["tests"])
    grade = task.grade(problem, fenced(wrong), {}, cfg)
    assert (grade.correct, grade.verdict, grade.details["first_failure"]) == (False, "wrong_answer", failing_test)
    assert grade.details["message"]


def test_float_outputs_within_tolerance(problems, cfg):
    problem = problems["abc385_f"]  # outputs like 17.142857142857142350
    table = {t["input"]: repr(float(t["output"])) for t in problem["tests"]}
    code = f"import sys\nprint({table!r}[sys.stdin.read()])"
    task = get_task("livecodebench")
    assert task.grade(problem, fenced(code), {}, cfg).verdict == "passed"
    exact = cfg | {"grader": cfg["grader"] | {"float_tolerance": 0}}
    assert task.grade(problem, fenced(code), {}, exact).verdict == "wrong_answer"  # the official exact rule


def test_verdicts_through_the_grading_pool(problems, cfg):
    """Samples graded in parallel by the pool, adversarial ones included: every one comes back
    with its verdict, nothing hangs, and no sandboxed process is left."""
    samples = {
        "passed": ("abc365_b", SECOND_BEST),
        "wrong_answer": ("3528", MAX_SCORE_WRONG),
        "time_limit": ("abc365_b", "while True:\n    pass"),
        # 100 MB blocks: the address-space limit comes within a few dozen steps, long before any time limit
        "memory_limit": ("abc365_b", "x = []\nwhile True:\n    x.append(bytearray(10**8))"),
        "runtime_error": ("abc365_b", "import os\nos.kill(os.getppid(), 9)"),
        "syntax_error": ("3528", "class Solution:\n    def findMaximumScore(self, nums:\n"),
    }
    items = [("livecodebench", cfg, problems[pid], fenced(code), {}) for pid, code in samples.values()]
    grades = grade_many(items, workers=2, timeout=cfg["grader"]["timeout"])
    assert [g["verdict"] for g in grades] == list(samples)


def test_a_sample_over_its_time_budget_is_cut_not_killed(problems, cfg):
    slow = cfg | {"grader": cfg["grader"] | {"timeout": 4, "time_limit": 1}}
    problem = problems["abc365_a"] | {"tests": problems["abc365_a"]["tests"] * 3}  # 12 tests of ~0.7 s
    code = "import time\ntime.sleep(0.7)\n" + LEAP
    [grade] = grade_many([("livecodebench", slow, problem, fenced(code), {})], workers=1, timeout=4)
    assert grade["verdict"] == "time_limit" and "budget" in grade["details"]["message"]


def test_a_grader_killed_by_the_pool_leaves_no_program_behind(problems, cfg):
    hang = "import time\ntime.sleep(60)"
    long_budget = cfg | {"grader": cfg["grader"] | {"time_limit": 50, "timeout": 100}}
    [grade] = grade_many([("livecodebench", long_budget, problems["abc365_b"], fenced(hang), {})], workers=1, timeout=1.5)
    assert grade["verdict"] == "timeout"
    for _ in range(50):  # the death signal is asynchronous
        if not orphaned_programs():
            break
        time.sleep(0.05)
    assert orphaned_programs() == []


def orphaned_programs() -> list[int]:
    """Sandboxed processes whose grader is gone (reparented to init)."""
    orphans = []
    for pid, _ in (p for uid in range(UID_BASE, UID_BASE + SLOTS) for p in _processes_of(uid)):
        try:
            with open(f"/proc/{pid}/status") as handle:
                if next(line for line in handle if line.startswith("PPid:")).split()[1] == "1":
                    orphans.append(pid)
        except (OSError, StopIteration):
            continue
    return orphans


def load_lcb(data: dict):
    return get_task("livecodebench").load({"data": data})


def test_grade_cli_looks_problems_up_by_id(tmp_path, capsys):
    from harness.cli import grade

    lines = [
        {"id": "abc365_b", "completion": "```python\nn=int(input())\na=list(map(int,input().split()))\n"
                                          "print(a.index(sorted(a)[-2])+1)\n```"},
        {"id": "abc365_b", "completion": "```python\nprint(1)\n```"},
    ]
    path = tmp_path / "hand.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert grade.main(["--task", "livecodebench", str(path), "--data", "tasks/offline/lcb_v5_279.jsonl",
                       "--no-progress"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(o["id"], o["verdict"]) for o in out] == [("abc365_b", "passed"), ("abc365_b", "wrong_answer")]

"""Grading throughput of LiveCodeBench on the offline file, with the default worker count.

    python scripts/bench_grading.py [--path tasks/offline/lcb_v5_279.jsonl] [--workers N] [--limit N]

Each problem gets a correct program built from its own tests (a table from each test input to its
expected output: every test runs, in its own sandboxed process) and a wrong one (it fails at the
first test). Both go through the GradingPool as the runner uses it; the table reports tests per
second and checks every correct program passed and every wrong one failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.tasks import get_task  # noqa: E402

from harness.pipeline.grading import GradingPool  # noqa: E402
from harness.sandbox import layers  # noqa: E402

STDIN_TEMPLATE = "import sys\nANSWERS = {table!r}\nsys.stdout.write(ANSWERS[sys.stdin.read()])\n"
FUNCTIONAL_TEMPLATE = (
    "import json\nANSWERS = {table!r}\n\nclass Solution:\n    def {name}(self, *args):\n"
    "        return json.loads(ANSWERS[json.dumps(list(args))])\n"
)


def arguments_key(test_input: str) -> str:
    """How the functional table is keyed: the JSON of the parsed argument list."""
    return json.dumps([json.loads(line) for line in test_input.split("\n") if line.strip()])


def lookup_program(problem: dict) -> str:
    """A program that answers every test of ``problem`` correctly, by table lookup."""
    tests = problem["tests"]
    if tests[0]["testtype"] == "functional":
        table = {arguments_key(t["input"]): t["output"] for t in tests}
        return FUNCTIONAL_TEMPLATE.format(table=table, name=problem["fn_name"])
    return STDIN_TEMPLATE.format(table={t["input"]: t["output"] for t in tests})


def wrong_program(problem: dict) -> str:
    """A program whose answer to the first test is wrong."""
    if problem["tests"][0]["testtype"] == "functional":
        return f"class Solution:\n    def {problem['fn_name']}(self, *args):\n        return 'not the answer'\n"
    return "print('not the answer')\n"


def fenced(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}```\n"


def grade_all(task_cfg: dict, problems: list[dict], programs: list[str], workers: int) -> tuple[list[dict], float]:
    timeout = float(task_cfg["grader"]["timeout"])
    start = time.monotonic()
    grades: list[dict] = [{}] * len(problems)
    with GradingPool(workers, timeout) as pool:
        for index, (problem, code) in enumerate(zip(problems, programs)):
            pool.submit(index, "livecodebench", task_cfg, problem, fenced(code), {})
        for index, grade in pool.drain():
            grades[index] = grade
    return grades, time.monotonic() - start


def main() -> None:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="tasks/offline/lcb_v5_279.jsonl")
    parser.add_argument("--workers", type=int, default=None, help="default: grading.workers of configs/config.yaml")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    workers = args.workers or int(yaml.safe_load((root / "configs/config.yaml").read_text())["grading"]["workers"])
    task_cfg = yaml.safe_load((root / "configs/task/livecodebench.yaml").read_text())
    task_cfg["data"]["path"] = args.path
    problems, _ = get_task("livecodebench").load(task_cfg)
    problems = problems[: args.limit] if args.limit else problems
    found = layers()
    print(f"sandbox: python={found.python} setuid={found.setuid} netns={found.netns} "
          f"mountns={found.mountns} seccomp={found.seccomp}; workers={workers}")
    rows = []
    for label, make, expect in (("correct", lookup_program, True), ("wrong", wrong_program, False)):
        grades, seconds = grade_all(task_cfg, problems, [make(p) for p in problems], workers)
        tests = sum(g["details"].get("passed_tests", 0) + (g["details"].get("first_failure") is not None) for g in grades)
        ok = sum(bool(g["correct"]) == expect for g in grades)
        verdicts = Counter(g["verdict"] for g in grades)
        rows.append((label, len(problems), tests, seconds, ok, dict(verdicts)))
    print(f"\n{'programs':9} {'samples':>7} {'tests run':>9} {'seconds':>8} {'tests/s':>8} {'samples/s':>9}  as expected  verdicts")
    for label, n, tests, seconds, ok, verdicts in rows:
        print(f"{label:9} {n:7d} {tests:9d} {seconds:8.1f} {tests / seconds:8.1f} {n / seconds:9.1f}  {ok:4d}/{n:<6d} {verdicts}")
    if any(ok != n for _, n, _, _, ok, _ in rows):
        sys.exit("error: some programs were not graded as expected")


if __name__ == "__main__":
    main()

"""CountDown4 grading on real puzzles: brute-forced solutions pass, perturbed ones fail, and
adversarial answers are rejected quickly."""

from __future__ import annotations

import itertools
import json
import time
from fractions import Fraction

import pytest
from harness.tasks import get_task
from harness.tasks.countdown import PROMPT, evaluate, extract_answer, score
from harness.tasks.data import PACKAGE_PARENT as REPO_ROOT

PUZZLES = [json.loads(line) for line in (REPO_ROOT / "tasks/offline/countdown4_256.jsonl").read_text().splitlines()[:40]]


def solve(nums: list[int], target: int) -> str | None:
    """Brute force: an expression using every number once that equals the target."""
    def exprs(items):
        if len(items) == 1:
            yield str(items[0][0]), Fraction(items[0][1])
            return
        for i in range(1, len(items)):
            for left in itertools.combinations(range(len(items)), i):
                lhs = [items[j] for j in left]
                rhs = [items[j] for j in range(len(items)) if j not in left]
                for ltxt, lval in exprs(lhs):
                    for rtxt, rval in exprs(rhs):
                        yield f"({ltxt} + {rtxt})", lval + rval
                        yield f"({ltxt} - {rtxt})", lval - rval
                        yield f"({ltxt} * {rtxt})", lval * rval
                        if rval != 0:
                            yield f"({ltxt} / {rtxt})", lval / rval

    for text, value in exprs([(n, n) for n in nums]):
        if value == target:
            return text
    return None


@pytest.mark.parametrize("puzzle", PUZZLES[:25], ids=lambda p: str(p["hf_row"]))
def test_brute_force_solutions_pass_and_perturbed_fail(puzzle):
    nums, target = puzzle["nums"], puzzle["target"]
    solution = solve(nums, target)
    assert solution is not None, "every offline puzzle is solvable"
    completion = f"<think>let me try</think>\n<answer>{solution}</answer>"
    grade = score(extract_answer(completion), nums, target)
    assert grade.correct and grade.verdict == "correct" and grade.details["format_ok"]
    assert score(f"{solution} = {target}", nums, target).correct  # the left side of '=' is graded
    wrong_target = score(solution, nums, target + 1)
    assert not wrong_target.correct and wrong_target.verdict == "wrong"
    missing = score(f"{solution} - {nums[0]} + {nums[0]}", nums, target)
    assert not missing.correct and missing.verdict == "wrong_numbers"
    first = str(nums[0])
    other = solution.replace(first, str(nums[0] + 1), 1)
    assert not score(other, nums, target).correct


def test_task_grader_uses_the_last_answer_and_boxed_overrides():
    task = get_task("countdown")
    problem = {"id": "p", "nums": [1, 2, 3, 4], "target": 10}
    assert task.grade(problem, "<answer>1+2+3+4</answer>", {}, {}).correct
    assert not task.grade(problem, "<answer>1+2+3+4</answer> no wait <answer>1*2*3*4</answer>", {}, {}).correct
    assert task.grade(problem, "<answer>1*2*3*4</answer> ... <answer>(1+2+3)+4</answer>", {}, {}).correct
    assert task.grade(problem, "<answer>1*2*3*4</answer> so \\boxed{4+3+2+1}", {}, {}).correct
    assert not task.grade(problem, "<answer>4+3+2+1</answer> \\boxed{4*3*2*1}", {}, {}).correct
    no_answer = task.grade(problem, "I think it is 1+2+3+4", {}, {})
    assert not no_answer.correct and no_answer.verdict == "no_answer" and not no_answer.details["format_ok"]
    assert task.grade(problem, "<answer>(1 + 2) \\times 3 + 4 / 4 * 1</answer>", {}, {}).verdict == "wrong_numbers"
    assert task.grade(problem, "<answer>4 \\times 2 + 3 - 1</answer>", {}, {}).correct


@pytest.mark.parametrize(
    "answer,verdict",
    [
        ("9**9**9**9", "invalid_expression"),
        ("2**10000000", "invalid_expression"),
        ("1/0", "invalid_expression"),
        ("(1+2+3)/(4-4)", "invalid_expression"),
        ("__import__('os').system('echo hi')", "invalid_expression"),
        ("abs(1)+2+3+4", "invalid_expression"),
        ("x + 1 + 2 + 3", "invalid_expression"),
        ("1" * 1000, "invalid_expression"),
        ("10" + "0" * 1000 + " - 1 - 2 - 3", "invalid_expression"),
        ("(" * 500 + "1" + ")" * 500, "invalid_expression"),
        ("1.5 + 2 + 3 + 4", "invalid_expression"),
        ("[1, 2, 3, 4]", "invalid_expression"),
        ("lambda: 1", "invalid_expression"),
        ("1 if 2 else 3", "invalid_expression"),
        ("1 // 2 + 3 + 4", "invalid_expression"),
        ("True + 2 + 3 + 4", "invalid_expression"),
        ("", "no_answer"),
    ],
)
def test_adversarial_answers_are_rejected_quickly(answer, verdict):
    start = time.perf_counter()
    grade = score(answer, [1, 2, 3, 4], 10)
    assert time.perf_counter() - start < 0.5
    assert not grade.correct and grade.verdict == verdict


def test_exact_fractions():
    value, used = evaluate("(1 / 3) * 3 + 9")
    assert value == 10 and sorted(used) == [1, 3, 3, 9]
    assert score("8 / (3 - 8 / 3)", [8, 3, 8, 3], 24).correct  # needs exact arithmetic


def test_prompt_is_tinyzero():
    task = get_task("countdown")
    messages, meta = task.prompt({"id": "1", "nums": [83, 78, 1, 39], "target": 82}, 0, {})
    assert meta == {}
    assert messages == [{"role": "user", "content": PROMPT.format(nums=[83, 78, 1, 39], target=82)}]
    assert messages[0]["content"].startswith("Using the numbers [83, 78, 1, 39], create an equation that equals 82.")

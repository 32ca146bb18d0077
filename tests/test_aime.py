"""AIME: data, the paper's prompt (and its backspace quirk), and the math-verify grader on a table of
realistic completions with the known traps."""

from __future__ import annotations

import threading

import pytest
from harness.tasks import get_task
from harness.tasks.aime import PROMPT, REFERENCE_PROMPT, last_boxed

OFFLINE = {"data": {"path": "tasks/offline/aime24.jsonl"}, "grader": {"math_verify_timeout": 5}}
QWQ = {"thinking": {"start": "<think>", "end": "</think>", "opened": True}}  # the template opened <think>
NEMOTRON = {"thinking": {"start": "<think>", "end": "</think>", "opened": False}}  # the model opens it

# (name, completion, meta, gold, verdict, extracted)
CASES = [
    ("boxed", "Summing the cases gives $4 + 29 = 33$, so the answer is $\\boxed{33}$.", {}, "33", "correct", "33"),
    ("leading zero in the answer", "Therefore $m+n = \\boxed{033}$.", {}, "33", "correct", "033"),
    ("leading zero in the gold", "The answer is \\boxed{33}.", {}, "033", "correct", "33"),
    ("several boxed: the last wins", "First guess \\boxed{12}. Rechecking the casework gives \\boxed{33}.", {}, "33", "correct", "33"),
    ("a wrong answer after a right one", "So \\boxed{33}. Wait, I double counted: \\boxed{34}.", {}, "33", "wrong", "34"),
    ("answer only inside unclosed thinking", "Let me compute... so the answer is \\boxed{33}. Let me verify", QWQ, "33", "no_answer", None),
    ("right inside thinking, wrong after", "...so \\boxed{33}.\n</think>\n\nThe answer is \\boxed{34}.", QWQ, "33", "wrong", "34"),
    ("wrong inside thinking, right after", "Hmm, \\boxed{34}? No.\n</think>\n\nThus the answer is \\boxed{33}.", QWQ, "33", "correct", "33"),
    ("model-opened thinking, then answer", "<think>\nmaybe \\boxed{12}\n</think>\n\n**Final answer:** \\boxed{33}", NEMOTRON, "33", "correct", "33"),
    ("model-opened thinking never closed", "<think>\nso \\boxed{33}, but let me double-check the", NEMOTRON, "33", "no_answer", None),
    ("fraction equal to the integer", "Hence the count is $\\boxed{\\frac{66}{2}}$.", {}, "33", "correct", "\\frac{66}{2}"),
    ("fraction not an integer", "Hence $\\boxed{\\dfrac{67}{2}}$.", {}, "33", "wrong", "\\dfrac{67}{2}"),
    ("final answer sentence, no box", "The final answer is 33. I hope it is correct.", {}, "33", "correct", "33"),
    ("answer label, no box", "**Answer:** $33$", {}, "33", "correct", "33"),
    ("answer then an unrelated number", "The answer is 33. Checking took 5 minutes.", {}, "33", "correct", "33"),
    ("no answer", "I could not finish this problem in time.", {}, "33", "no_answer", None),
    ("unreadable LaTeX, no box", "Then we get $\\frac{$ and the rest is", {}, "33", "no_answer", None),
    ("empty completion", "", {}, "33", "no_answer", None),
    ("empty box", "So the answer is \\boxed{}.", {}, "33", "no_answer", None),
    ("equation in the box", "\\boxed{m+n=33}", {}, "33", "correct", "m+n=33"),
    ("degrees", "the angle measures $\\boxed{33^\\circ}$", {}, "33", "correct", "33^\\circ"),
    ("text in the box", "\\boxed{\\text{33}}", {}, "33", "correct", "\\text{33}"),
    ("words in the box", "\\boxed{\\text{no solution}}", {}, "33", "wrong", "\\text{no solution}"),
    ("fbox", "The minimum is \\fbox{33}.", {}, "33", "correct", "33"),
    ("a longer number", "\\boxed{330}", {}, "33", "wrong", "330"),
    ("zero", "The remainder is $\\boxed{ 0 }$.", {}, "0", "correct", "0"),
    ("the reference prompt's backspace copied", "the answer is \x08oxed{33}", {}, "33", "correct", "33"),
]


@pytest.mark.parametrize(("name", "completion", "meta", "gold", "verdict", "extracted"), CASES, ids=[c[0] for c in CASES])
def test_grader(name, completion, meta, gold, verdict, extracted):
    grade = get_task("aime").grade({"id": "x", "problem": "?", "answer": gold}, completion, meta, OFFLINE)
    assert (grade.verdict, grade.extracted, grade.correct) == (verdict, extracted, verdict == "correct")


def test_offline_data_and_ids():
    problems, source = get_task("aime").load(OFFLINE)
    assert len(problems) == 30 and source["kind"] == "file" and len(source["sha256"]) == 64
    assert [p["id"] for p in problems] == [str(i) for i in range(60, 90)]
    assert problems[0]["answer"] == "204" and all(p["answer"].isdigit() for p in problems)


def test_other_columns_by_config(tmp_path):
    """Sets with other column names (e.g. Maxwell-Jia/AIME_2024's ID/Problem/Answer) by ``fields``."""
    data = tmp_path / "aime.jsonl"
    data.write_text('{"ID": "2024-II-4", "Problem": "Find x.", "Answer": 33}\n')
    cfg = {"data": {"path": str(data), "fields": {"id": "ID", "problem": "Problem", "answer": "Answer"}}}
    problems, _ = get_task("aime24").load(cfg)
    assert problems == [{"id": "2024-II-4", "problem": "Find x.", "answer": "33"}]


def test_prompt_and_reference_backspace():
    problem = {"id": "1", "problem": "Find $\\binom{4}{2}$ in {braces}.", "answer": "6"}
    [message], meta = get_task("aime").prompt(problem, 0, {})
    assert meta == {} and message["role"] == "user"
    assert message["content"] == (
        "Question: Find $\\binom{4}{2}$ in {braces}.\n\n"
        "Please reason step by step, and put your final answer within \\boxed{}."
    )
    [message], _ = get_task("aime").prompt(problem, 0, {"prompt": {"reference_backspace": True}})
    assert message["content"].endswith("within \x08oxed{}.")
    assert "\\binom" in message["content"]  # the problem's own "\b" is untouched
    assert REFERENCE_PROMPT != PROMPT and "\b" not in PROMPT


def test_last_boxed_balances_braces():
    assert last_boxed("\\boxed{\\frac{1}{2}} and \\boxed{\\sqrt{3}}") == "\\sqrt{3}"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("no box") is None


def test_math_verify_timeout_in_process():
    """Where math-verify's own alarm works (a main thread), a slow comparison is a timeout."""
    cfg = {"grader": {"math_verify_timeout": 1}}
    grade = get_task("aime").grade({"id": "x", "problem": "?", "answer": "33"}, "\\boxed{9^{9^{9}}}", {}, cfg)
    assert (grade.verdict, grade.correct, grade.extracted) == ("timeout", False, "9^{9^{9}}")


def test_grades_outside_the_main_thread():
    """math-verify's signal alarm fails outside a main thread: the grader then runs without it."""
    results = []
    problem = {"id": "x", "problem": "?", "answer": "33"}
    thread = threading.Thread(target=lambda: results.append(get_task("aime").grade(problem, "\\boxed{33}", {}, OFFLINE)))
    thread.start()
    thread.join(30)
    assert results and results[0].verdict == "correct"


def test_aime_sets_are_their_own_tasks():
    for name in ("aime24", "aime25"):
        task = get_task(name)
        assert task.name == name
        assert task.grade({"id": "x", "problem": "?", "answer": "070"}, "\\boxed{70}", {}, {}).correct

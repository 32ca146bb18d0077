"""A completion that makes math-verify hang is cut off by the grading pool's hard timeout, within
the limit, graded a timeout, and grading goes on."""

from __future__ import annotations

import time

from harness.pipeline.grading import GradingPool

# math-verify's own (signal) timeouts off: only the pool's hard timeout can stop it.
CFG = {"grader": {"math_verify_timeout": None}}
PROBLEM = {"id": "x", "problem": "?", "answer": "33"}
SLOW = "The answer is $\\boxed{9^{9^{9}}}$."  # sympy tries to compare a 370-million-digit power
HARD_TIMEOUT = 3.0


def test_pathological_input_is_cut_off_and_grading_goes_on():
    with GradingPool(workers=2, timeout=HARD_TIMEOUT) as pool:
        for key in ("warm-1", "warm-2"):  # start both workers (and their imports) first
            pool.submit(key, "aime", CFG, PROBLEM, "\\boxed{33}", {})
        assert all(grade["verdict"] == "correct" for _, grade in pool.drain())
        start = time.monotonic()
        pool.submit("slow", "aime", CFG, PROBLEM, SLOW, {})
        pool.submit("right", "aime", CFG, PROBLEM, "\\boxed{33}", {})
        pool.submit("wrong", "aime", CFG, PROBLEM, "\\boxed{34}", {})
        grades, arrived = {}, {}
        while pool.pending:
            for key, grade in pool.poll(timeout=0.5):
                grades[key], arrived[key] = grade, time.monotonic() - start
        assert grades["slow"]["verdict"] == "timeout" and not grades["slow"]["correct"]
        assert HARD_TIMEOUT <= arrived["slow"] < HARD_TIMEOUT + 2.0
        assert grades["right"]["verdict"] == "correct" and grades["wrong"]["verdict"] == "wrong"
        # the killed worker is replaced: later items are still graded
        pool.submit("after", "aime", CFG, PROBLEM, "The final answer is 33.", {})
        pool.submit("gpqa", "gpqa_diamond", {}, {"id": "synth"}, "Answer: (B)", {"permutation": [1, 0, 2, 3]})
        late = dict(pool.drain())
    assert late["after"]["verdict"] == "correct"
    assert late["gpqa"]["verdict"] == "correct"

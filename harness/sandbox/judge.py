"""Judging a program against tests: run each test in order, stop at the first failure, and compare
outputs as the official LiveCodeBench runner does (with a float tolerance)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from decimal import Decimal, InvalidOperation

from harness.sandbox.process import Limits, run_program, shorten


@dataclass(frozen=True)
class Verdict:
    """The outcome of a program over a list of tests (see ``VERDICTS``)."""

    verdict: str
    passed_tests: int
    total_tests: int
    first_failure: int | None = None
    message: str = ""
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def to_dict(self) -> dict:
        return asdict(self)



def run_tests(
    code: str,
    tests: list[dict],
    fn_name: str | None = None,
    limits: Limits = Limits(),
    budget_s: float | None = None,
    float_tolerance: float = 1e-6,
) -> Verdict:
    """Run ``code`` on each test in order, stopping at the first failure.

    ``budget_s`` bounds the whole call: each test's time limit is cut to what is left, and when
    nothing is left the verdict is ``time_limit`` at the next test.
    """
    if not tests:
        raise ValueError("no tests: a program cannot be judged without them")
    if not fn_name and any(t.get("testtype") == "functional" for t in tests):
        raise ValueError("functional tests need the name of the function to call")
    start = time.monotonic()
    total = len(tests)
    for index, test in enumerate(tests):
        step = limits
        if budget_s is not None:
            left = budget_s - (time.monotonic() - start)
            if left < 0.5:
                return Verdict("time_limit", index, total, index, f"time budget of {budget_s:g} s per sample spent", _since(start))
            if left < limits.time_s + limits.wall_slack_s:
                step = replace(limits, time_s=max(0.1, left - limits.wall_slack_s), wall_slack_s=min(limits.wall_slack_s, left / 2))
        functional = test.get("testtype") == "functional"
        run = run_program(code, test["input"], step, fn_name if functional else None)
        if run.status != "ok":
            verdict = "runtime_error" if run.status == "output_limit" else run.status
            message = run.message
            if verdict == "time_limit" and step is not limits:
                message = f"time budget of {budget_s:g} s per sample spent (this test was cut to {step.time_s:.2g} s)"
            return Verdict(verdict, index, total, index, message, _since(start))
        if functional:
            same, message = compare_values(run.stdout, test["output"], float_tolerance)
        else:
            same, message = compare_stdout(run.stdout, test["output"], float_tolerance)
        if not same:
            return Verdict("wrong_answer", index, total, index, message, _since(start))
    return Verdict("passed", total, total, None, "", _since(start))


def _since(start: float) -> float:
    return round(time.monotonic() - start, 3)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except (InvalidOperation, ValueError):
        return None


def _close(got: Decimal, expected: Decimal, tolerance: float, expected_token: str) -> bool:
    if got == expected:
        return True
    is_float = any(c in expected_token for c in ".eE")  # integers must match exactly
    return bool(tolerance) and is_float and got.is_finite() and expected.is_finite() and (
        abs(got - expected) <= Decimal(str(tolerance)) * max(Decimal(1), abs(expected))
    )


def compare_stdout(got: str, expected: str, tolerance: float = 1e-6) -> tuple[bool, str]:
    """The official rule: whitespace-stripped lines must match in number; each line must be equal,
    or equal as decimals token by token; plus floats within ``tolerance`` (absolute below 1,
    relative above; 0 restores the official exact rule). Returns ``(same, message)``."""
    got_lines, expected_lines = _lines(got), _lines(expected)
    if len(got_lines) != len(expected_lines):
        return False, f"{len(got_lines)} output lines, expected {len(expected_lines)}"
    for number, (mine, theirs) in enumerate(zip(got_lines, expected_lines)):
        if mine == theirs:
            continue
        a, b = _decimals(mine), _decimals(theirs)
        tokens = theirs.split()
        if a is None or b is None or len(a) != len(b) or not all(
            _close(x, y, tolerance, t) for x, y, t in zip(a, b, tokens)
        ):
            return False, f"line {number + 1}: got {shorten(mine)!r}, expected {shorten(theirs)!r}"
    return True, ""


def _parse_int(text: str) -> int | tuple[str, str]:
    """JSON integers; very long ones stay digits, tagged (Python refuses to convert them by default)."""
    return int(text) if len(text) < 4000 else ("int", text)


def _values_equal(got, expected, tolerance: float) -> bool:
    if isinstance(got, float) or isinstance(expected, float):
        if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
            return got == expected or math.isclose(got, expected, rel_tol=tolerance, abs_tol=tolerance)
        return False
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(_values_equal(g, e, tolerance) for g, e in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(_values_equal(got[k], expected[k], tolerance) for k in got)
    return got == expected


def compare_values(got_json: str, expected_json: str, tolerance: float = 1e-6) -> tuple[bool, str]:
    """A functional test: the program's return value (as the sandbox serialised it) against the
    expected JSON. Tuples count as lists; floats match within ``tolerance``."""
    try:
        reply = json.loads(got_json, parse_int=_parse_int)
    except ValueError:
        return False, "no return value"
    if "unserializable" in reply:
        return False, f"return value of type {reply['unserializable']} is not JSON"
    expected = json.loads(expected_json, parse_int=_parse_int)
    if _values_equal(reply.get("value"), expected, tolerance):
        return True, ""
    return False, f"returned {shorten(json.dumps(reply.get('value')))}, expected {shorten(expected_json)}"

"""AIME: American Invitational Mathematics Examination problems, each answered by an integer 0-999.

Data: the paper's 90 problems ``AI-MO/aimo-validation-aime`` (AIME 2022-2024, task ``aime``),
AIME 2024 and 2025 by hub id and pinned revision (tasks ``aime24`` and ``aime25``, below), or any
local file with an id, a problem and an answer per row
(``tasks/offline/aime24.jsonl``: the 30 AIME 2024 problems, with their ids 60-89 of the 90).

Prompt: the reference script's user message. That script wrote ``\\b`` in a plain Python string,
so the prompt it sent held a backspace character before ``oxed{}``; ``prompt.reference_backspace:
true`` reproduces it for exact parity runs, the default writes ``\\boxed{}`` correctly.

Grader (math-verify): the gold answer is parsed as a plain expression (``"033"`` is 33); the
prediction is the text after the model's thinking (``final_answer_text``). If it holds a
``\\boxed{}``, the last one is the answer, whatever it contains; otherwise math-verify's LaTeX
and expression extraction reads the text ("final answer is", "answer:", then the last LaTeX or
number). The answer is correct when math-verify finds it equal to the gold (``\\frac{66}{2}``
equals 33). Verdicts: ``correct``, ``wrong``, ``no_answer``, ``timeout``. math-verify's own
signal-based timeouts run only in a main thread (``grader.math_verify_timeout`` seconds); the
grading pool's hard timeout is the safety net everywhere.
"""

from __future__ import annotations

import threading

from harness.tasks import register
from harness.tasks.base import Grade, Task, final_answer_text, last_boxed
from harness.tasks.data import require

PROMPT = "Question: {problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
# The reference script's prompt: "\b" in a plain string is a backspace, so "\boxed" became "\x08oxed".
REFERENCE_PROMPT = PROMPT.replace("\\boxed", "\boxed")

DEFAULT_FIELDS = {"id": "id", "problem": "problem", "answer": "answer"}


def answer_text(completion: str, meta: dict) -> str:
    """The text to grade: after the thinking, with the reference prompt's backspace quirk undone
    (a model that copies ``\\x08oxed{}`` from the prompt still boxed its answer)."""
    return final_answer_text(completion, meta).replace("\boxed", "\\boxed")


def _math_verify_timeout(cfg: dict) -> int | None:
    """math-verify's own timeout in seconds, or None where its signal alarm cannot work."""
    seconds = (cfg.get("grader") or {}).get("math_verify_timeout", 5)
    if not seconds or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, int(seconds))


def score(gold_answer: str, text: str, math_verify_timeout: int | None = None) -> Grade:
    """Grade the final-answer text of a completion against a gold answer."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    gold = parse(
        str(gold_answer), extraction_config=[ExprExtractionConfig()], parsing_timeout=math_verify_timeout
    )
    if not gold:
        raise ValueError(f"gold answer {gold_answer!r} is not an expression")
    boxed = last_boxed(text)
    details: dict = {"source": "boxed" if boxed is not None else "text"}
    extracted = (boxed.strip() or None) if boxed is not None else None
    if not text.strip() or (boxed is not None and extracted is None):
        return Grade(False, extracted, "no_answer", details)
    candidate = f"\\boxed{{{boxed}}}" if boxed is not None else text
    try:
        predicted = parse(
            candidate,
            extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
            extraction_mode="first_match",
            parsing_timeout=math_verify_timeout,
            raise_on_error=True,
        )
    except TimeoutException:
        return Grade(False, extracted, "timeout", {**details, "error": "math-verify parsing timed out"})
    except Exception as err:  # unparseable LaTeX: the model gave an answer we cannot read
        predicted, details["parse_error"] = [], f"{type(err).__name__}: {err}"
    parsed = [value for value in predicted if not isinstance(value, str)]
    written = next((value for value in predicted if isinstance(value, str)), None)  # the matched text
    if boxed is None:
        if not parsed:  # nothing in the text reads as a number or expression
            return Grade(False, None, "no_answer", {**details, "unparsed": written})
        extracted = written if written is not None else str(parsed[0])
    if not predicted:
        return Grade(False, extracted, "wrong", details)
    details["parsed"] = str(parsed[0]) if parsed else None
    try:
        correct = verify(gold, predicted, timeout_seconds=math_verify_timeout, raise_on_error=True)
    except TimeoutException:
        return Grade(False, extracted, "timeout", {**details, "error": "math-verify comparison timed out"})
    except Exception as err:
        correct, details["verify_error"] = False, f"{type(err).__name__}: {err}"
    return Grade(bool(correct), extracted, "correct" if correct else "wrong", details)


@register
class AIME(Task):
    """The paper's AIME set (90 problems, 2022-2024)."""

    name = "aime"
    label = "AIME"
    order = 0

    def to_problem(self, row: dict, cfg: dict, position: int = 0) -> dict:
        fields = {**DEFAULT_FIELDS, **((cfg.get("data") or {}).get("fields") or {})}
        require(row, fields["problem"], fields["answer"])
        ident = row.get(fields["id"], position)  # the row's position when the data has no ids
        return {"id": str(ident), "problem": row[fields["problem"]], "answer": str(row[fields["answer"]]).strip()}

    def prompt(self, problem: dict, seed: int, cfg: dict) -> tuple[list[dict], dict]:
        reference = bool((cfg.get("prompt") or {}).get("reference_backspace", False))
        template = REFERENCE_PROMPT if reference else PROMPT
        return [{"role": "user", "content": template.format(problem=problem["problem"])}], {}

    self_contained = True

    def gold(self, problem: dict) -> dict:
        return {"answer": problem["answer"]}

    def grade(self, problem: dict, completion: str, meta: dict, cfg: dict) -> Grade:
        return score(problem["answer"], answer_text(completion, meta), _math_verify_timeout(cfg))


@register
class AIME24(AIME):
    """AIME 2024 I and II (30 problems): the same task and grader on another data set."""

    name = "aime24"
    label = "AIME 2024"


@register
class AIME25(AIME):
    """AIME 2025 I and II (30 problems): the same task and grader on another data set."""

    name = "aime25"
    label = "AIME 2025"

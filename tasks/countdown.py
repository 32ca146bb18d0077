"""CountDown4: reach a target with four numbers, + - * /, each number exactly once.

Data: ``yzhuang/tinyzero-Countdown-Tasks-4`` (the paper's first 128 rows) or a local file with
``nums`` and ``target`` per row (``tasks/offline/countdown4_256.jsonl``: TinyZero puzzles).
Prompt: TinyZero's. Grader: the last ``<answer>...</answer>`` (a ``\\boxed{}`` overrides, as in
the reference), the left side of an ``=``, the numbers used must be exactly the given multiset,
and the value must be within 1e-5 of the target. The expression is evaluated by an AST walk over
integers and + - * / with exact fractions: no ``eval``, no powers, names, calls or huge literals.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction

from harness.tasks import register
from harness.tasks.base import Grade, Task, last_boxed
from harness.tasks.data import require

PROMPT = (
    "Using the numbers {nums}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> "
    "tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
)
MAX_EXPRESSION_CHARS = 200
MAX_LITERAL = 10**6
MAX_MAGNITUDE = 10**30
TOLERANCE = Fraction(1, 10**5)

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class InvalidExpression(ValueError):
    """An answer that is not an arithmetic expression over integers and + - * /."""


def extract_answer(text: str) -> str | None:
    """The last ``\\boxed{...}`` if any, else the last ``<answer>...</answer>``."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    matches = _ANSWER.findall(text)
    return matches[-1].strip() if matches else None


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of an expression and the integers it uses. Raises InvalidExpression."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidExpression(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    expression = expression.replace("\\times", "*").replace("×", "*").replace("\\div", "/").replace("÷", "/")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise InvalidExpression(f"not an expression: {type(err).__name__}") from None
    numbers: list[int] = []
    return _eval(tree.body, numbers), numbers


def _eval(node: ast.AST, numbers: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        if node.value > MAX_LITERAL:
            raise InvalidExpression(f"literal larger than {MAX_LITERAL}")
        numbers.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand, numbers)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _eval(node.left, numbers), _eval(node.right, numbers)
        if isinstance(node.op, ast.Add):
            value = left + right
        elif isinstance(node.op, ast.Sub):
            value = left - right
        elif isinstance(node.op, ast.Mult):
            value = left * right
        else:
            if right == 0:
                raise InvalidExpression("division by zero")
            value = left / right
        if abs(value.numerator) > MAX_MAGNITUDE or value.denominator > MAX_MAGNITUDE:
            raise InvalidExpression("intermediate value too large")
        return value
    raise InvalidExpression(f"{type(node).__name__} is not allowed (only integers and + - * /)")


def score(answer: str | None, nums: list[int], target: int) -> Grade:
    """Grade an extracted answer against a puzzle."""
    if answer is None or not answer.strip():
        return Grade(False, None, "no_answer", {"format_ok": False})
    expression = answer.split("=", 1)[0]
    try:
        value, used = evaluate(expression)
    except InvalidExpression as err:
        return Grade(False, answer, "invalid_expression", {"format_ok": False, "reason": str(err)})
    details = {"format_ok": True, "value": str(value)}
    if Counter(used) != Counter(int(n) for n in nums):
        return Grade(False, answer, "wrong_numbers", {**details, "used": used})
    correct = abs(value - Fraction(int(target))) < TOLERANCE
    return Grade(correct, answer, "correct" if correct else "wrong", details)


@register
class CountDown(Task):
    name = "countdown"
    label = "CountDown4"
    order = 1

    def to_problem(self, row: dict, cfg: dict, position: int = 0) -> dict:
        require(row, "nums" if "numbers" not in row else "numbers", "target")
        nums = row.get("nums", row.get("numbers"))
        ident = row.get("id", row.get("hf_row", position))  # the row's position when the data has no ids
        return {"id": str(ident), "nums": [int(n) for n in nums], "target": int(row["target"])}

    def prompt(self, problem: dict, seed: int, cfg: dict) -> tuple[list[dict], dict]:
        text = PROMPT.format(nums=problem["nums"], target=problem["target"])
        return [{"role": "user", "content": text}], {}

    self_contained = True

    def gold(self, problem: dict) -> dict:
        return {"nums": problem["nums"], "target": problem["target"]}

    def grade(self, problem: dict, completion: str, meta: dict, cfg: dict) -> Grade:
        return score(extract_answer(completion), problem["nums"], problem["target"])

"""GPQA-Diamond: 198 graduate-level multiple-choice questions (biology, chemistry, physics).

Data: ``Idavidrein/gpqa`` config ``gpqa_diamond`` split ``train`` (gated: ``datasets`` uses the
user's hub token), the official password-protected ``dataset.zip`` (``data.zip_path``: read in
memory only, never extracted), or a local file with the dataset's columns (``data.path``).
The dataset's authors ask that its questions never appear in plain text online: this module
never writes them anywhere; the runner stores prompts only in the (uncommitted) results folder.

Prompt: lm-evaluation-harness's zero-shot chain-of-thought question, the four options shuffled
per question by a pure function of (question id, seed) whose permutation is stored with the
sample (``meta``), so any stored run can be re-graded. ``prompt_variant: lm_eval_cot`` is that
harness's text byte for byte (no space after "question:", a trailing space); ``cot`` writes it
correctly.

Grader: the letter of the last explicit answer after the model's thinking ("Answer: C", "the
answer is (C)", ``\\boxed{C}``), else the last bold letter ("**C**"), else lenient fallbacks (a
line holding only a letter, "option C", "(C)"). Lower-case letters count only where they cannot
be the article "a" or part of a word: inside brackets, bold or a box, or ending a statement.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile

from harness.tasks import register
from harness.tasks.base import Grade, Task, final_answer_text
from harness.tasks.data import file_source, load_rows, local_path, require

from harness.errors import DataError

LETTERS = "ABCD"
PROMPTS = {
    "cot": "What is the correct answer to this question: {question}\nChoices:\n{choices}\nLet's think step by step:",
    "lm_eval_cot": "What is the correct answer to this question:{question}\nChoices:\n{choices}\nLet's think step by step: ",
}
COLUMNS = (
    "Record ID",
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
)


# -- data -------------------------------------------------------------------------------------
def read_zip_csv(path: str, member: str, password: str | None) -> list[dict]:
    """Rows of a CSV inside a (possibly ZipCrypto-encrypted) zip archive, decrypted in memory."""
    try:
        with zipfile.ZipFile(local_path(path)) as archive:
            data = archive.read(member, pwd=password.encode() if password else None)
    except FileNotFoundError:
        raise DataError(f"GPQA archive not found: {path}") from None
    except KeyError:
        raise DataError(f"{path} has no member {member!r}") from None
    except RuntimeError as err:  # zipfile: "Bad password for file" / "... is encrypted, password required"
        raise DataError(f"cannot decrypt {member!r} in {path}: {err} (set task.data.zip_password)") from None
    except NotImplementedError as err:  # e.g. AES encryption, which zipfile cannot read
        raise DataError(f"cannot read {member!r} in {path}: {err}") from None
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def load_gpqa_rows(data: dict) -> tuple[list[tuple[str, dict]], dict]:
    """Rows (with where they came from) and source: ``path`` (a local file) wins over ``zip_path``,
    which wins over ``hub``."""
    if not data.get("path") and data.get("zip_path"):
        member = data.get("zip_member") or "dataset/gpqa_diamond.csv"
        rows = read_zip_csv(data["zip_path"], member, data.get("zip_password"))
        located = [(f"{data['zip_path']}:{member} row {n}", row) for n, row in enumerate(rows, 1)]
        return located, {**file_source(data["zip_path"]), "member": member}
    try:
        return load_rows(data)
    except DataError as err:
        raise DataError(f"{err}, or at the official archive: task.data.zip_path=dataset.zip") from None


def to_problem(row: dict) -> dict:
    """A question of the dataset as a problem: its Record ID, the question, the correct answer and
    the three incorrect ones (whitespace stripped, nothing else changed)."""
    require(row, *COLUMNS)
    text = {c: str(row[c]).strip() for c in COLUMNS}
    return {
        "id": text["Record ID"],
        "question": text["Question"],
        "correct": text["Correct Answer"],
        "incorrect": [text[f"Incorrect Answer {i}"] for i in (1, 2, 3)],
        "domain": str(row.get("High-level domain") or ""),
    }


# -- prompt -----------------------------------------------------------------------------------
def permutation(question_id: str, seed: int) -> list[int]:
    """The order in which to show the options ``[correct, *incorrect]``: position i shows option
    ``permutation[i]``. A uniform random permutation that is a pure function of (id, seed): each
    option index is ranked by a SHA-256 of (id, seed, index), the same on every platform."""
    key = f"gpqa:{question_id}:{seed}"
    return sorted(range(4), key=lambda i: hashlib.sha256(f"{key}:{i}".encode()).digest())


def render(problem: dict, order: list[int], variant: str) -> str:
    if variant not in PROMPTS:
        raise ValueError(f"unknown GPQA prompt_variant {variant!r}; valid: {', '.join(PROMPTS)}")
    options = [problem["correct"], *problem["incorrect"]]
    choices = "\n".join(f"({letter}) {options[index]}" for letter, index in zip(LETTERS, order))
    return PROMPTS[variant].format(question=problem["question"], choices=choices)


# -- grader -----------------------------------------------------------------------------------
_LETTER = r"[A-Da-d]"
_OPEN = r"(?:\\(?:text|textbf|mathrm|mathbf)\s*\{)?[\s*_$({\[]*"
# "answer is (C)", "Answer: C", "correct answer is option C", "final answer: **C**", "answer should be C"
_STATEMENT = re.compile(
    r"(?:\banswer\b|\bcorrect\s+(?:option|choice|letter)\b)"
    r"(?:\s*(?:is|should\s+be|would\s+be|must\s+be|will\s+be|=|:|：))*"
    r"\s*(?:(?:option|choice|letter)\s*)?" + _OPEN + r"(" + _LETTER + r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\s*\{\s*" + _OPEN + r"(" + _LETTER + r")(?=\s*[)}.:\]])")
_BOLD = re.compile(r"\*\*\s*\(?(" + _LETTER + r")\)?[.:]?\s*\*\*|\*\*\s*\(?([A-D])[).:]\s[^*\n]*\*\*")
_LONE_LINE = re.compile(r"^[\s*_>#(\[]*([A-D])[\s*_)\].]*$", re.MULTILINE)
_OPTION = re.compile(r"\b(?i:option|choice)\s*\(?([A-D])\b")
_PAREN = re.compile(r"\(([A-D])\)")


def _delimited(text: str, match: re.Match, group: int) -> bool:
    """A lower-case letter counts only when closed at once by a bracket, bold or a box, or when it
    ends its statement: "the answer is (c)", "**c**", "answer: c." but not "the answer is a
    mixture" or "the answer is **a mixture**"."""
    rest = text[match.end(group) :].split("\n", 1)[0]
    return re.match(r"\s*[)\]}*$]|\s*[.!]?\s*$", rest) is not None


def _last(pattern: re.Pattern, text: str) -> str | None:
    """The letter of the last match whose letter is upper-case or delimited."""
    found = None
    for match in pattern.finditer(text):
        group = next(i for i in range(1, (pattern.groups or 0) + 1) if match.group(i))
        letter = match.group(group)
        if letter.isupper() or _delimited(text, match, group):
            found = letter.upper()
    return found


def extract_letter(text: str) -> tuple[str | None, str]:
    """The chosen letter and how it was found (``explicit``, ``bold``, ``fallback``, ``none``)."""
    explicit = [(m.start(), m) for p in (_STATEMENT, _BOXED) for m in p.finditer(text)]
    for _, match in sorted(explicit, key=lambda pair: pair[0], reverse=True):
        letter = match.group(1)
        if letter.isupper() or _delimited(text, match, 1):
            return letter.upper(), "explicit"
    letter = _last(_BOLD, text)
    if letter:
        return letter, "bold"
    for pattern in (_LONE_LINE, _OPTION, _PAREN):
        letter = _last(pattern, text)
        if letter:
            return letter, "fallback"
    return None, "none"


def correct_letter(meta: dict) -> str:
    """The letter of the correct option, from the stored permutation (or an explicit letter)."""
    order = (meta or {}).get("permutation")
    if order is not None:
        return LETTERS[list(order).index(0)]
    letter = (meta or {}).get("correct_letter")
    if letter not in tuple(LETTERS):
        raise ValueError("the sample's meta has neither a permutation nor a correct_letter")
    return letter


@register
class GPQADiamond(Task):
    name = "gpqa_diamond"
    label = "GPQA-D"
    order = 2

    def read(self, data: dict) -> tuple[list[tuple[str, dict]], dict]:
        return load_gpqa_rows(data)

    def to_problem(self, row: dict, cfg: dict, position: int = 0) -> dict:
        return to_problem(row)

    def prompt(self, problem: dict, seed: int, cfg: dict) -> tuple[list[dict], dict]:
        order = permutation(problem["id"], seed)
        text = render(problem, order, cfg.get("prompt_variant") or "cot")
        return [{"role": "user", "content": text}], {
            "permutation": order,
            "correct_letter": LETTERS[order.index(0)],
        }

    self_contained = True  # the correct letter follows from the option permutation stored in the meta

    def gold(self, problem: dict) -> dict:
        return {}  # never the question text: the permutation in the sample's meta is enough

    def grade(self, problem: dict, completion: str, meta: dict, cfg: dict) -> Grade:
        gold = correct_letter(meta)
        letter, how = extract_letter(final_answer_text(completion, meta))
        details = {"correct_letter": gold, "found_by": how}
        if letter is None:
            return Grade(False, None, "no_answer", details)
        return Grade(letter == gold, letter, "correct" if letter == gold else "wrong", details)

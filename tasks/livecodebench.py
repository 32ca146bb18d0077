"""LiveCodeBench code generation: write a Python program that passes hidden tests.

Data: ``livecodebench/code_generation_lite`` by release tag (``release_v1`` .. ``release_v6``:
cumulative files ``test.jsonl`` .. ``test6.jsonl``; ``v1`` .. ``v6``: one release's file) and an
optional contest-date window, read directly from the hub's JSONL files (no dataset script, no
``trust_remote_code``). Private tests are stored as base64(zlib(pickle(json))); they are decoded
with an unpickler that refuses every class or function, but decoding still trusts the file
(a decompression bomb is not guarded against): read only the official release files.
Offline: a local JSONL with a ``tests`` list per row (``tasks/offline/lcb_v5_279.jsonl``: 279
problems from Aug 2024 - Jan 2025 with their *public* tests only, 1-6 each, so pass rates on it
are optimistic compared with the hidden tests), or rows in the hub's own format.

Prompt: the official runner's generic format (question, then starter code for LeetCode problems,
or the stdin instructions for AtCoder ones), as one user message (``prompt_style: user``, the
official format for reasoning models; it leaves the system slot to the model's config) or as a
system + user pair (``prompt_style: chat``). Grading: the last fenced code block of the text after
the model's thinking, run by :mod:`harness.sandbox` against every test (public, then private)
until the first failure; verdicts ``passed``, ``wrong_answer``, ``time_limit``, ``memory_limit``,
``runtime_error``, ``syntax_error``, ``no_code`` (and ``error`` if the sandbox cannot run).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import pickle
import re
import zlib
from datetime import datetime

from harness.tasks import register
from harness.tasks.base import Grade, Task, final_answer_text
from harness.tasks.data import file_source, read_rows

from harness.errors import DataError
from harness.hub import commit_in_path, dataset_commit

HUB_ID = "livecodebench/code_generation_lite"
_FILES = ["test.jsonl"] + [f"test{n}.jsonl" for n in range(2, 7)]
RELEASES = {f"release_v{n}": _FILES[:n] for n in range(1, 7)}
RELEASES |= {"release_latest": _FILES, **{f"v{n}": [_FILES[n - 1]] for n in range(1, 7)}}

SYSTEM_MESSAGE = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will "
    "generate a correct Python program that matches the specification and passes all tests."
)
FORMAT_WITH_STARTER_CODE = (
    "You will use the following starter code to write the solution to the problem and enclose your code "
    "within delimiters."
)
FORMAT_WITHOUT_STARTER_CODE = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on "
    "the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
    "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT."
)
PROMPT_STYLES = ("user", "chat")
_METHOD = re.compile(r"^\s*def\s+(\w+)\s*\(\s*self\b", re.MULTILINE)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
class _NoGlobals(pickle.Unpickler):
    """Unpickles plain data only: any class or function reference is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a test file")


def encode_tests(tests: list[dict]) -> str:
    """The release files' encoding of a test list: base64(zlib(pickle(json)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def decode_tests(value) -> list[dict]:
    """A test list from a row field: a list, a JSON string, or the encoded private tests."""
    if isinstance(value, list):
        return value
    if not value:
        return []
    try:
        return json.loads(value)
    except ValueError:
        pass
    text = _NoGlobals(io.BytesIO(zlib.decompress(base64.b64decode(value)))).load()
    return json.loads(text)


def method_name(starter_code: str) -> str | None:
    """The method LeetCode calls: the first ``def name(self`` after ``class Solution``."""
    after = starter_code.split("class Solution", 1)
    match = _METHOD.search(after[1] if len(after) == 2 else starter_code)
    return match.group(1) if match else None


def problem_from_row(row: dict) -> dict:
    """A problem (JSON-able, with ``tests`` decoded) from a release-file or offline row."""
    if "tests" in row:
        tests = decode_tests(row["tests"])
    else:
        tests = decode_tests(row.get("public_test_cases")) + decode_tests(row.get("private_test_cases"))
    tests = [{"input": t["input"], "output": t["output"], "testtype": t["testtype"]} for t in tests]
    metadata = row.get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata) if metadata.strip() else {}
    starter = row.get("starter_code") or ""
    title, content = row.get("question_title") or "", row.get("question_content") or ""
    ident = row.get("question_id") or "untitled-" + hashlib.sha256((title + "\n" + content).encode()).hexdigest()[:10]
    problem = {
        "id": str(ident),
        "title": title,
        "platform": row.get("platform") or "",
        "contest_id": row.get("contest_id") or "",
        "contest_date": str(row.get("contest_date") or ""),
        "difficulty": row.get("difficulty") or "",
        "question": content,
        "starter_code": starter,
        "fn_name": metadata.get("func_name") or (method_name(starter) if starter else None),
        "tests": tests,
    }
    if not tests:
        raise DataError(f"LiveCodeBench problem {ident} has no tests")
    if any(t["testtype"] == "functional" for t in tests) and not problem["fn_name"]:
        raise DataError(f"LiveCodeBench problem {ident} has functional tests but no function name")
    return problem


def in_window(contest_date: str, start: str | None, end: str | None) -> bool:
    """The official window: ``start <= date <= end``, both days at 00:00 (so ``end`` excludes
    contests later on that day). A problem without a date is kept only without a window."""
    if not start and not end:
        return True
    if not contest_date:
        return False
    date = datetime.fromisoformat(contest_date)
    if start and date < datetime.strptime(str(start), "%Y-%m-%d"):
        return False
    return not (end and date > datetime.strptime(str(end), "%Y-%m-%d"))


def _release_rows(data: dict) -> tuple[list[tuple[str, dict]], dict]:
    """The rows of a release, read from the hub's JSONL files."""
    release = data.get("release") or "release_v2"
    if release not in RELEASES:
        raise DataError(f"unknown LiveCodeBench release {release!r}; valid: {', '.join(RELEASES)}")
    hub, revision = data.get("hub") or HUB_ID, data.get("revision")
    try:
        from huggingface_hub import hf_hub_download

        paths = [hf_hub_download(hub, name, repo_type="dataset", revision=revision) for name in RELEASES[release]]
    except Exception as err:
        raise DataError(
            f"could not download {hub} {release} (revision {revision!r}): {type(err).__name__}. Without internet "
            "access, use the offline file: task.data.path=tasks/offline/lcb_v5_279.jsonl (public tests only)"
        ) from None
    rows = [row for path in paths for row in read_rows(path)]
    source = {
        "kind": "hub",
        "id": hub,
        "release": release,
        "files": RELEASES[release],
        "revision": revision,
        "resolved_revision": commit_in_path(paths[0]) or dataset_commit(hub, revision),
    }
    return rows, source


def read_problem_rows(data: dict) -> tuple[list[tuple[str, dict]], dict]:
    """The rows (with where they came from) and source of a task's ``data`` config (``path`` wins
    over the hub); the contest-date window is recorded in the source."""
    if data.get("path"):
        rows, source = read_rows(data["path"]), file_source(data["path"])
    else:
        rows, source = _release_rows(data)
    return rows, source | {"start_date": data.get("start_date"), "end_date": data.get("end_date")}


# ------------------------------------------------------------------------------------------------
# Prompt and extraction
# ------------------------------------------------------------------------------------------------
def question_text(problem: dict) -> str:
    """The official generic question template."""
    text = f"### Question:\n{problem['question']}\n\n"
    if problem.get("starter_code"):
        text += f"### Format: {FORMAT_WITH_STARTER_CODE}\n```python\n{problem['starter_code']}\n```\n\n"
    else:
        text += f"### Format: {FORMAT_WITHOUT_STARTER_CODE}\n```python\n# YOUR CODE HERE\n```\n\n"
    return text + "### Answer: (use the provided format with backticks)\n\n"


def build_prompt(problem: dict, style: str = "user") -> list[dict]:
    """Chat messages in one of the official formats (see ``PROMPT_STYLES``)."""
    if style == "user":
        return [{"role": "user", "content": SYSTEM_MESSAGE + "\n\n" + question_text(problem)}]
    if style == "chat":
        return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": question_text(problem)}]
    raise ValueError(f"unknown prompt_style {style!r}; valid: {', '.join(PROMPT_STYLES)}")


def extract_code(text: str) -> str | None:
    """The last complete fenced code block (fences are lines starting with three backticks,
    paired in order; an unclosed fence at the end is ignored), or None."""
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if line.lstrip().startswith("```")]
    pairs = list(zip(fences[0::2], fences[1::2]))
    if not pairs:
        return None
    start, end = pairs[-1]
    return "\n".join(lines[start + 1 : end])


# ------------------------------------------------------------------------------------------------
# Grading
# ------------------------------------------------------------------------------------------------
def grader_settings(cfg: dict):
    """Sandbox limits, the per-sample time budget and the float tolerance from ``grader:``."""
    from harness.sandbox import Limits

    grader = cfg.get("grader") or {}
    limits = Limits(
        time_s=float(grader.get("time_limit", 6)),
        memory_mb=int(grader.get("memory_mb", 4096)),
        output_mb=int(grader.get("output_mb", 64)),
        python=grader.get("python"),
    )
    timeout = float(grader.get("timeout", 180))
    budget = timeout - max(2.0, 0.05 * timeout)  # finish before the GradingPool's hard kill
    return limits, budget, float(grader.get("float_tolerance", 1e-6))


def grade_code(code: str | None, problem: dict, cfg: dict) -> Grade:
    """Grade extracted code against a problem's tests."""
    from harness.sandbox import SandboxError, run_tests

    if not code or not code.strip():
        return Grade(False, None, "no_code", {"total_tests": len(problem["tests"])})
    limits, budget, tolerance = grader_settings(cfg)
    try:
        verdict = run_tests(code, problem["tests"], problem.get("fn_name"), limits, budget, tolerance)
    except SandboxError as err:
        return Grade(False, code, "error", {"error": str(err)})
    details = verdict.to_dict()
    del details["verdict"]
    return Grade(verdict.passed, code, verdict.verdict, details)


@register
class LiveCodeBench(Task):
    name = "livecodebench"
    label = "LiveCodeBench"
    order = 3

    def read(self, data: dict) -> tuple[list[tuple[str, dict]], dict]:
        return read_problem_rows(data)

    def to_problem(self, row: dict, cfg: dict, position: int = 0) -> dict | None:
        data = cfg.get("data") or {}
        if not in_window(str(row.get("contest_date") or ""), data.get("start_date"), data.get("end_date")):
            return None
        return problem_from_row(row)

    def prompt(self, problem: dict, seed: int, cfg: dict) -> tuple[list[dict], dict]:
        return build_prompt(problem, cfg.get("prompt_style") or "user"), {}

    def gold(self, problem: dict) -> dict:
        # the tests stay in the data file (the record names it by problem id and the file's sha256)
        return {"tests": len(problem["tests"]), "fn_name": problem.get("fn_name")}

    def grade(self, problem: dict, completion: str, meta: dict, cfg: dict) -> Grade:
        return grade_code(extract_code(final_answer_text(completion, meta)), problem, cfg)

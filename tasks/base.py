"""The task interface: a task is its data, its prompt and its grader.

A task module defines one subclass of :class:`Task` decorated with :func:`harness.tasks.register`, and
``configs/task/NAME.yaml`` holds its data settings (hub id, revision, split, local path,
prompt variant, grader settings, version). Tasks are pure: no global state, no global RNG.

The runner calls, for each problem and sample::

    problems, source = task.load(cfg)                  # once per run (task.read + task.to_problem)
    prompt, meta = task.prompt(problem, seed, cfg)     # chat messages (or raw text) + meta
    ... the engine generates a completion ...
    grade = task.grade(problem, completion, meta, cfg)  # in a worker process, hard timeout

``meta`` is stored with the sample (e.g. GPQA's option permutation), so any stored run can be
re-graded without the generator. The runner adds the model's thinking delimiters to ``meta``
under ``"thinking"`` (see :func:`final_answer_text`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.tasks.data import load_rows

from harness.errors import DataError

Prompt = list[dict] | str


@dataclass(frozen=True)
class Grade:
    """A graded completion. ``verdict`` names the outcome (``correct``, ``wrong``,
    ``no_answer``, ``timeout``, ``error``, or a task's own, e.g. LiveCodeBench's)."""

    correct: bool
    extracted: Any = None
    verdict: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Task(ABC):
    """One benchmark. Subclasses set ``name``, ``label`` (what tables print), ``order`` (the
    paper's task order first) and, once its prompt or grader changes, ``version`` (1 until then; it is
    part of every run's identity), and implement the three methods."""

    name: str = ""
    label: str = ""
    order: int = 100
    version: int = 1

    def load(self, cfg: dict) -> tuple[list[dict], dict]:
        """All problems (JSON-able dicts, each with a unique string ``"id"``) in a fixed order, and
        where they came from, for the manifest (hub id + resolved revision, or file + sha256).

        Raises DataError naming the file and line of a bad row (a missing field, a duplicate id),
        or the data itself when it holds no problem.
        """
        located, source = self.read(cfg["data"])
        problems, seen = [], {}
        for position, (where, row) in enumerate(located):
            try:
                problem = self.to_problem(row, cfg, position)
            except KeyError as err:
                raise DataError(f"{where}: no field {err}") from None
            except (ValueError, TypeError) as err:
                raise DataError(f"{where}: {err}") from None
            if problem is None:
                continue
            if problem["id"] in seen:
                raise DataError(f"{where}: duplicate problem id {problem['id']!r} (first at {seen[problem['id']]})")
            seen[problem["id"]] = where
            problems.append(problem)
        if not problems:
            where = source.get("path") or source.get("id") or "the data"
            raise DataError(f"{where}: no problems for task {self.name} (the data is empty, or every row was left out)")
        return problems, source

    def read(self, data: dict) -> tuple[list[tuple[str, dict]], dict]:
        """The data's rows, each with where it came from, and the source record (default: a local
        file, else a hub dataset; see ``harness.tasks.data.load_rows``)."""
        return load_rows(data)

    @abstractmethod
    def to_problem(self, row: dict, cfg: dict, position: int = 0) -> dict | None:
        """A data row (the ``position``-th) as a problem (None leaves it out); ValueError naming a
        missing field."""

    @abstractmethod
    def prompt(self, problem: dict, seed: int, cfg: dict) -> tuple[Prompt, dict]:
        """The prompt (chat messages, or raw text) and the meta to store with the sample."""

    @abstractmethod
    def grade(self, problem: dict, completion: str, meta: dict, cfg: dict) -> Grade:
        """Grade one completion. Must be a pure function of its arguments."""

    def gold(self, problem: dict) -> dict:
        """What a stored sample keeps of its problem so that it can be graded again without the
        data: the fields the grader reads (override; the default keeps nothing)."""
        return {}

    #: Whether :meth:`gold` (with the sample's meta) is all the grader needs.
    self_contained: bool = False

    def stop(self, cfg: dict) -> list[str]:
        """Stop strings for generation (from the config by default)."""
        return list(cfg.get("stop") or [])


def final_answer_text(completion: str, meta: dict) -> str:
    """The part of a completion that holds the final answer: the text after the thinking.

    ``meta["thinking"]`` (set by the runner from the model's prompting config) may give
    ``start`` and ``end`` delimiters and ``opened`` (the prompt itself opened the thinking,
    as QwQ's template does). Rules:

    - no thinking delimiters configured: the whole completion;
    - the end delimiter occurs: the text after its last occurrence;
    - thinking was opened (by the prompt, or by the start delimiter in the completion) and never
      closed: the answer was never given, so the empty string;
    - otherwise (the model did not think): the whole completion.
    """
    thinking = (meta or {}).get("thinking") or {}
    start, end = thinking.get("start"), thinking.get("end")
    if not end:
        return completion
    if end in completion:
        return completion.rsplit(end, 1)[1]
    if thinking.get("opened") or (start and start in completion):
        return ""
    return completion


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, or None."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, begin = 0, match.end()
        for index in range(begin, len(text)):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                if depth == 0:
                    return text[begin:index]
                depth -= 1
    return None

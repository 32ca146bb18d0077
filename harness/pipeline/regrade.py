"""Grading stored completions again, no model needed: a run directory in place, or a list of
completions (hand-written, or from another tool) against a task's problems."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from harness.errors import DataError, UserError
from harness.pipeline.grading import grade_many, grader_config, grading_timeout
from harness.pipeline.records import fixed_grade, with_grade, write_summary
from harness.storage import RunDir
from harness.tasks import get_task


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, file=sys.stderr)


def regrade_run(path: Path, workers: int, timeout: float | None, progress: bool = True) -> tuple[int, dict]:
    """Re-grade one run directory in place with the task's current grader; returns the number of
    samples correct before, and the new summary.

    Samples that stand alone (schema 2 records of a task whose gold answer suffices) are graded
    from the run alone; otherwise the task's data is loaded (and must be the data the samples
    came from: its sha256 is checked against the records').
    """
    config_file = path / "config.yaml"
    if not config_file.exists():
        raise UserError(f"{path} is not a run directory (no config.yaml)")
    cfg = yaml.safe_load(config_file.read_text())
    task_cfg = cfg["task"]
    task = get_task(task_cfg["name"])
    run = RunDir(path)
    samples = run.samples()
    if task.self_contained and samples and all(s.get("schema", 1) >= 2 for s in samples):
        by_id = {s["problem_id"]: {"id": s["problem_id"], **(s.get("gold") or {})} for s in samples}
    else:
        problems, source = task.load(task_cfg)
        _check_same_data(path, samples, source)
        by_id = {p["id"]: p for p in problems}
    missing = sorted({s["problem_id"] for s in samples} - set(by_id))
    if missing:
        raise DataError(f"{path}: problems {missing[:5]} are not in the task's data; is it the same dataset?")
    graded_cfg = grader_config(task_cfg, timeout)
    todo = [s for s in samples if fixed_grade(s) is None]
    items = [(task.name, graded_cfg, by_id[s["problem_id"]], s["completion"], s.get("prompt_meta") or {}) for s in todo]
    with _progress(len(items), f"grade {path.name}", progress) as bar:
        grades = iter(grade_many(items, workers=workers, timeout=grading_timeout(task_cfg, timeout), progress=bar))
    before = sum(bool(s.get("correct")) for s in samples)
    run.rewrite_samples([with_grade(s, fixed_grade(s) or next(grades)) for s in samples])
    return before, write_summary(run, cfg, [{"id": i} for i in _view_ids(path, samples)])


def _view_ids(path: Path, samples: list[dict]) -> list[str]:
    """The problems the run's summary covered (its view), or else every problem it has samples of."""
    summary = path / "summary.json"
    if summary.exists():
        ids = (json.loads(summary.read_text()).get("view") or {}).get("problem_ids")
        if ids:
            return list(ids)
    return sorted({s["problem_id"] for s in samples})


def _check_same_data(path: Path, samples: list[dict], source: dict) -> None:
    recorded = {(s.get("data") or {}).get("sha256") for s in samples} - {None}
    if recorded and source.get("sha256") and source["sha256"] not in recorded:
        raise DataError(f"{path}: the task's data file ({source.get('path')}) is not the one its samples came from "
                        f"(sha256 {source['sha256'][:12]}..., the samples name {sorted(recorded)[0][:12]}...)")


def grade_lines(task_cfg: dict, lines: list[dict], source: str, workers: int, timeout: float | None,
                progress: bool = True, data: Path | None = None) -> list[dict]:
    """Grade completions: each line holds a problem's fields (as the task's loader gives them), a
    ``completion`` and optionally the ``prompt_meta`` stored with a sample. With ``data`` (a local
    data file of the task) a line may name its problem by ``id`` (or ``problem_id``) instead.
    Returns the lines with their grades."""
    task = get_task(task_cfg["name"])
    by_id = {}
    if data is not None:
        problems, _ = task.load({**task_cfg, "data": {**task_cfg["data"], "path": str(data)}})
        by_id = {p["id"]: p for p in problems}
    problems = []
    for number, line in enumerate(lines, 1):
        if "completion" not in line:
            raise DataError(f"{source} line {number} has no 'completion' field")
        ident = str(line.get("id", line.get("problem_id", "")))
        if by_id:
            if ident not in by_id:
                raise DataError(f"{source} line {number}: problem id {ident!r} is not in {data}")
            problems.append({**by_id[ident], **line})
        else:
            problems.append(_as_problem(task, task_cfg, line, number))
    graded_cfg = grader_config(task_cfg, timeout)
    items = [(task.name, graded_cfg, problem, line["completion"], line.get("prompt_meta") or {})
             for problem, line in zip(problems, lines)]
    with _progress(len(items), "grade", progress) as bar:
        grades = grade_many(items, workers=workers, timeout=grading_timeout(task_cfg, timeout), progress=bar)
    return [with_grade(line, grade) for line, grade in zip(lines, grades)]


def _as_problem(task, task_cfg: dict, line: dict, number: int) -> dict:
    """A line in the task's data format (a row its loader takes, e.g. a LiveCodeBench release row)
    as the loader turns it into a problem; a line that already holds the problem's fields as is."""
    try:
        problem = task.to_problem(line, task_cfg, number - 1)
    except (KeyError, ValueError, TypeError):
        return line
    return {**line, **(problem or {})}

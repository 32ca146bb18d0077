"""``python -m harness.grade``: grade stored generations again, no model needed.

    python -m harness.grade RUN_DIR [RUN_DIR ...]           # re-grade runs in place (after a grader fix)
    python -m harness.grade --task aime FILE.jsonl          # grade hand-written completions
    python -m harness.grade --task livecodebench FILE.jsonl --data tasks/offline/lcb_v5_279.jsonl

A run directory's samples are re-graded with the task's current grader and its config
(``config.yaml``); ``samples.jsonl`` and ``summary.json`` are rewritten atomically. In the
second form each line of FILE holds a problem's fields (as the task's loader produces them),
a ``completion``, and optionally the ``prompt_meta`` stored with a sample (e.g. GPQA's option
permutation); with ``--data`` a line may instead name its problem by ``id``. Each line is printed
back as JSONL with ``correct``, ``extracted`` and ``verdict``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from harness.grading import grade_many
from harness.run import CONFIG_DIR
from harness.runner import grader_config, grading_timeout, with_grade, write_summary
from harness.storage import RunDir, read_jsonl
from tasks import get_task, task_names


def task_config(name: str) -> dict:
    """A task's default config (``configs/task/NAME.yaml`` as the runner would see it)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    if name not in task_names():
        raise SystemExit(f"error: unknown task {name!r}; valid tasks: {', '.join(task_names())}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"task={name}"])
    return OmegaConf.to_container(cfg.task, resolve=True)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, file=sys.stderr)


def regrade_run(path: Path, workers: int, timeout: float | None, progress: bool = True) -> dict:
    """Re-grade one run directory in place; return its new summary."""
    config_file = path / "config.yaml"
    if not config_file.exists():
        raise SystemExit(f"error: {path} is not a run directory (no config.yaml)")
    cfg = yaml.safe_load(config_file.read_text())
    task_cfg = cfg["task"]
    task = get_task(task_cfg["name"])
    problems, _ = task.load(task_cfg)
    by_id = {p["id"]: p for p in problems}
    run = RunDir(path)
    samples = run.samples()
    missing = sorted({s["problem_id"] for s in samples} - set(by_id))
    if missing:
        raise SystemExit(f"error: {path}: problems {missing[:5]} are not in the task's data; is it the same dataset?")
    grading = {"task": task_cfg, "grading": {"timeout": timeout}}
    task_cfg, timeout = grader_config(grading), grading_timeout(grading)
    items = [(task.name, task_cfg, by_id[s["problem_id"]], s["completion"], s.get("prompt_meta") or {}) for s in samples]
    with _progress(len(items), f"grade {path.name}", progress) as bar:
        grades = grade_many(items, workers=workers, timeout=timeout, progress=bar)
    before = sum(bool(s.get("correct")) for s in samples)
    run.rewrite_samples([with_grade(s, g) for s, g in zip(samples, grades)])
    limit = task_cfg.get("limit")
    summary = write_summary(run, cfg, problems[:limit] if limit else problems)
    print(f"{path}: {before} -> {summary['correct']} correct of {summary['n']}")
    return summary


def grade_file(task_name: str, file: Path, workers: int, timeout: float | None, progress: bool = True,
               data: Path | None = None) -> None:
    """Grade the completions of a JSONL file and print each line with its grade.

    With ``data`` (a local data file of the task), a line naming a problem by ``id`` (or
    ``problem_id``) gets that problem's fields, so it needs only the id and the completion.
    """
    cfg = task_config(task_name)
    lines = read_jsonl(file) if file.suffix == ".jsonl" else json.loads(file.read_text())
    by_id = {}
    if data is not None:
        problems, _ = get_task(task_name).load({**cfg, "data": {**cfg["data"], "path": str(data)}})
        by_id = {p["id"]: p for p in problems}
    problems = []
    for number, line in enumerate(lines, 1):
        if "completion" not in line:
            raise SystemExit(f"error: {file} line {number} has no 'completion' field")
        ident = str(line.get("id", line.get("problem_id", "")))
        if by_id and ident not in by_id:
            raise SystemExit(f"error: {file} line {number}: problem id {ident!r} is not in {data}")
        problems.append({**by_id.get(ident, {}), **line})
    grading = {"task": cfg, "grading": {"timeout": timeout}}
    cfg, timeout = grader_config(grading), grading_timeout(grading)
    items = [(task_name, cfg, problem, line["completion"], line.get("prompt_meta") or {})
             for problem, line in zip(problems, lines)]
    with _progress(len(items), "grade", progress) as bar:
        grades = grade_many(items, workers=workers, timeout=timeout, progress=bar)
    for line, grade in zip(lines, grades):
        out = with_grade(line, grade)
        print(json.dumps(out, ensure_ascii=False, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.grade", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or one JSONL file with --task")
    parser.add_argument("--task", help="grade a JSONL file of completions for this task")
    parser.add_argument("--data", type=Path, default=None,
                        help="with --task: a local data file; lines then need only an id and a completion")
    parser.add_argument("--workers", type=int, default=2, help="grading processes (default 2)")
    parser.add_argument("--timeout", type=float, default=None, help="hard timeout per item, seconds (default: the task's)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    if args.task:
        if len(args.paths) != 1 or not args.paths[0].is_file():
            parser.error("--task takes exactly one JSONL file")
        grade_file(args.task, args.paths[0], args.workers, args.timeout, progress, args.data)
        return 0
    for path in args.paths:
        regrade_run(path, args.workers, args.timeout, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``moi-grade`` (``python -m harness.grade``): grade stored generations again, no model needed.

    moi-grade RUN_DIR [RUN_DIR ...]                      # re-grade runs in place (after a grader fix)
    moi-grade task=aime file=FILE.jsonl                  # grade hand-written completions
    moi-grade task=livecodebench file=FILE.jsonl data=tasks/offline/lcb_v5_279.jsonl

A run directory's samples are re-graded with the task's current grader and its config
(``config.yaml``); ``samples.jsonl`` and ``summary.json`` are rewritten atomically. With
``file``, each line holds a problem's fields (as the task's loader produces them), a
``completion``, and optionally the ``prompt_meta`` stored with a sample (e.g. GPQA's option
permutation); with ``data`` a line may instead name its problem by ``id``. Each line is printed
back as JSONL with ``correct``, ``extracted`` and ``verdict``. Settings: ``configs/grade.yaml``
(``workers``, ``timeout``, ``progress``); ``--task T FILE`` and ``--data F`` still work.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.cli.common import compose, one_line_errors, split_args, wants_help
from harness.errors import UserError
from harness.pipeline.regrade import grade_lines, regrade_run
from harness.storage import read_records
from harness.tasks import task_names

FLAGS = {"task": "task", "data": "data", "workers": "workers", "timeout": "timeout", "progress": "progress", "file": "file"}


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv, __doc__):
        return 0
    plain, settings = split_args(argv, FLAGS)
    task = next((s.split("=", 1)[1] for s in settings if s.startswith("task=")), None)
    if task is not None and task not in task_names():
        raise UserError(f"unknown task {task!r}; valid tasks: {', '.join(task_names())}")
    cfg = compose("grade", settings)
    workers, timeout, progress = int(cfg["workers"]), cfg["timeout"], bool(cfg["progress"])
    if cfg.get("task"):
        file = cfg["file"] or (plain[0] if len(plain) == 1 else None)
        if file is None or len(plain) > (0 if cfg["file"] else 1):
            raise UserError("task=NAME grades one JSONL file of completions: moi-grade task=NAME file=FILE.jsonl")
        path = Path(file)
        if not path.is_file():
            raise UserError(f"file {file!r} is not a file")
        lines = read_records(path)
        data = Path(cfg["data"]) if cfg["data"] else None
        for out in grade_lines(cfg["task"], lines, str(path), workers, timeout, progress, data):
            print(json.dumps(out, ensure_ascii=False, sort_keys=True))
        return 0
    runs = [Path(p) for p in [*cfg["runs"], *plain]]
    if not runs:
        raise UserError("give run directories (moi-grade RUN_DIR ...) or a file of completions (task=NAME file=FILE)")
    for path in runs:
        before, summary = regrade_run(path, workers, timeout, progress)
        print(f"{path}: {before} -> {summary['correct']} correct of {summary['n']}")
    return 0

"""A run directory on disk.

Layout of one run (one setting of model x task x method x sampling x seed x engine)::

    config.yaml        the resolved config
    manifest.json      versions, git sha, model and dataset revisions, seeds, hardware
    generations.jsonl  journal: each completion as soon as it is generated (before grading)
    samples.jsonl      one line per (problem id, sample index): prompt, completion, grade
    summary.json       accuracy, standard error, token counts, mixed steps
    owner.lock         the lock of the process that owns the run (its pid and host while held)

Both JSONL files are append-only journals (:mod:`harness.storage.jsonl`); the runner only
generates keys that are in neither file. ``generations.jsonl`` is removed once every sample is
graded. A run is written by one process at a time: the one that holds :meth:`RunDir.lock`.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.storage.jsonl import JsonlAppender, read_jsonl, write_text
from harness.storage.locks import FileLock

SAMPLES = "samples.jsonl"
GENERATIONS = "generations.jsonl"
LOCK = "owner.lock"


def sample_key(problem_id: str, sample_index: int) -> str:
    return f"{problem_id}#{sample_index}"


class RunDir:
    """One run's directory and its append-only files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._samples: JsonlAppender | None = None
        self._generations: JsonlAppender | None = None

    @property
    def samples_path(self) -> Path:
        return self.path / SAMPLES

    @property
    def generations_path(self) -> Path:
        return self.path / GENERATIONS

    def lock(self) -> FileLock:
        """The lock a process holds while it writes this run (see :mod:`harness.storage.locks`)."""
        return FileLock(self.path / LOCK, what=f"run {self.path}")

    def samples(self) -> list[dict]:
        return read_jsonl(self.samples_path)

    def generations(self) -> list[dict]:
        return read_jsonl(self.generations_path)

    def append_sample(self, record: dict) -> None:
        if self._samples is None:
            self._samples = JsonlAppender(self.samples_path)
        self._samples.append(record)

    def append_generation(self, record: dict) -> None:
        if self._generations is None:
            self._generations = JsonlAppender(self.generations_path)
        self._generations.append(record)

    def close(self) -> None:
        for appender in (self._samples, self._generations):
            if appender is not None:
                appender.close()
        self._samples = self._generations = None

    def rewrite_samples(self, records: list[dict]) -> None:
        """Replace samples.jsonl atomically (re-grading)."""
        self.close()
        body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        write_text(self.samples_path, body)

    def remove_if_unused(self, levels: int = 2) -> None:
        """Remove the directory if it holds nothing but its config (a run whose engine never
        started), and then its parent folders up to ``levels`` above it while they are empty."""
        if not self.path.is_dir() or {p.name for p in self.path.iterdir()} - {"config.yaml", LOCK}:
            return
        for name in ("config.yaml", LOCK):
            (self.path / name).unlink(missing_ok=True)
        folder = self.path
        for _ in range(levels + 1):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def finish(self) -> None:
        """Drop the journal once every generation is graded into samples.jsonl."""
        self.close()
        done = {r["key"] for r in self.samples()}
        if all(r["key"] in done for r in self.generations()):
            self.generations_path.unlink(missing_ok=True)

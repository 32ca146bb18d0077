"""A run directory on disk: append-only JSONL files that survive any crash, and atomic JSON files.

Layout of one run (one setting of model x task x method x sampling x seed x engine)::

    config.yaml        the resolved config
    manifest.json      versions, git sha, model and dataset revisions, seeds, hardware
    generations.jsonl  journal: each completion as soon as it is generated (before grading)
    samples.jsonl      one line per (problem id, sample index): prompt, completion, grade
    summary.json       accuracy, standard error, token counts, mixed steps

Lines are appended with one ``write`` and flushed, so a process killed at any moment (even
SIGKILL) leaves at most a torn last line; opening a file drops such a line. A key is never
written twice: readers keep the first line of a key, and the runner only generates keys that
are in neither file. ``generations.jsonl`` is removed once every sample is graded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SAMPLES = "samples.jsonl"
GENERATIONS = "generations.jsonl"


def sample_key(problem_id: str, sample_index: int) -> str:
    return f"{problem_id}#{sample_index}"


def write_json(path: Path, data) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one, never half)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file, first occurrence of each ``key`` only, torn last line ignored.

    Records without a ``key`` are all kept."""
    if not path.exists():
        return []
    records, seen = [], set()
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # no trailing newline: the last write was cut short
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{number}: corrupt line (not JSON); remove it to go on") from None
        key = record.get("key")
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        records.append(record)
    return records


class JsonlAppender:
    """Appends records to a JSONL file, one write and flush per record."""

    def __init__(self, path: Path):
        self.path = path
        _drop_torn_tail(path)
        self._handle = open(path, "ab")  # noqa: SIM115 - held open for the run

    def append(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n")
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()


def _drop_torn_tail(path: Path) -> None:
    """Truncate a file to its last complete line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        handle.truncate(cut)


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

    def finish(self) -> None:
        """Drop the journal once every generation is graded into samples.jsonl."""
        self.close()
        done = {r["key"] for r in self.samples()}
        if all(r["key"] in done for r in self.generations()):
            self.generations_path.unlink(missing_ok=True)

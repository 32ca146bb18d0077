"""Append-only JSONL journals that survive any crash, and atomic JSON files.

Lines are appended with one ``write`` and flushed, so a process killed at any moment (even
SIGKILL) leaves at most a torn last line; opening a journal drops such a line. A key is never
written twice: readers keep the first line of a key.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_json(path: Path, data) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one, never half)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically, through a temporary file of this process's own."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

"""Append-only JSONL journals that survive any crash, and atomic JSON files.

Lines are appended with one ``write`` and flushed, so a process killed at any moment (even
SIGKILL) leaves at most a torn last line; opening a journal drops such a line. A key is never
written twice: readers keep the first line of a key.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from harness.errors import DataError


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
    """Records of one of the harness's own journals: first occurrence of each ``key`` only, a torn
    last line (one without its newline: a write cut short) ignored. Records without a ``key`` are
    all kept. A corrupt complete line raises DataError naming the file and the line.

    Files from users are read whole with :func:`read_records` instead."""
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
            record = None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}:{number}: a corrupt line (not a JSON object) in a run's journal; delete that line (its sample "
                "is generated again) and run the same command to resume"
            ) from None
        key = record.get("key")
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        records.append(record)
    return records


def located_records(path: Path) -> list[tuple[str, dict]]:
    """Every object of a user's file with where it is: the lines of a JSONL file (``FILE:LINE``;
    the last one with or without its newline), or the items of a JSON list (a ``.json`` file, or
    any other whose text starts with ``[``: ``FILE row N``). DataError naming the file and line of
    anything that is not a JSON object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if path.suffix == ".json" or (path.suffix != ".jsonl" and text.lstrip().startswith("[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
        located = [(f"{path} row {number}", item) for number, item in enumerate(data, 1)]
    else:
        located = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    located.append((f"{path}:{number}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    for where, item in located:
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
    return located


def read_records(path: Path) -> list[dict]:
    """Every object of a user's JSONL file or JSON list (see :func:`located_records`)."""
    return [record for _, record in located_records(path)]


class JsonlAppender:
    """Appends records to a JSONL file, each straight to the file (no buffer): a write that fails
    (a full disk) leaves at most a torn last line, which the next run drops. Errors name the file."""

    def __init__(self, path: Path):
        self.path = path
        _drop_torn_tail(path)
        self._handle = open(path, "ab", buffering=0)  # noqa: SIM115 - held open for the run

    def append(self, record: dict) -> None:
        line = memoryview(json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n")
        try:
            while line:
                line = line[self._handle.write(line) :]
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(self.path)) from None

    def close(self) -> None:
        if not self._handle.closed:
            try:
                os.fsync(self._handle.fileno())
            except OSError as err:
                if err.errno != errno.EINVAL:  # EINVAL: a file that cannot be synced (a pipe, a device)
                    raise OSError(err.errno, err.strerror, str(self.path)) from None
            finally:
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

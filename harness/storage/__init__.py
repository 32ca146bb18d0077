"""Storage: run directories of append-only JSONL journals and atomic JSON files; locks and caches."""

from harness.storage.jsonl import JsonlAppender, read_jsonl, read_records, write_json, write_text
from harness.storage.locks import FileLock, LockBusy, build_cached
from harness.storage.rundir import GENERATIONS, LOCK, SAMPLES, RunDir, sample_key

__all__ = [
    "GENERATIONS", "LOCK", "SAMPLES", "FileLock", "JsonlAppender", "LockBusy", "RunDir", "build_cached", "read_jsonl",
    "read_records", "sample_key", "write_json", "write_text",
]

"""Storage: run directories of append-only JSONL journals and atomic JSON files."""

from harness.storage.jsonl import JsonlAppender, read_jsonl, read_records, write_json, write_text
from harness.storage.rundir import GENERATIONS, SAMPLES, RunDir, sample_key

__all__ = [
    "GENERATIONS", "SAMPLES", "JsonlAppender", "RunDir", "read_jsonl", "read_records", "sample_key", "write_json", "write_text",
]

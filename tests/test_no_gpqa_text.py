"""No GPQA question text in the repository: its authors ask that it never appear in plain text online.

The check needs no GPQA data: ``tests/data/diamond_fingerprints.json`` holds keyed hashes (BLAKE2b
with a fixed salt, 64 bits) of the word 8-grams that start every GPQA-Diamond question, and the
SHA-256 of the dataset's canary GUID, never the text itself. Every file git would commit (tracked,
or untracked and not ignored) is scanned for both. A run of 8 or more consecutive words of a
question's first 64 words (after lower-casing and dropping punctuation, LaTeX markup and JSON
escapes) is found wherever it appears.

Regenerate the fingerprints (only where the archive is, e.g. after the data changes) with::

    python tests/test_no_gpqa_text.py --write ../shared/data/gpqa/dataset.zip
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FINGERPRINTS = REPO / "tests" / "data" / "diamond_fingerprints.json"
WINDOW, STRIDE, HEAD = 8, 4, 64
_ESCAPES = re.compile(r"\\u[0-9a-fA-F]{4}|\\[nrt\"]")
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SKIP_DIRS = {".git", ".venv", ".cache", "results", "__pycache__", "build", "outputs", "multirun"}


# -- fingerprints -----------------------------------------------------------------------------
def words(text: str) -> list[str]:
    """Lower-case alphanumeric words, JSON/Python escapes (``\\n``, ``\\u2019``) read as spaces."""
    return re.findall(r"[a-z0-9]+", _ESCAPES.sub(" ", text).lower())


def fingerprint(shingle: str, salt: bytes) -> str:
    return hashlib.blake2b(shingle.encode(), key=salt, digest_size=8).hexdigest()


def question_fingerprints(questions: Iterable[str], salt: bytes) -> set[str]:
    """Fingerprints of the 8-word windows, every 4 words, of each question's first 64 words."""
    found = set()
    for question in questions:
        head = words(question)[:HEAD]
        for start in range(0, max(1, len(head) - WINDOW + 1), STRIDE):
            if len(head[start : start + WINDOW]) == WINDOW:
                found.add(fingerprint(" ".join(head[start : start + WINDOW]), salt))
    return found


def leaks(text: str, fingerprints: set[str], salt: bytes) -> int:
    """How many 8-word windows of a text have a question fingerprint."""
    tokens = words(text)
    return sum(
        fingerprint(" ".join(tokens[i : i + WINDOW]), salt) in fingerprints
        for i in range(len(tokens) - WINDOW + 1)
    )


def has_canary(text: str, canary_sha256: str) -> bool:
    return any(
        hashlib.sha256(guid.encode()).hexdigest() == canary_sha256 for guid in set(_GUID.findall(text))
    )


# -- the repository ---------------------------------------------------------------------------
def repository_files(root: Path = REPO) -> list[Path]:
    """Every file git would commit: tracked, or untracked and not ignored (a walk without git)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
        return [root / name for name in out.decode().split("\0") if name and (root / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
            files += [Path(folder) / name for name in names]
        return files


def text_of(path: Path) -> str | None:
    """A file's text, or None for a binary file."""
    data = path.read_bytes()
    return None if b"\0" in data[:8192] else data.decode("utf-8", errors="replace")


def load_fingerprints() -> dict:
    data = json.loads(FINGERPRINTS.read_text())
    data["salt_bytes"] = bytes.fromhex(data["salt"])
    data["set"] = set(data["fingerprints"])
    return data


# -- tests ------------------------------------------------------------------------------------
def test_fingerprints_file_holds_only_hashes():
    data = json.loads(FINGERPRINTS.read_text())
    assert (
        data["questions"] == 198
        and data["window"] == WINDOW
        and data["stride"] == STRIDE
        and data["head"] == HEAD
    )
    assert len(data["fingerprints"]) > 198 * 10
    assert all(re.fullmatch(r"[0-9a-f]{16}", h) for h in data["fingerprints"])
    assert re.fullmatch(r"[0-9a-f]{64}", data["canary_sha256"])


def test_the_scan_sees_the_repository():
    files = {path.relative_to(REPO).as_posix() for path in repository_files()}
    assert {"tasks/gpqa_diamond.py", "tests/test_no_gpqa_text.py", "tasks/offline/aime24.jsonl"} <= files
    assert not any(name.startswith((".venv/", ".git/")) for name in files)


def test_no_gpqa_question_or_canary_in_the_repository():
    data = load_fingerprints()
    found = {}
    for path in repository_files():
        text = text_of(path)
        if text is None:
            continue
        hits = leaks(text, data["set"], data["salt_bytes"])
        if hits or has_canary(text, data["canary_sha256"]):
            found[path.relative_to(REPO).as_posix()] = hits
    assert not found, (
        f"GPQA text (8-word windows matched) or its canary in: {found}; remove it, never commit it"
    )


def test_the_scan_finds_planted_text(tmp_path):
    """The matcher on a synthetic question: found verbatim, JSON-escaped, re-cased and quoted in
    part; not found in other text."""
    salt = b"synthetic-salt"
    question = (
        "A synthetic particle of mass 3 kg moves on a frictionless ring of radius 2 m;\n"
        "what is the tension in the string when the particle's speed is 4 m/s?"
    )
    prints = question_fingerprints([question], salt)
    assert leaks(question, prints, salt) > 0
    assert leaks(json.dumps({"prompt": question}), prints, salt) > 0
    assert leaks("...moves ON A FRICTIONLESS ring of radius 2 m; what is the...", prints, salt) > 0
    assert leaks("A synthetic particle of mass 3 kg rests on a table.", prints, salt) == 0
    planted = tmp_path / "sample.jsonl"
    planted.write_text(json.dumps({"completion": "x", "prompt": question}) + "\n")
    assert leaks(text_of(planted), prints, salt) > 0
    guid = "00000000-1111-2222-3333-444444444444"
    assert has_canary(f"canary: {guid}", hashlib.sha256(guid.encode()).hexdigest())
    assert not has_canary("no guid here", hashlib.sha256(guid.encode()).hexdigest())


def _archive() -> Path | None:
    path = Path(os.environ.get("GPQA_ZIP") or REPO.parent / "shared" / "data" / "gpqa" / "dataset.zip")
    return path if path.is_file() else None


@pytest.mark.skipif(_archive() is None, reason="the GPQA archive is only on dev machines (set GPQA_ZIP)")
def test_fingerprints_match_the_archive():
    """Where the archive is (read in memory): the committed fingerprints are its questions'."""
    data = load_fingerprints()
    rows = _read_archive(_archive())
    questions = [row["Question"] for row in rows]
    assert question_fingerprints(questions, data["salt_bytes"]) == data["set"]
    assert all(leaks(q, data["set"], data["salt_bytes"]) > 0 for q in questions if len(words(q)) >= WINDOW)
    assert {
        hashlib.sha256(_GUID.search(row["Canary String"]).group().encode()).hexdigest() for row in rows
    } == {data["canary_sha256"]}


def _read_archive(path: Path) -> list[dict]:
    from harness.tasks.gpqa_diamond import read_zip_csv

    return read_zip_csv(str(path), "dataset/gpqa_diamond.csv", "deserted-untie-orchid")


def write_fingerprints(archive: Path) -> None:
    """Compute the fingerprints from the archive (in memory) and write them (hashes only)."""
    rows = _read_archive(archive)
    salt = (
        bytes.fromhex(json.loads(FINGERPRINTS.read_text())["salt"])
        if FINGERPRINTS.exists()
        else os.urandom(16)
    )
    canaries = {_GUID.search(row["Canary String"]).group() for row in rows}
    assert len(canaries) == 1, "expected one canary GUID"
    data = {
        "about": "Keyed BLAKE2b-64 hashes of word 8-grams of GPQA-Diamond questions, and the SHA-256 of "
        "its canary GUID, for tests/test_no_gpqa_text.py. No GPQA text.",
        "source": {
            "member": "dataset/gpqa_diamond.csv",
            "archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        },
        "questions": len(rows),
        "window": WINDOW,
        "stride": STRIDE,
        "head": HEAD,
        "salt": salt.hex(),
        "canary_sha256": hashlib.sha256(canaries.pop().encode()).hexdigest(),
        "fingerprints": sorted(question_fingerprints((row["Question"] for row in rows), salt)),
    }
    FINGERPRINTS.write_text(json.dumps(data, indent=0) + "\n")
    print(f"wrote {len(data['fingerprints'])} fingerprints of {len(rows)} questions to {FINGERPRINTS}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write":
        sys.exit(f"usage: python {sys.argv[0]} --write PATH/TO/dataset.zip")
    sys.path.insert(0, str(REPO))
    write_fingerprints(Path(sys.argv[2]))

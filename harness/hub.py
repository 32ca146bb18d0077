"""The Hugging Face Hub: which commit a revision resolved to.

Hub downloads land in cache folders named after the commit (``.../snapshots/<sha>/...``), so the
commit a moving revision such as ``main`` pointed to can be read off the path; where it cannot,
the hub is asked (None when it cannot be reached).
"""

from __future__ import annotations

import re
from pathlib import Path

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def commit_in_path(path: str | Path) -> str | None:
    """The last 40-hex-digit component of a path (a hub snapshot's commit), or None."""
    found = [part for part in Path(path).parts if _COMMIT.match(part)]
    return found[-1] if found else None


def dataset_commit(dataset_id: str, revision: str | None) -> str | None:
    """The commit a hub dataset revision resolves to, or None when the hub cannot be reached."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(dataset_id, revision=revision).sha
    except Exception:
        return None

"""Reading task data: local JSONL / parquet files, or Hugging Face Hub datasets by id and revision.

Every loader returns plain dict rows plus a *source* record for the run manifest: for a file its
path and sha256, for a hub dataset its id, config, split, the requested revision and the commit
it resolved to (looked up at load time, since a branch name like ``main`` moves).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.errors import DataError
from harness.hub import commit_in_path, dataset_commit
from harness.storage.jsonl import located_records


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# The folder that holds this package (the checkout, or ``site-packages/harness`` once installed),
# so configs can name the offline files shipped with it as ``tasks/offline/...``.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent


def local_path(path: str | Path) -> Path:
    """A data file path: as given (absolute, or relative to the working directory), else relative
    to the folder holding this package, so ``tasks/offline/FILE`` works from any directory."""
    given = Path(path).expanduser()
    if given.is_file() or given.is_absolute():
        return given
    shipped = PACKAGE_PARENT / given
    return shipped if shipped.is_file() else given


Located = tuple[str, dict]  # where a row came from ("FILE:LINE", "DATASET[split] row N") and the row


def read_rows(path: str | Path) -> list[Located]:
    """Rows of a local ``.jsonl``, ``.json`` (a list) or ``.parquet`` file, each with where it came from."""
    path = local_path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return located_records(path)
    if suffix == ".parquet":
        import pandas as pd

        return [(f"{path} row {n}", row) for n, row in enumerate(pd.read_parquet(path).to_dict(orient="records"), 1)]
    raise DataError(f"unsupported data file {path} (valid: .jsonl, .json, .parquet)")


def file_source(path: str | Path) -> dict:
    path = local_path(path)
    return {"kind": "file", "path": str(path.resolve()), "sha256": sha256_file(path)}


def load_hub_rows(dataset_id: str, split: str, revision: str | None = None, config: str | None = None) -> tuple[list[Located], dict]:
    """Rows of a hub dataset (with where they came from) and its source record. Raises DataError
    with advice when offline."""
    try:
        import datasets

        ds = datasets.load_dataset(dataset_id, config, split=split, revision=revision)
    except Exception as err:  # network, gating, missing config...
        raise DataError(
            f"could not load hub dataset {dataset_id!r} (config={config!r}, split={split!r}, "
            f"revision={revision!r}): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            "Without internet access, point the task at a local file: task.data.path=FILE"
        ) from None
    source = {
        "kind": "hub",
        "id": dataset_id,
        "config": config,
        "split": split,
        "revision": revision,
        "resolved_revision": _resolved_from_cache(ds) or dataset_commit(dataset_id, revision),
    }
    return [(f"{dataset_id}[{split}] row {n}", dict(row)) for n, row in enumerate(ds, 1)], source


def _resolved_from_cache(ds) -> str | None:
    """The commit hash in a downloaded dataset's cache path, if it has one."""
    for entry in getattr(ds, "cache_files", None) or []:
        commit = commit_in_path(entry.get("filename", ""))
        if commit:
            return commit
    return None


def load_rows(data_cfg: dict) -> tuple[list[Located], dict]:
    """Rows and source from a task's ``data`` config: ``path`` (local file) wins over ``hub``."""
    path = data_cfg.get("path")
    if path:
        return read_rows(path), file_source(path)
    hub = data_cfg.get("hub")
    if not hub:
        raise DataError("the task's data config names neither a local path nor a hub dataset")
    return load_hub_rows(hub, data_cfg.get("split", "train"), data_cfg.get("revision"), data_cfg.get("config"))


def require(row: dict, *fields: str) -> None:
    """ValueError naming the first missing field (and the fields the row has)."""
    for name in fields:
        if name not in row:
            raise ValueError(f"no field {name!r} (the row has: {', '.join(sorted(map(str, row))) or 'none'})")

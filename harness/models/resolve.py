"""Resolving a model config to a local folder, and recording exactly which weights were used.

``configs/model/NAME.yaml`` names a hub id (``path``) with an optional pinned ``revision``, or a
local folder. Models with ``build: <preset>`` are tiny random-weight models that
``harness.models.tiny`` builds on first use (no network needed). The resolved revision (the commit a
branch pointed to when the model was loaded, or a fingerprint of a local folder) goes into the
run manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ModelError
from harness.hub import commit_in_path


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: its local folder and what it is."""

    name: str
    path: str
    requested: str
    revision: str | None
    resolved_revision: str | None
    fingerprint: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def resolve_model(model_cfg: dict) -> ResolvedModel:
    """Find (or build, or download) the model a config names; raises ModelError with advice."""
    name = model_cfg.get("name", "?")
    path = str(model_cfg.get("path") or "")
    revision = model_cfg.get("revision")
    build = model_cfg.get("build")
    if not path:
        raise ModelError(f"model {name!r} has no path")
    if build:
        from harness.models import tiny

        folder = tiny.ensure(Path(path).expanduser(), preset=build, seed=int(model_cfg.get("build_seed", 0)))
        return ResolvedModel(name, str(folder.resolve()), path, None, None, tiny.fingerprint(folder))
    local = Path(path).expanduser()
    if local.is_dir():
        resolved = local.resolve()
        return ResolvedModel(name, str(resolved), path, revision, commit_in_path(resolved), folder_fingerprint(resolved))
    if path.startswith((".", "/", "~")):
        raise ModelError(f"model folder not found: {path}")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(path, revision=revision)
    except Exception as err:
        raise ModelError(
            f"could not download model {path!r} (revision {revision!r}) from the Hugging Face Hub: "
            f"{type(err).__name__}. Without internet access, download it elsewhere and set model.path=/local/folder"
        ) from None
    resolved = Path(folder).resolve()
    return ResolvedModel(name, folder, path, revision, commit_in_path(resolved), folder_fingerprint(resolved))


WHOLE = 8 << 20  # files up to this size are hashed whole (configs, tokenizers, small weights)
EDGE = 1 << 20  # of larger files (weight shards), the first and last MiB are hashed with the size


def folder_fingerprint(folder: str | Path) -> str:
    """A quick sha256 of a model folder, for the manifest: every file's relative path and size,
    the bytes of every file up to 8 MiB, and the first and last MiB of larger ones (a
    safetensors shard begins with its tensor index). Seconds for a 60 GB model; hidden entries
    (``.git``, ``.cache``) are left out."""
    root = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        size = file.stat().st_size
        digest.update(f"{rel.as_posix()}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= WHOLE:
                digest.update(handle.read())
            else:
                digest.update(handle.read(EDGE))
                handle.seek(size - EDGE)
                digest.update(handle.read(EDGE))
    return digest.hexdigest()

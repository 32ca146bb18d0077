"""Grading in worker processes with a hard timeout per item, so no answer can hang a run.

Each worker is a separate process (started from a fork server, never forked from a process that
holds model threads) in its own process group. A worker that overruns its item's deadline is
killed with its whole group (any programs a grader started too), the item is graded
``verdict="timeout"``, and a fresh worker takes its place. A worker that dies is replaced and
its item graded ``verdict="error"``. The harness never waits on a grader longer than the timeout.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

_CONTEXT = None
READY = "ready"
STARTUP_TIMEOUT = 300.0


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        if mp.get_start_method(allow_none=True) not in (None, "fork", "spawn", "forkserver"):
            # e.g. inside joblib's loky workers (a parallel Hydra launcher): children inherit the
            # global start method by name and cannot load "loky"
            mp.set_start_method("forkserver", force=True)
        _CONTEXT = mp.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["harness.tasks"])
    return _CONTEXT


def failed_grade(verdict: str, message: str) -> dict:
    return {"correct": False, "extracted": None, "verdict": verdict, "details": {"error": message}}


def grade_one(task_name: str, cfg: dict, problem: dict, completion: str, meta: dict) -> dict:
    """Grade in this process (no timeout): what a worker runs."""
    from harness.tasks import get_task

    try:
        return get_task(task_name).grade(problem, completion, meta, cfg).to_dict()
    except Exception as err:  # a grader bug must not stop the run; record it
        return failed_grade("error", f"{type(err).__name__}: {err}")


def _worker_main(conn: Connection, preload: tuple[str, ...]) -> None:
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from harness.tasks import get_task

    try:
        for name in preload:  # imports count against no item's deadline
            get_task(name)
    except Exception as err:
        conn.send(f"{type(err).__name__}: {err}")
        return
    conn.send(READY)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_id, args = message
        conn.send((job_id, grade_one(*args)))


@dataclass
class _Worker:
    process: mp.Process
    conn: Connection
    job: tuple | None = None
    deadline: float = 0.0
    ready: bool = False

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.join(timeout=5)
        self.conn.close()


class GradingPool:
    """Grades items in parallel; ``submit`` never blocks, ``poll``/``drain`` return results.

    Results are ``(key, grade_dict)`` pairs, in completion order. ``preload`` names tasks whose
    modules each worker imports before it takes work, so that import time never counts against
    an item's timeout.
    """

    def __init__(self, workers: int = 2, timeout: float = 30.0, preload: tuple[str, ...] = ()):
        if workers < 1:
            raise ValueError(f"grading workers must be >= 1, got {workers}")
        if not timeout > 0:
            raise ValueError(f"grading timeout must be > 0 seconds, got {timeout}")
        self.size = workers
        self.timeout = float(timeout)
        self.preload = tuple(preload)
        self._workers: list[_Worker] = []
        self._queue: deque[tuple] = deque()
        self._pending = 0

    # -- lifecycle -------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        parent, child = _context().Pipe()
        process = _context().Process(target=_worker_main, args=(child, self.preload), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent, deadline=time.monotonic() + STARTUP_TIMEOUT)

    def close(self) -> None:
        for worker in self._workers:
            if worker.job is None:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
                worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.kill()
        self._workers = []

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- work --------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Items submitted and not yet returned."""
        return self._pending

    def submit(self, key: Hashable, task_name: str, cfg: dict, problem: dict, completion: str, meta: dict) -> None:
        self._queue.append((key, (task_name, cfg, problem, completion, meta)))
        self._pending += 1
        self._dispatch()

    def _dispatch(self) -> None:
        while len(self._workers) < min(self.size, self._pending):
            self._workers.append(self._spawn())
        while self._queue:
            idle = next((w for w in self._workers if w.ready and w.job is None), None)
            if idle is None:
                return
            job = self._queue.popleft()
            try:
                idle.conn.send(job)
            except OSError:
                self._replace(idle)
                self._queue.appendleft(job)
                continue
            idle.job = job
            idle.deadline = time.monotonic() + self.timeout

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.remove(worker)

    def poll(self, timeout: float = 0.0) -> list[tuple[Hashable, dict]]:
        """Results ready within ``timeout`` seconds (0: only those ready now)."""
        self._dispatch()
        waiting = [w for w in self._workers if w.job is not None or not w.ready]
        if not waiting:
            return []
        now = time.monotonic()
        wait_for = max(0.0, min(timeout, min(w.deadline for w in waiting) - now))
        ready = set(wait([w.conn for w in waiting], timeout=wait_for))
        results = []
        for worker in waiting:
            if not worker.ready:
                self._start(worker, worker.conn in ready)
                continue
            key = worker.job[0]
            if worker.conn in ready:
                try:
                    _, grade = worker.conn.recv()
                except (EOFError, OSError):
                    grade = failed_grade("error", f"grading worker died (exit code {worker.process.exitcode})")
                    self._replace(worker)
                else:
                    worker.job = None
                results.append((key, grade))
            elif time.monotonic() >= worker.deadline:
                self._replace(worker)
                results.append((key, failed_grade("timeout", f"grading exceeded the hard timeout of {self.timeout:g} s")))
        self._pending -= len(results)
        self._dispatch()
        return results

    def _start(self, worker: _Worker, has_message: bool) -> None:
        """Mark a starting worker ready; raise if it failed, or did not start in time."""
        if not has_message and time.monotonic() < worker.deadline:
            return
        try:
            message = worker.conn.recv() if has_message else f"no answer within {STARTUP_TIMEOUT:g} s"
        except (EOFError, OSError):
            message = f"it exited with code {worker.process.exitcode}"
        if message == READY:
            worker.ready = True
            return
        self._replace(worker)
        raise RuntimeError(f"a grading worker failed to start: {message}")

    def drain(self) -> Iterator[tuple[Hashable, dict]]:
        """Every remaining result, as it arrives."""
        while self._pending:
            yield from self.poll(timeout=1.0)


def grade_many(
    items: Iterable[tuple[str, dict, dict, str, dict]], workers: int = 2, timeout: float = 30.0, progress=None
) -> list[dict]:
    """Grade ``(task_name, cfg, problem, completion, meta)`` items; grades in input order."""
    items = list(items)
    grades: list[dict | None] = [None] * len(items)
    with GradingPool(workers, timeout, preload=tuple(sorted({item[0] for item in items}))) as pool:
        for index, item in enumerate(items):
            pool.submit(index, *item)
        for index, grade in pool.drain():
            grades[index] = grade
            if progress is not None:
                progress.update(1)
    return grades  # type: ignore[return-value]


def grader_config(task_cfg: dict, timeout: float | None = None) -> dict:
    """The task config graders see: ``timeout`` (``grading.timeout``), when set, replaces the task's
    own, so a grader that budgets its time (LiveCodeBench) knows the hard limit it runs under."""
    if timeout is None:
        return task_cfg
    return {**task_cfg, "grader": {**(task_cfg.get("grader") or {}), "timeout": timeout}}


def grading_timeout(task_cfg: dict, timeout: float | None = None) -> float:
    """The hard timeout per item: ``timeout`` if set, else the task's ``grader.timeout`` (30 s)."""
    return float((grader_config(task_cfg, timeout).get("grader") or {}).get("timeout") or 30)

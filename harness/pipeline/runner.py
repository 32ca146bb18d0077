"""Executing runs: requests to one engine, completions to storage, grades from worker processes.

:func:`execute` serves any number of runs of the same model with one engine, all at once, so an
accelerator never idles while one run's last long answers finish; each completion is journalled
as soon as it arrives, graded in a worker process, and appended to its own run's
``samples.jsonl``. :func:`run` plans runs from resolved configs and executes them, reusing the
loaded engine across calls (the jobs of a sweep that share a model), and writes a run directory
only while it holds the run's lock.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

from harness.engines import Engine, Request, engine_class
from harness.errors import ConfigError
from harness.pipeline.config import validate
from harness.pipeline.grading import GradingPool, grader_config, grading_timeout
from harness.pipeline.identity import run_dir
from harness.pipeline.manifest import write_manifest
from harness.pipeline.plan import RunPlan, prepare
from harness.pipeline.records import fixed_grade, generation_record, with_grade, write_summary
from harness.storage import LockBusy, RunDir

log = logging.getLogger("harness")

_cached: dict = {"key": None, "engine": None}


def get_engine(cfg: dict) -> Engine:
    """The engine for a config, reusing the one already loaded when model and engine match."""
    key = json.dumps({"model": cfg["model"], "engine": cfg["engine"]}, sort_keys=True, default=str)
    if _cached["key"] != key:
        release_engine()
        log.info("loading engine %s with model %s", cfg["engine"]["name"], cfg["model"]["name"])
        _cached["engine"] = engine_class(cfg["engine"]["name"])(cfg["model"], cfg["engine"])
        _cached["key"] = key
    return _cached["engine"]


def release_engine() -> None:
    """Free the cached engine (and its accelerator memory)."""
    if _cached["engine"] is not None:
        _cached["engine"].close()
    _cached.update(key=None, engine=None)


def run(configs: list[dict]) -> list[dict]:
    """Run (or resume) evaluations from resolved config dicts with one engine; return summaries.

    Configs that name the same run (e.g. Standard at two betas) are run once. A run directory is
    written by one process at a time, the holder of its lock (``owner.lock``): runs that another
    process holds are taken up after this process's own, once their owner lets go, and skipped
    with a one-line note when the owner completed them.
    """
    unique: dict[Path, dict] = {}
    for cfg in configs:
        validate(cfg)
        unique.setdefault(run_dir(cfg), cfg)
    engine_keys = {json.dumps([c["model"], c["engine"]], sort_keys=True, default=str) for c in unique.values()}
    if len(engine_keys) > 1:
        raise ConfigError("all cells of a grid must share the model and the engine settings")
    locks = {path: RunDir(path).lock() for path in unique}
    owned, busy = [], {}
    for path, lock in locks.items():
        try:
            lock.acquire(wait=False)
            owned.append(path)
        except LockBusy as err:
            busy[path] = str(err)  # the owner, for the note
    started = False
    try:
        summaries = _run_owned([unique[path] for path in owned])
        started = True
    finally:
        _release(owned, locks, started)
    if busy:
        summaries.update(_take_over(busy, unique, locks))
    return [summaries[path] for path in unique]


def _take_over(busy: dict[Path, str], unique: dict[Path, dict], locks: dict) -> dict[Path, dict]:
    """Runs that other processes held: wait for each, then skip it if its owner completed it, else run it."""
    log.info("%d run(s) held by other processes; this job takes them up once they are free", len(busy))
    started = False
    try:
        for path in sorted(busy):  # one order for every process: waiters never wait on each other in a cycle
            locks[path].acquire(wait=True)
        summaries, rest = {}, []
        for path in busy:
            summary = complete_summary(path)
            if summary is None:
                rest.append(unique[path])
            else:
                log.info("run %s was completed by %s; skipped", path, busy[path])
                summaries[path] = summary
        summaries.update(_run_owned(rest))
        started = True
        return summaries
    finally:
        _release([path for path in busy if locks[path].held], locks, started)


def _release(paths: list[Path], locks: dict, started: bool) -> None:
    """Let go of runs' locks; runs that never started (their engine failed) leave nothing behind."""
    for path in paths:
        locks[path].release()
        if not started:
            RunDir(path).remove_if_unused()


def complete_summary(path: Path) -> dict | None:
    """The summary of a complete run directory, or None."""
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("complete") else None


def _run_owned(configs: list[dict]) -> dict[Path, dict]:
    """Plan and execute runs whose locks this process holds, with one engine."""
    if not configs:
        return {}
    plans = [prepare(cfg) for cfg in configs]
    engine = get_engine(configs[0]) if needs_engine(plans) else None
    summaries = execute(plans, engine, progress=bool(configs[0].get("progress", True)))
    return {plan.run.path: summary for plan, summary in zip(plans, summaries)}


def needs_engine(plans: list[RunPlan]) -> bool:
    return any(plan.requests for plan in plans)


def _timeout(plan: RunPlan) -> float:
    return grading_timeout(plan.cfg["task"], (plan.cfg.get("grading") or {}).get("timeout"))


def _grader_config(plan: RunPlan) -> dict:
    return grader_config(plan.cfg["task"], (plan.cfg.get("grading") or {}).get("timeout"))


class _ContextCuts:
    """Says once per run when the model's context cuts generation short (a sample's effective
    ``max_tokens`` below the requested one) or leaves a prompt no room at all."""

    def __init__(self, context_len: int | None):
        self.context_len = context_len
        self.said: set[tuple[str, str]] = set()

    def note(self, plan: RunPlan, record: dict) -> None:
        requested, budget = record["sampling"]["max_tokens"], record.get("max_tokens_effective")
        if budget is None or budget >= requested:
            return
        kind = "too_long" if record["finish_reason"] == "prompt_too_long" else "cut"
        if (plan.run.path.name, kind) in self.said:
            return
        self.said.add((plan.run.path.name, kind))
        context = f"the model's context (max_model_len={self.context_len})"
        if kind == "too_long":
            log.warning("run %s: problem %s's prompt (%d tokens) leaves no room in %s; its samples are recorded as "
                        "prompt_too_long and count as wrong (said once per run)", plan.run.path.name,
                        record["problem_id"], record["prompt_tokens"], context)
        else:
            log.warning("run %s: %s cuts generation short: problem %s's %d-token prompt leaves %d of "
                        "sampling.max_tokens=%d (each sample records its max_tokens_effective; said once per run)",
                        plan.run.path.name, context, record["problem_id"], record["prompt_tokens"], budget, requested)


def execute(plans: list[RunPlan], engine: Engine | None, progress: bool = True) -> list[dict]:
    """Generate and grade everything the runs are missing, with one engine; return summaries.

    ``engine`` may be None when nothing is left to generate (only journalled samples to grade).
    """
    from tqdm import tqdm

    if engine is None and needs_engine(plans):
        raise ValueError("samples are missing and no engine was given")
    if engine is not None:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        engine_info = engine.info()
        for plan in plans:
            if plan.requests or not (plan.run.path / "manifest.json").exists():
                write_manifest(plan.run.path, plan.cfg, plan.task, plan.source, engine, engine_info, started)
    # Every request of every run goes to the engine at once, under an id that names its run.
    owners: dict[str, tuple[int, RunPlan, str]] = {}
    requests: list[Request] = []
    for number, plan in enumerate(plans):
        for request in plan.requests:
            uid = f"{number}|{request.id}"
            owners[uid] = (number, plan, request.id)
            requests.append(Request(**{**request.__dict__, "id": uid}))
    regrade = sum(len(p.to_grade) for p in plans)
    total_grades = len(requests) + regrade
    if total_grades:
        log.info("%d run(s): %d samples to generate, %d to grade", len(plans), len(requests), total_grades)
    workers = int((plans[0].cfg.get("grading") or {}).get("workers", 2))
    timeout = max(_timeout(plan) for plan in plans)
    gen_bar = tqdm(total=len(requests), desc="generate", unit="sample", disable=not progress or not requests)
    grade_bar = tqdm(total=total_grades, desc="grade", unit="sample", disable=not progress or not total_grades)
    records: dict[tuple[int, str], tuple[RunPlan, dict]] = {}

    def collect(results) -> None:
        for (number, key), grade in results:
            plan, record = records.pop((number, key))
            plan.run.append_sample(with_grade(record, grade))
            grade_bar.update(1)

    cut = _ContextCuts(getattr(engine, "context_len", None))
    t0 = time.perf_counter()
    try:
        with GradingPool(workers, timeout, preload=tuple(sorted({p.task.name for p in plans}))) as pool:

            def submit(number: int, plan: RunPlan, record: dict) -> None:
                records[(number, record["key"])] = (plan, record)
                if (grade := fixed_grade(record)) is not None:
                    collect([((number, record["key"]), grade)])
                    return
                problem = plan.problem(record["problem_id"])
                pool.submit(
                    (number, record["key"]), plan.task.name, _grader_config(plan), problem, record["completion"],
                    record.get("prompt_meta") or {},
                )

            for number, plan in enumerate(plans):
                for record in plan.to_grade:
                    submit(number, plan, record)
            for request, completion in engine.generate(requests) if requests else ():
                number, plan, key = owners[request.id]
                record = generation_record(plan, key, completion)
                cut.note(plan, record)
                plan.run.append_generation(record)
                submit(number, plan, record)
                gen_bar.update(1)
                collect(pool.poll())
            gen_bar.close()
            collect(pool.drain())
    finally:
        gen_bar.close()
        grade_bar.close()
        for plan in plans:
            plan.run.close()
    if requests:
        log.info("generated %d samples in %.1f s", len(requests), time.perf_counter() - t0)
        engine_info = engine.info()  # again: MoI memory peaks, preemptions and counts are known now
        for plan in plans:
            if plan.requests:
                write_manifest(plan.run.path, plan.cfg, plan.task, plan.source, engine, engine_info, started)
    summaries = []
    for plan in plans:
        plan.run.finish()
        plan.requests, plan.to_grade = [], []
        summaries.append(write_summary(plan.run, plan.cfg, plan.problems))
    return summaries

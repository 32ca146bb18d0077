"""Executing run cells: requests to the engine, completions to storage, grades from workers.

A *cell* is one run: one setting of model x task x method x sampling x seed x engine, with its
own run directory. :func:`execute` serves any number of cells of the same model with one
engine, all at once, so an accelerator never idles while one cell's last long answers finish;
each completion is journalled as soon as it arrives, graded in a worker process, and appended
to its own cell's ``samples.jsonl``. Re-running a cell generates only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import yaml

from harness import config as run_config
from harness import prompting
from harness.engines.base import Completion, Engine, Request
from harness.grading import GradingPool
from harness.manifest import environment
from harness.metrics import summarize
from harness.moi import MixSpec
from harness.storage import RunDir, sample_key, write_json
from tasks import Task, get_task

log = logging.getLogger("harness")


def request_seed(run_seed: int, problem_id: str, sample_index: int) -> int:
    """A sample's sampling seed: the same for every method, engine and batch."""
    digest = hashlib.sha256(f"{run_seed}:{problem_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class Cell:
    """One run: its resolved config, task, problems and directory."""

    cfg: dict
    task: Task
    problems: list[dict]
    source: dict
    run: RunDir
    spec: MixSpec
    requests: list[Request] = field(default_factory=list)
    to_grade: list[dict] = field(default_factory=list)
    prompts: dict[str, tuple] = field(default_factory=dict)
    _by_id: dict[str, dict] = field(default_factory=dict, repr=False)

    def problem(self, problem_id: str) -> dict:
        if not self._by_id:
            self._by_id = {p["id"]: p for p in self.problems}
        if problem_id not in self._by_id:
            raise KeyError(f"problem {problem_id!r} of a stored sample is not in the task's data")
        return self._by_id[problem_id]


_loaded: dict[str, tuple[list[dict], dict]] = {}


def load_problems(cfg: dict) -> tuple[Task, list[dict], dict]:
    """A config's task, its selected problems (``task.limit``) and data source; data is loaded
    once per task config, however many cells share it."""
    task = get_task(cfg["task"]["name"])
    key = json.dumps(cfg["task"], sort_keys=True, default=str)
    if key not in _loaded:
        if len(_loaded) > 16:
            _loaded.clear()
        _loaded[key] = task.load(cfg["task"])
    problems, source = _loaded[key]
    limit = cfg["task"].get("limit")
    return task, (problems[:limit] if limit is not None else problems), source


def prepare(cfg: dict) -> Cell:
    """Check a resolved config, load its task's data, and plan what is missing on disk."""
    run_config.validate(cfg)
    task, problems, source = load_problems(cfg)
    cell = Cell(cfg, task, problems, source, RunDir(run_config.run_dir(cfg)), run_config.mix_spec(cfg))
    (cell.run.path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _plan(cell)
    return cell


def _plan(cell: Cell) -> None:
    """Requests for samples that are neither graded nor journalled; journalled ones to grade."""
    cfg = cell.cfg
    done = {r["key"] for r in cell.run.samples()}
    journal = {r["key"]: r for r in cell.run.generations() if r["key"] not in done}
    sampling = cfg["sampling"]
    model_prompting = cfg["model"].get("prompting")
    for problem in cell.problems:
        task_prompt, meta = cell.task.prompt(problem, cfg["seed"], cfg["task"])
        prompt, prefix, thinking = prompting.apply(task_prompt, model_prompting, cell.task.name)
        meta = {**meta, "thinking": thinking}
        for index in range(int(cfg["task"].get("n_samples", 1))):
            key = sample_key(problem["id"], index)
            if key in done:
                continue
            if key in journal:
                cell.to_grade.append(journal[key])
                continue
            seed = request_seed(cfg["seed"], problem["id"], index)
            cell.prompts[key] = (problem, prompt, meta, seed)
            cell.requests.append(
                Request(
                    id=key,
                    prompt=prompt,
                    prefix=prefix,
                    mix=cell.spec,
                    temperature=float(sampling["temperature"]),
                    top_p=float(sampling["top_p"]),
                    top_k=int(sampling["top_k"]),
                    max_tokens=run_config.max_tokens(cfg),
                    stop=tuple(cell.task.stop(cfg["task"])),
                    seed=seed,
                )
            )


def _generation_record(cell: Cell, key: str, completion: Completion) -> dict:
    problem, prompt, meta, seed = cell.prompts[key]
    return {
        "key": key,
        "problem_id": problem["id"],
        "sample_index": int(key.rsplit("#", 1)[1]),
        "seed": seed,
        "prompt": prompt,
        "prompt_text": completion.prompt_text,
        "prompt_meta": meta,
        "completion": completion.text,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "mixed_steps": completion.mixed_steps,
        "method": cell.spec.to_extra_args(),
        "sampling": dict(cell.cfg["sampling"], max_tokens=run_config.max_tokens(cell.cfg)),
    }


def with_grade(record: dict, grade: dict) -> dict:
    """A sample record carrying its grade (replacing any earlier one)."""
    return {
        **record,
        "correct": bool(grade.get("correct")),
        "extracted": grade.get("extracted"),
        "verdict": grade.get("verdict"),
        "grade_details": grade.get("details", {}),
    }


def write_manifest(cell: Cell, engine: Engine, engine_info: dict, started: str) -> None:
    path = cell.run.path / "manifest.json"
    write_json(
        path,
        {
            "run": cell.run.path.name,
            "started": started,
            "identity": run_config.identity(cell.cfg),
            "model": _model_record(engine),
            "engine": engine_info,
            "dataset": cell.source,
            "task": {"name": cell.task.name, "version": cell.task.version},
            "seeds": {
                "run_seed": cell.cfg["seed"],
                "sample_seed": "sha256(f'{run_seed}:{problem_id}:{sample_index}')[:4] & 0x7fffffff",
            },
            **environment(),
        },
    )


def _model_record(engine: Engine) -> dict | None:
    info = getattr(engine, "model_info", None)
    return info.to_dict() if info is not None else None


def write_summary(run: RunDir, cfg: dict, problems: list[dict]) -> dict:
    """Summarise a run's graded samples (those of the selected problems) into summary.json."""
    problem_ids = {p["id"] for p in problems}
    samples = [s for s in run.samples() if s["problem_id"] in problem_ids]
    spec = run_config.mix_spec(cfg)
    summary = summarize(samples, len(problems) * int(cfg["task"].get("n_samples", 1)))
    summary.update(
        run=run.path.name,
        task=cfg["task"]["name"],
        model=cfg["model"]["name"],
        method=spec.method,
        beta=spec.beta if spec.method == "moi" else None,
        temperature=cfg["sampling"]["temperature"],
        top_p=cfg["sampling"]["top_p"],
        seed=cfg["seed"],
        engine=cfg["engine"]["name"],
    )
    write_json(run.path / "summary.json", summary)
    return summary


def grader_config(cfg: dict) -> dict:
    """The task config graders see: ``grading.timeout``, when set, replaces the task's own, so a
    grader that budgets its time (LiveCodeBench) knows the hard limit it runs under."""
    task, override = cfg["task"], (cfg.get("grading") or {}).get("timeout")
    if override is None:
        return task
    return {**task, "grader": {**(task.get("grader") or {}), "timeout": override}}


def grading_timeout(cfg: dict) -> float:
    return float((grader_config(cfg).get("grader") or {}).get("timeout") or 30)


def describe_plan(model: str, configs: list[dict]) -> str:
    """A dry run's report: cells, requests and the most tokens they could generate."""
    requests = tokens = 0
    estimated = set()
    counts: dict[str, int] = {}
    for cfg in configs:
        run_config.validate(cfg)
        key = json.dumps(cfg["task"], sort_keys=True, default=str)
        if key not in counts:
            task = cfg["task"]
            known = [s for s in (task.get("expected_size"), task.get("limit")) if s is not None]
            if known and not (task.get("data") or {}).get("path"):  # a hub set of known size: no download
                counts[key] = min(known)
                estimated.add(task["name"])
            else:
                counts[key] = len(load_problems(cfg)[1])
        n = counts[key] * int(cfg["task"].get("n_samples", 1))
        requests += n
        tokens += n * run_config.max_tokens(cfg)
    note = f" (sizes of {', '.join(sorted(estimated))} from the task configs' expected_size)" if estimated else ""
    return f"model {model}: {len(configs)} cells, {requests} requests, at most {tokens} generated tokens{note}"


def needs_engine(cells: list[Cell]) -> bool:
    return any(cell.requests for cell in cells)


def execute(cells: list[Cell], engine: Engine | None, progress: bool = True) -> list[dict]:
    """Generate and grade everything the cells are missing, with one engine; return summaries.

    ``engine`` may be None when nothing is left to generate (only journalled samples to grade).
    """
    from tqdm import tqdm

    if engine is None and needs_engine(cells):
        raise ValueError("samples are missing and no engine was given")
    if engine is not None:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        engine_info = engine.info()
        for cell in cells:
            if cell.requests or not (cell.run.path / "manifest.json").exists():
                write_manifest(cell, engine, engine_info, started)
    owners: dict[str, tuple[int, Cell, str]] = {}
    requests: list[Request] = []
    for number, cell in enumerate(cells):
        for request in cell.requests:
            uid = f"{number}|{request.id}"
            owners[uid] = (number, cell, request.id)
            requests.append(Request(**{**request.__dict__, "id": uid}))
    regrade = sum(len(c.to_grade) for c in cells)
    total_grades = len(requests) + regrade
    if total_grades:
        log.info("%d cell(s): %d samples to generate, %d to grade", len(cells), len(requests), total_grades)
    workers = int((cells[0].cfg.get("grading") or {}).get("workers", 2))
    timeout = max(grading_timeout(cell.cfg) for cell in cells)
    gen_bar = tqdm(total=len(requests), desc="generate", unit="sample", disable=not progress or not requests)
    grade_bar = tqdm(total=total_grades, desc="grade", unit="sample", disable=not progress or not total_grades)
    records: dict[tuple[int, str], tuple[Cell, dict]] = {}

    def collect(results) -> None:
        for (number, key), grade in results:
            cell, record = records.pop((number, key))
            cell.run.append_sample(with_grade(record, grade))
            grade_bar.update(1)

    t0 = time.perf_counter()
    try:
        with GradingPool(workers, timeout, preload=tuple(sorted({c.task.name for c in cells}))) as pool:

            def submit(number: int, cell: Cell, record: dict) -> None:
                problem = cell.problem(record["problem_id"])
                records[(number, record["key"])] = (cell, record)
                pool.submit(
                    (number, record["key"]), cell.task.name, grader_config(cell.cfg), problem, record["completion"],
                    record.get("prompt_meta") or {},
                )

            for number, cell in enumerate(cells):
                for record in cell.to_grade:
                    submit(number, cell, record)
            for request, completion in engine.generate(requests) if requests else ():
                number, cell, key = owners[request.id]
                record = _generation_record(cell, key, completion)
                cell.run.append_generation(record)
                submit(number, cell, record)
                gen_bar.update(1)
                collect(pool.poll())
            gen_bar.close()
            collect(pool.drain())
    finally:
        gen_bar.close()
        grade_bar.close()
        for cell in cells:
            cell.run.close()
    if requests:
        log.info("generated %d samples in %.1f s", len(requests), time.perf_counter() - t0)
        engine_info = engine.info()  # again: MoI memory peaks, preemptions and counts are known now
        for cell in cells:
            if cell.requests:
                write_manifest(cell, engine, engine_info, started)
    summaries = []
    for cell in cells:
        cell.run.finish()
        cell.requests, cell.to_grade = [], []
        summaries.append(write_summary(cell.run, cell.cfg, cell.problems))
    return summaries

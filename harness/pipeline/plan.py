"""Planning a run: its task's problems, and a request for every sample that is not on disk yet.

A run (one setting, one directory) becomes a :class:`RunPlan`: the requests still to generate,
and the journalled completions still to grade. Re-planning a run that is complete gives nothing
to do, so running the same command again resumes it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import yaml

from harness.engines.base import Request
from harness.methods import MethodSpec
from harness.pipeline import prompting
from harness.pipeline.config import max_tokens, method_spec, validate
from harness.pipeline.identity import run_dir
from harness.storage import RunDir, sample_key
from harness.tasks import Task, get_task


def request_seed(run_seed: int, problem_id: str, sample_index: int) -> int:
    """A sample's sampling seed: the same for every method, engine and batch."""
    digest = hashlib.sha256(f"{run_seed}:{problem_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class PlannedSample:
    """What a sample's record needs besides its completion: the problem, prompt, meta and seed."""

    problem: dict
    prompt: object
    meta: dict
    seed: int


@dataclass
class RunPlan:
    """One run to execute: its resolved config, task, problems, directory, and what is missing."""

    cfg: dict
    task: Task
    problems: list[dict]
    source: dict
    run: RunDir
    spec: MethodSpec
    requests: list[Request] = field(default_factory=list)
    to_grade: list[dict] = field(default_factory=list)
    planned: dict[str, PlannedSample] = field(default_factory=dict)
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
    once per task config, however many runs share it."""
    task = get_task(cfg["task"]["name"])
    key = json.dumps(cfg["task"], sort_keys=True, default=str)
    if key not in _loaded:
        if len(_loaded) > 16:
            _loaded.clear()
        _loaded[key] = task.load(cfg["task"])
    problems, source = _loaded[key]
    limit = cfg["task"].get("limit")
    return task, (problems[:limit] if limit is not None else problems), source


def view(cfg: dict, problems: list[dict]) -> tuple[list[str], int]:
    """Which samples an invocation needs: the selected problems' ids and the samples per problem."""
    return [str(p["id"]) for p in problems], int(cfg["task"].get("n_samples", 1))


def prepare(cfg: dict) -> RunPlan:
    """Check a resolved config, load its task's data, and plan what is missing on disk."""
    validate(cfg)
    task, problems, source = load_problems(cfg)
    plan = RunPlan(cfg, task, problems, source, RunDir(run_dir(cfg)), method_spec(cfg))
    (plan.run.path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _plan_missing(plan)
    return plan


def _plan_missing(plan: RunPlan) -> None:
    """Requests for samples that are neither graded nor journalled; journalled ones to grade."""
    cfg = plan.cfg
    done = {r["key"] for r in plan.run.samples()}
    journal = {r["key"]: r for r in plan.run.generations() if r["key"] not in done}
    sampling = cfg["sampling"]
    model_prompting = cfg["model"].get("prompting")
    for problem in plan.problems:
        task_prompt, meta = plan.task.prompt(problem, cfg["seed"], cfg["task"])
        prompt, prefix, thinking = prompting.apply(task_prompt, model_prompting, plan.task.name)
        meta = {**meta, "thinking": thinking}
        for index in range(int(cfg["task"].get("n_samples", 1))):
            key = sample_key(problem["id"], index)
            if key in done:
                continue
            if key in journal:
                plan.to_grade.append(journal[key])
                continue
            seed = request_seed(cfg["seed"], problem["id"], index)
            plan.planned[key] = PlannedSample(problem, prompt, meta, seed)
            plan.requests.append(
                Request(
                    id=key,
                    prompt=prompt,
                    prefix=prefix,
                    method=plan.spec,
                    temperature=float(sampling["temperature"]),
                    top_p=float(sampling["top_p"]),
                    top_k=int(sampling["top_k"]),
                    max_tokens=max_tokens(cfg),
                    stop=tuple(plan.task.stop(cfg["task"])),
                    seed=seed,
                )
            )


def problem_count(cfg: dict) -> tuple[int, bool]:
    """A run's number of problems as planning counts it without downloading anything: a hub set's
    size from its task config (``expected_size`` or ``limit``), else the loaded data's; and whether
    the size came from the config. Dry runs and grid shards use it, so both see the same sizes."""
    task = cfg["task"]
    known = [s for s in (task.get("expected_size"), task.get("limit")) if s is not None]
    if known and not (task.get("data") or {}).get("path"):  # a hub set of known size: no download
        return min(known), True
    return len(load_problems(cfg)[1]), False


def token_bound(cfg: dict) -> tuple[int, int]:
    """A run's requests and the most tokens they could generate (every sample at max_tokens)."""
    requests = problem_count(cfg)[0] * int(cfg["task"].get("n_samples", 1))
    return requests, requests * max_tokens(cfg)


def describe_plan(model: str, configs: list[dict]) -> str:
    """A dry run's report: runs, requests and the most tokens they could generate."""
    requests = tokens = 0
    estimated = set()
    for cfg in configs:
        validate(cfg)
        if problem_count(cfg)[1]:
            estimated.add(cfg["task"]["name"])
        n, bound = token_bound(cfg)
        requests += n
        tokens += bound
    note = f" (sizes of {', '.join(sorted(estimated))} from the task configs' expected_size)" if estimated else ""
    return f"model {model}: {len(configs)} cells, {requests} requests, at most {tokens} generated tokens{note}"

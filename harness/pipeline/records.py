"""The sample record (one line of ``samples.jsonl``) and the run summary built from the records.

A record stands alone (schema 2): besides the prompt, completion, token counts and grade it holds
the task and its version, the data it came from (file sha256 or hub revision), the problem's
gold answer as the task's grader reads it (``Task.gold``: AIME's answer, CountDown's numbers and
target; for GPQA the option permutation in ``prompt_meta`` suffices, and no question text is kept
beyond the run folder; LiveCodeBench names its tests by problem id and the data file's sha256),
the method with the parameters that determined it, the sampling settings and the method's own
counters. ``moi-grade RUN_DIR`` re-grades from the records alone where the task allows.
"""

from __future__ import annotations

from harness.engines.base import Completion
from harness.pipeline.config import max_tokens, method_spec
from harness.pipeline.identity import identity
from harness.pipeline.plan import RunPlan, view
from harness.stats import ids_digest, summarize
from harness.storage import RunDir, write_json

SCHEMA = 2


def data_reference(source: dict) -> dict:
    """Which data a sample came from: a file's sha256 (and member), or a hub id at its revision."""
    keys = ("kind", "sha256", "member", "id", "config", "split", "release", "revision", "resolved_revision")
    return {k: source[k] for k in keys if source.get(k) is not None}


def generation_record(plan: RunPlan, key: str, completion: Completion) -> dict:
    """A completion as it is journalled (before grading)."""
    planned = plan.planned[key]
    return {
        "schema": SCHEMA,
        "key": key,
        "problem_id": planned.problem["id"],
        "sample_index": int(key.rsplit("#", 1)[1]),
        "seed": planned.seed,
        "task": {"name": plan.task.name, "version": plan.task.version},
        "data": data_reference(plan.source),
        "gold": plan.task.gold(planned.problem),
        "prompt": planned.prompt,
        "prompt_text": completion.prompt_text,
        "prompt_meta": planned.meta,
        "completion": completion.text,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "max_tokens_effective": completion.max_tokens,
        "mixed_steps": completion.mixed_steps,
        "method_stats": completion.method_stats,
        "method": plan.spec.identity(),
        "sampling": dict(plan.cfg["sampling"], max_tokens=max_tokens(plan.cfg)),
    }


def fixed_grade(record: dict) -> dict | None:
    """The grade of a sample that no grader needs to see (a prompt too long for the model's context:
    nothing was generated, so it counts as wrong), or None."""
    if record.get("finish_reason") == "prompt_too_long":
        details = {"prompt_tokens": record.get("prompt_tokens"), "error": "the prompt leaves no room in the model's context"}
        return {"correct": False, "extracted": None, "verdict": "prompt_too_long", "details": details}
    return None


def with_grade(record: dict, grade: dict) -> dict:
    """A sample record carrying its grade (replacing any earlier one)."""
    return {
        **record,
        "correct": bool(grade.get("correct")),
        "extracted": grade.get("extracted"),
        "verdict": grade.get("verdict"),
        "grade_details": grade.get("details", {}),
    }


def write_summary(run: RunDir, cfg: dict, problems: list[dict]) -> dict:
    """Summarise the run's view (the selected problems, their first ``task.n_samples`` samples)
    into summary.json, with the run's identity and exactly which problems and samples it covers."""
    ids, n_samples = view(cfg, problems)
    wanted = set(ids)
    samples = [s for s in run.samples() if s["problem_id"] in wanted and int(s.get("sample_index", 0)) < n_samples]
    spec = method_spec(cfg)
    summary = summarize(samples, len(ids) * n_samples)
    summary.update(
        schema=SCHEMA,
        run=run.path.name,
        identity=identity(cfg),
        view={"problems": len(ids), "problem_ids": ids, "problem_ids_sha256": ids_digest(ids), "n_samples": n_samples},
        # short fields for people and earlier tools (the identity is what tables group by)
        task=cfg["task"]["name"],
        model=cfg["model"]["name"],
        method=spec.method,
        beta=spec.params.get("beta") if "beta" in spec.impl.searched else None,
        temperature=cfg["sampling"]["temperature"],
        top_p=cfg["sampling"]["top_p"],
        seed=cfg["seed"],
        engine=cfg["engine"]["name"],
    )
    write_json(run.path / "summary.json", summary)
    return summary

"""The sample record (one line of ``samples.jsonl``) and the run summary built from the records."""

from __future__ import annotations

from harness.engines.base import Completion
from harness.pipeline.config import max_tokens, method_spec
from harness.pipeline.plan import RunPlan
from harness.stats import summarize
from harness.storage import RunDir, write_json


def generation_record(plan: RunPlan, key: str, completion: Completion) -> dict:
    """A completion as it is journalled (before grading)."""
    planned = plan.planned[key]
    return {
        "key": key,
        "problem_id": planned.problem["id"],
        "sample_index": int(key.rsplit("#", 1)[1]),
        "seed": planned.seed,
        "prompt": planned.prompt,
        "prompt_text": completion.prompt_text,
        "prompt_meta": planned.meta,
        "completion": completion.text,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "mixed_steps": completion.mixed_steps,
        "method_stats": completion.method_stats,
        "method": plan.spec.identity(),
        "sampling": dict(plan.cfg["sampling"], max_tokens=max_tokens(plan.cfg)),
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


def write_summary(run: RunDir, cfg: dict, problems: list[dict]) -> dict:
    """Summarise a run's graded samples (those of the selected problems) into summary.json."""
    problem_ids = {p["id"] for p in problems}
    samples = [s for s in run.samples() if s["problem_id"] in problem_ids]
    spec = method_spec(cfg)
    summary = summarize(samples, len(problems) * int(cfg["task"].get("n_samples", 1)))
    summary.update(
        run=run.path.name,
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

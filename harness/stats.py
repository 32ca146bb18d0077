"""Statistics of graded samples: accuracy, clustered standard error, pass@k, McNemar; a run's summary."""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict


def clustered_stderr(values_by_problem: dict[str, list[float]]) -> float:
    """Standard error of the mean accuracy, problems as the sampling unit.

    The mean of per-problem means; its standard error is their sample standard deviation over
    sqrt(number of problems). With one sample per problem this is the usual binomial SE.
    """
    means = [sum(v) / len(v) for v in values_by_problem.values() if v]
    n = len(means)
    if n < 2:
        return 0.0
    mean = sum(means) / n
    var = sum((m - mean) ** 2 for m in means) / (n - 1)
    return math.sqrt(var / n)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct: 1 - C(n-c,k)/C(n,k)."""
    if k > n:
        raise ValueError(f"pass@k needs k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def ids_digest(ids) -> str:
    """A short hash of a problem set (its sorted ids): what tells two problem sets apart."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()[:16]


def method_counters(samples: list[dict]) -> dict:
    """The methods' own per-sample counters, summed up: for a number or flag its mean and how many
    samples have it; for a histogram (a list) the counts added bin by bin."""
    values: dict[str, list] = defaultdict(list)
    for sample in samples:
        for name, value in (sample.get("method_stats") or {}).items():
            if value is not None and name != "mixed_steps":
                values[name].append(value)
    out = {}
    for name, found in sorted(values.items()):
        if all(isinstance(v, list) for v in found):
            out[name] = [sum(column) for column in zip(*found)]
        elif all(isinstance(v, (int, float)) for v in found):
            out[name] = {"mean": sum(map(float, found)) / len(found), "samples": len(found)}
    return out


def _context_cut(sample: dict) -> bool:
    budget, requested = sample.get("max_tokens_effective"), (sample.get("sampling") or {}).get("max_tokens")
    return budget is not None and requested is not None and budget < requested


def summarize(samples: list[dict], expected: int | None = None) -> dict:
    """The summary of one run's graded samples."""
    by_problem: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        by_problem[str(s["problem_id"])].append(1.0 if s.get("correct") else 0.0)
    n = len(samples)
    correct = sum(1 for s in samples if s.get("correct"))
    tokens = [int(s.get("completion_tokens", 0)) for s in samples]
    mixed = [int(s["mixed_steps"]) for s in samples if s.get("mixed_steps") is not None]
    fed_back = sum(max(int(s.get("completion_tokens", 0)) - 1, 0) for s in samples if s.get("mixed_steps") is not None)
    summary = {
        "n": n,
        "n_expected": expected if expected is not None else n,
        "complete": expected is None or n >= expected,
        "n_problems": len(by_problem),
        "accuracy": correct / n if n else 0.0,
        "stderr": clustered_stderr(by_problem),
        "correct": correct,
        "mean_completion_tokens": sum(tokens) / n if n else 0.0,
        "max_completion_tokens": max(tokens, default=0),
        "mean_prompt_tokens": sum(int(s.get("prompt_tokens", 0)) for s in samples) / n if n else 0.0,
        "finish_reasons": dict(sorted(Counter(s.get("finish_reason", "?") for s in samples).items())),
        "verdicts": dict(sorted(Counter(s.get("verdict", "?") for s in samples).items())),
        # samples whose effective max_tokens the model's context cut below the requested one
        "context_cut": sum(1 for s in samples if _context_cut(s)),
        "mixed_steps": {
            "total": sum(mixed),
            "samples_with_mixing": sum(1 for m in mixed if m > 0),
            "fraction_of_fed_back_tokens": sum(mixed) / fed_back if fed_back else 0.0,
            "unknown": n - len(mixed),  # samples from engines that cannot count (a remote server)
        },
        "method_stats": method_counters(samples),
    }
    sizes = {len(v) for v in by_problem.values()}
    if len(sizes) == 1 and (size := sizes.pop()) > 1:
        counts = [(len(v), int(sum(v))) for v in by_problem.values()]
        summary["pass_at_k"] = {
            str(k): sum(pass_at_k(n_, c, k) for n_, c in counts) / len(counts) for k in (1, 2, 4, 8, 16, 32, 64) if k <= size
        }
    return summary


def mcnemar_p(moi_only: int, other_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pair counts (a binomial test at 1/2)."""
    from scipy.stats import binomtest

    if moi_only + other_only == 0:
        return 1.0
    return float(binomtest(moi_only, moi_only + other_only, 0.5).pvalue)

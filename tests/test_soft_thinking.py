"""Soft Thinking's rule and the reproducible noise it draws, against direct implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.methods import Rows, make_spec, noise
from harness.methods.batch import numeric_params
from harness.methods.mixing import candidates, filtered_distribution

V = 40
THINK_END = 7


def reference_filter(logits, temperature, top_k, top_p, min_p):
    """The official order on the whole vocabulary, in float64: softmax(logits / T), then top-k,
    top-p and min-p, each followed by renormalisation."""
    if temperature == 0:
        probs = torch.zeros(len(logits), dtype=torch.float64)
        probs[int(logits.argmax())] = 1.0
        return probs
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    order = torch.argsort(probs, descending=True)
    if top_k > 0:
        probs[order[top_k:]] = 0
        probs /= probs.sum()
    sorted_probs = probs[order]
    before = torch.cumsum(sorted_probs, 0) - sorted_probs
    drop = before >= top_p
    drop[0] = False
    probs[order[drop]] = 0
    probs /= probs.sum()
    probs[probs < min_p * probs.max()] = 0
    return probs / probs.sum()


def rows_for(specs, state=None, temperature=0.6, top_p=1.0, top_k=0, step=0, seeds=None) -> Rows:
    n = len(specs)
    params = [numeric_params(s) for s in specs]
    column = {name: torch.tensor([p[name] for p in params], dtype=torch.float32) for name in params[0]}
    state = state or {name: torch.full((n,), fill) for name, fill in specs[0].impl.state.items()}
    full = {"temperature": torch.full((n,), float(temperature)), "top_p": torch.full((n,), float(top_p)),
            "top_k": torch.full((n,), top_k, dtype=torch.long)}
    host = {name: v.numpy() for name, v in column.items()} | {k: v.numpy().astype(float) for k, v in full.items()}
    seeds = torch.arange(n) if seeds is None else seeds
    return Rows(column, state, specs[0].params, full["temperature"], full["top_p"], full["top_k"], seeds,
                torch.full((n,), step, dtype=torch.long), host)


@pytest.mark.parametrize(("temperature", "top_k", "top_p", "min_p"),
                         [(0.6, 0, 1.0, 0.0), (0.6, 30, 0.95, 0.001), (1.0, 5, 0.5, 0.0), (0.3, 0, 0.8, 0.05), (0.0, 0, 1.0, 0.0)])
def test_filters_follow_the_official_order(temperature, top_k, top_p, min_p):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(5, V, generator=gen) * 2
    n = len(logits)
    ids, probs, entropy = filtered_distribution(
        logits, torch.full((n,), temperature), torch.full((n,), top_k), torch.full((n,), top_p), torch.full((n,), min_p),
        candidates([top_k] * n, V))
    for row in range(n):
        dense = torch.zeros(V, dtype=torch.float64).scatter(0, ids[row], probs[row].double())
        torch.testing.assert_close(dense, reference_filter(logits[row], temperature, top_k, top_p, min_p), atol=1e-6, rtol=0)
        if temperature > 0:
            p = torch.softmax(logits[row].double() / temperature, -1)
            assert float(entropy[row]) == pytest.approx(float(-(p * p.log()).sum()), abs=1e-5)


def test_thinking_mixes_the_top_tokens_and_emits_the_most_probable():
    spec = make_spec("soft_thinking", max_topk=4, min_p=0.0, think_end_id=THINK_END, entropy_threshold=0.0)
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(1))
    logits[:, THINK_END] = -10  # never the most probable
    rows = rows_for([spec] * 3)
    prepared = spec.impl.prepare(logits, rows)
    fb = spec.impl.feedback(prepared, prepared.emitted, rows)
    probs = torch.softmax(logits / 0.6, -1)
    top = torch.topk(probs, 4)
    assert torch.equal(prepared.emitted, logits.argmax(-1))
    assert torch.equal(fb.ids, top.indices) and bool(fb.mixed.all())
    torch.testing.assert_close(fb.weights, top.values / top.values.sum(-1, keepdim=True))
    assert bool((prepared.state["thinking"] == 1).all())


def step_through(spec, logits_per_step, temperature=0.6):
    """Run the rule step by step for one row; returns (emitted tokens, mixed flags, final state)."""
    state = {name: torch.tensor([fill]) for name, fill in spec.impl.state.items()}
    emitted, mixed = [], []
    for step, logits in enumerate(logits_per_step):
        rows = rows_for([spec], state, temperature=temperature, step=step)
        prepared = spec.impl.prepare(logits[None], rows)
        fb = spec.impl.feedback(prepared, prepared.emitted, rows)
        emitted.append(int(prepared.emitted[0]))
        mixed.append(bool(fb.mixed[0]))
        state = prepared.state
    return emitted, mixed, {k: float(v[0]) for k, v in state.items()}


def test_cold_stop_emits_the_think_end_token_after_enough_low_entropy_steps():
    spec = make_spec("soft_thinking", entropy_threshold=0.5, length_threshold=3, think_end_id=THINK_END,
                     after_thinking_temperature=0.0)
    peaked = torch.full((V,), -20.0)
    peaked[3] = 5.0  # entropy ~ 0: every step counts
    flat = torch.linspace(0.0, 1.0, V)  # entropy near log V: resets the count
    emitted, mixed, state = step_through(spec, [peaked, peaked, flat, peaked, peaked, peaked, peaked])
    assert emitted[:5] == [3, 3, int(flat.argmax()), 3, 3] and emitted[5] == THINK_END  # the run restarted at step 2
    assert mixed == [True] * 5 + [False, False]  # the think-end token and what follows are fed as themselves
    assert state["thinking"] == 0 and state["cold_stop"] == 1 and state["thinking_ended_at"] == 5
    assert spec.impl.report(state) == {"thinking_ended_at": 5, "cold_stop": True}


def test_thinking_ends_when_the_model_emits_its_think_end_token():
    spec = make_spec("soft_thinking", entropy_threshold=0.01, length_threshold=256, think_end_id=THINK_END)
    ending = torch.zeros(V)
    ending[THINK_END] = 3.0
    noise = torch.randn(2, V, generator=torch.Generator().manual_seed(0))
    noise[:, THINK_END] = noise.min() - 1  # the first and last steps must not end thinking by chance
    emitted, mixed, state = step_through(spec, [noise[0], ending, noise[1]])
    assert emitted[1] == THINK_END and mixed == [True, False, False]
    assert spec.impl.report(state) == {"thinking_ended_at": 1, "cold_stop": False}


def test_after_thinking_tokens_follow_the_after_thinking_distribution():
    spec = make_spec("soft_thinking", after_thinking_temperature=1.0, after_thinking_top_k=6, think_end_id=THINK_END)
    logits = torch.randn(V, generator=torch.Generator().manual_seed(5))
    n = 4000
    state = {name: torch.full((n,), fill) for name, fill in spec.impl.state.items()}
    state["thinking"] = torch.zeros(n)
    rows = rows_for([spec] * n, state, seeds=torch.arange(n))
    emitted = spec.impl.prepare(logits.expand(n, V), rows).emitted
    expected = reference_filter(logits, 1.0, 6, 1.0, 0.0)
    observed = torch.bincount(emitted, minlength=V).double() / n
    assert set(torch.nonzero(observed).flatten().tolist()) <= set(torch.nonzero(expected).flatten().tolist())
    assert float((observed - expected).abs().max()) < 0.03
    again = spec.impl.prepare(logits.expand(n, V), rows).emitted
    assert torch.equal(emitted, again)  # a pure function of (seed, step)


def test_randomized_variants_keep_mixtures_normalised_and_emit_the_top_one():
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(2))
    for spec in (make_spec("soft_thinking", dirichlet_alpha=1.0, think_end_id=THINK_END),
                 make_spec("soft_thinking", gumbel_temperature=0.5, max_topk=5, think_end_id=THINK_END)):
        rows = rows_for([spec] * 6, seeds=torch.arange(6) + 11)
        prepared = spec.impl.prepare(logits, rows)
        fb = spec.impl.feedback(prepared, prepared.emitted, rows)
        torch.testing.assert_close(fb.weights.sum(-1), torch.ones(6))
        assert bool((fb.weights[:, :-1] >= fb.weights[:, 1:]).all())  # sorted, the emitted token first
        assert torch.equal(prepared.emitted, fb.ids[:, 0])
        other = spec.impl.prepare(logits, rows_for([spec] * 6, seeds=torch.arange(6) + 99))
        assert not torch.equal(other.kept["weights"], prepared.kept["weights"])  # the noise depends on the seed


def test_uniform_noise_is_a_pure_function_and_looks_uniform():
    seeds, steps = torch.arange(2000), torch.full((2000,), 3)
    u = noise.uniform(seeds, steps, 16)
    assert torch.equal(u, noise.uniform(seeds, steps, 16))
    assert not torch.equal(u, noise.uniform(seeds, steps + 1, 16)) and not torch.equal(u, noise.uniform(seeds, steps, 16, stream=1))
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert float(u.mean()) == pytest.approx(0.5, abs=0.01) and float(u.var()) == pytest.approx(1 / 12, abs=0.005)
    counts = np.histogram(u.numpy(), bins=10, range=(0, 1))[0]
    assert counts.min() > 0.9 * counts.mean()


@pytest.mark.parametrize("alpha", [0.2, 1.0, 5.0])
def test_gamma_noise_has_the_right_mean_and_variance(alpha):
    n = 20000
    draws = noise.gamma(torch.full((n, 1), alpha), torch.arange(n), torch.zeros(n, dtype=torch.long))[:, 0]
    assert float(draws.mean()) == pytest.approx(alpha, rel=0.05)
    assert float(draws.var()) == pytest.approx(alpha, rel=0.1)
    dirichlet = noise.dirichlet(torch.tensor([[1.0, 2.0, 0.0, 3.0]]).expand(n, 4), torch.arange(n), torch.zeros(n, dtype=torch.long))
    torch.testing.assert_close(dirichlet.sum(-1), torch.ones(n))
    assert float(dirichlet[:, 2].abs().max()) == 0.0
    torch.testing.assert_close(dirichlet.mean(0), torch.tensor([1 / 6, 2 / 6, 0.0, 3 / 6]), atol=0.01, rtol=0)
    assert math.isfinite(float(dirichlet.sum()))

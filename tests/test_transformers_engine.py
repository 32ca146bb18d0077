"""The transformers reference engine on the tiny model: the mixing reaches the model, and the
engine is deterministic and batch-independent (it is the oracle for the vLLM engine)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from harness.engines.base import Request
from harness.engines.transformers_engine import TransformersEngine
from harness.methods import example_specs, make_spec

PROMPTS = [
    "Using the numbers [3, 5, 7, 11], create an equation",
    [{"role": "user", "content": "What is 12 + 30? Put the answer in \\boxed{}."}],
    "x",
    "the answer is",
]


@pytest.fixture(scope="module")
def engine(tiny_model_cfg):
    engine = TransformersEngine(tiny_model_cfg, {"batch_size": 8})
    yield engine
    engine.close()


def run(engine, requests):
    return {request.id: completion for request, completion in engine.generate(requests)}


def greedy(prompt, mix, tokens=24, rid="r"):
    return Request(id=rid, prompt=prompt, method=mix, temperature=0.0, max_tokens=tokens)


def test_moi_changes_outputs_and_huge_beta_is_standard(engine):
    requests = []
    for i, prompt in enumerate(PROMPTS):
        requests += [
            greedy(prompt, make_spec(), rid=f"{i}/standard"),
            greedy(prompt, make_spec("moi", beta=1.0), rid=f"{i}/moi"),
            greedy(prompt, make_spec("moi", beta=1e9), rid=f"{i}/moi-huge"),
        ]
    out = run(engine, requests)
    changed = sum(out[f"{i}/moi"].token_ids != out[f"{i}/standard"].token_ids for i in range(len(PROMPTS)))
    assert changed >= 2
    for i in range(len(PROMPTS)):
        assert out[f"{i}/moi-huge"].token_ids == out[f"{i}/standard"].token_ids
        assert out[f"{i}/standard"].mixed_steps == 0
        moi_out = out[f"{i}/moi"]
        assert moi_out.mixed_steps == moi_out.completion_tokens - 1  # every generated input but the last


def test_outputs_do_not_depend_on_the_batch(engine):
    mixes = [make_spec(), make_spec("moi", beta=0.5), make_spec("direct_mixture"), make_spec("moi", beta=2.0)]
    batch = []
    for i, prompt in enumerate(PROMPTS):
        for j, mix in enumerate(mixes):
            batch.append(Request(id=f"{i}/{j}", prompt=prompt, method=mix, temperature=0.8, top_p=0.9, max_tokens=20, seed=100 + i))
    together = run(engine, batch)
    for request in batch[::3]:
        alone = run(engine, [request])[request.id]
        assert alone.token_ids == together[request.id].token_ids, request.id


def test_sampling_is_seeded_per_request(engine):
    requests = [Request(id=str(s), prompt="the answer is", method=make_spec("moi", beta=1.0), temperature=1.0, max_tokens=16, seed=s)
                for s in (1, 1, 2)]
    first, second = list(engine.generate(requests)), list(engine.generate(requests))
    assert [c.token_ids for _, c in first] == [c.token_ids for _, c in second]
    assert first[0][1].token_ids == first[1][1].token_ids
    assert first[0][1].token_ids != first[2][1].token_ids


def test_finish_reasons_and_counts(engine):
    out = run(engine, [greedy("x", make_spec(), tokens=7, rid="len")])["len"]
    assert (out.finish_reason, out.completion_tokens, len(out.token_ids)) == ("length", 7, 7)
    assert out.prompt_tokens == len(engine.tokenizer("x")["input_ids"])
    full = run(engine, [greedy("x", make_spec(), tokens=24, rid="a")])["a"]
    stop = full.text[5:8]
    cut = run(engine, [Request(id="s", prompt="x", temperature=0.0, max_tokens=24, stop=(stop,))])["s"]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert full.text.startswith(cut.text)


def test_chat_prompts_use_the_template_and_prefix(engine):
    request = Request(id="c", prompt=[{"role": "user", "content": "hi"}], prefix="<think>\n", temperature=0, max_tokens=2)
    out = run(engine, [request])["c"]
    assert out.prompt_text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"


def test_logprobs_are_the_raw_top_k_of_every_step(engine):
    out = run(engine, [Request(id="l", prompt="the answer is", temperature=0.0, max_tokens=10, logprobs=5),
                       greedy("the answer is", make_spec(), tokens=10, rid="none")])
    steps = out["l"].logprobs
    assert out["none"].logprobs is None and out["l"].token_ids == out["none"].token_ids
    assert len(steps) == out["l"].completion_tokens == 10
    for token, step in zip(out["l"].token_ids, steps):
        values = list(step.values())
        assert len(step) == 5 and values == sorted(values, reverse=True) and max(step, key=step.get) == token  # greedy
        assert 0 < sum(math.exp(v) for v in values) <= 1 + 1e-6


def test_replaying_its_own_tokens_reproduces_every_method(engine):
    """Forced to emit the tokens it chose itself, every method's mixing (state, noise, Cold Stop
    included) and every step's distribution come out exactly as in free running."""
    specs = example_specs()
    free = [Request(id=f"{i}", prompt="the answer is", method=spec, temperature=0.8, top_p=0.9, max_tokens=12, seed=7,
                    logprobs=3) for i, spec in enumerate(specs)]
    first = run(engine, free)
    replay = run(engine, [replace(r, forced_tokens=tuple(first[r.id].token_ids), max_tokens=50) for r in free])
    for request in free:
        a, b = first[request.id], replay[request.id]
        assert (b.token_ids, b.logprobs, b.mixed_steps, b.method_stats, b.finish_reason) == (
            a.token_ids, a.logprobs, a.mixed_steps, a.method_stats, a.finish_reason), str(request.method)
    assert {first[r.id].method_stats.get("cold_stop") for r in free} >= {True, False}  # Cold Stop was replayed too


def test_forced_tokens_are_emitted_and_the_method_mixes_from_them(engine):
    think_end = engine.facts["think_end_id"]
    forced = tuple(engine.tokenizer.encode(" one two three four five six", add_special_tokens=False))
    forced = forced[:2] + (think_end,) + forced[2:]
    methods = {"moi": make_spec("moi", beta=1.0), "soft": make_spec("soft_thinking", entropy_threshold=0.0)}
    free = {name: greedy("the answer is", spec, tokens=20, rid=name) for name, spec in methods.items()}
    out = run(engine, [*free.values(), *(replace(r, id=f"{r.id}/forced", forced_tokens=forced, logprobs=4) for r in free.values())])
    for name in methods:
        got = out[f"{name}/forced"]
        assert got.token_ids == list(forced) and got.finish_reason == "length"  # stops when they are used up
        assert (got.completion_tokens, got.max_tokens, len(got.logprobs)) == (len(forced),) * 3
        assert out[name].token_ids[:3] != got.token_ids[:3]  # the forced tokens are not what it would emit
    # Soft Thinking's state follows the forced tokens: thinking ends at the forced think-end token
    assert out["soft/forced"].method_stats["thinking_ended_at"] == 2
    assert out["soft/forced"].mixed_steps == 2 and out["moi/forced"].mixed_steps == len(forced) - 1
    with pytest.raises(ValueError, match="forced token 999999 is not a token id"):
        run(engine, [replace(free["moi"], forced_tokens=(1, 999999))])

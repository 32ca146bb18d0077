"""The transformers reference engine on the tiny model: the mixing reaches the model, and the
engine is deterministic and batch-independent (it is the oracle for the vLLM engine)."""

from __future__ import annotations

import pytest

from harness.engines.base import Request
from harness.engines.transformers_engine import TransformersEngine
from harness.methods import make_spec

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

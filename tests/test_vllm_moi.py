"""engine=vllm against engine=transformers: token-for-token equal greedy outputs (fp32).

Two in-process vLLM engines (eager, CPU): one roomy, where every method shares one batch, and one
squeezed (4 rows, 64-token steps, a 5-block KV cache) that forces row churn, chunked prefill and
preemptions. Both are shared by the tests of this module.
"""

from __future__ import annotations

import pytest

from harness.engines.base import Request
from harness.errors import ConfigError
from harness.methods import example_specs, make_spec

pytestmark = pytest.mark.vllm

# Every method at each of its examples: Standard, Direct Mixture, MoI (6), Soft Thinking (5).
SPECS = example_specs()
SOFT = [i for i, spec in enumerate(SPECS) if spec.method == "soft_thinking"]


def temperature(spec) -> float:
    """Greedy, or for Soft Thinking (whose tokens do not depend on sampling noise) 0.6, so that its
    thinking mixtures are soft."""
    return 0.6 if spec.method == "soft_thinking" else 0.0
WORDS = (
    "the answer number is create equation using basic arithmetic operations each only once show your work "
    "please reason step by step and put your final answer within boxed"
).split()
BLOCK_BYTES = 128 * 1024  # one CPU KV block of the tiny model: 128 tokens x 2 layers x (k, v) x 64 x fp32


def prompt_of(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(n_words))


def run(engine, requests) -> dict:
    return {request.id: completion for request, completion in engine.generate(requests)}


def assert_same(got: dict, want: dict, requests) -> None:
    for request in requests:
        a, b = got[request.id], want[request.id]
        where = f"request {request.id} ({request.method})"
        assert a.token_ids == b.token_ids, where
        assert a.text == b.text, where
        assert a.finish_reason == b.finish_reason, where
        assert a.prompt_tokens == b.prompt_tokens, where
        assert a.mixed_steps == b.mixed_steps, where
        assert a.method_stats == b.method_stats, where


@pytest.fixture(scope="module")
def reference(tiny_model_cfg):
    from harness.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_model_cfg, {"batch_size": 64})
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def engine(tiny_model_cfg):
    from harness.engines.vllm.engine import VLLMEngine

    engine = VLLMEngine(tiny_model_cfg, {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20, "max_num_seqs": 64})
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def squeezed(tiny_model_cfg):
    """4 rows, 64 tokens per step, 5 KV blocks of 128 tokens; default spec MoI beta=1."""
    from harness.engines.vllm.engine import VLLMEngine

    model_cfg = {**tiny_model_cfg, "max_model_len": 512}
    engine = VLLMEngine(
        model_cfg,
        {
            "enforce_eager": True,
            "kv_cache_memory_bytes": 5 * BLOCK_BYTES,
            "max_num_seqs": 4,
            "max_num_batched_tokens": 64,
            "enable_chunked_prefill": True,
            "additional_config": {"moi": {"method": "moi", "beta": 1.0}},
        },
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def one_batch(engine, reference):
    """Every method and beta, three prompts each, greedy, in one batch on both engines."""
    requests = [
        Request(id=f"{i}/{j}", prompt=prompt_of(i, 4 + 9 * i), method=spec, temperature=temperature(spec),
                max_tokens=14 + 3 * i, seed=17 * i + j)
        for i in range(3)
        for j, spec in enumerate(SPECS)
    ]
    return requests, run(engine, requests), run(reference, requests)


def test_every_method_in_one_batch_matches_transformers(one_batch):
    requests, got, want = one_batch
    assert_same(got, want, requests)


def expected_mixed_steps(request, completion) -> int:
    """Fed-back tokens that were mixtures: all of them for Direct Mixture and MoI, none for
    Standard, those before the think-end token for Soft Thinking."""
    fed_back = completion.completion_tokens - 1
    if request.method.method == "soft_thinking":
        ended = completion.method_stats["thinking_ended_at"]
        return fed_back if ended is None else min(ended, fed_back)
    return fed_back if request.method.mixed else 0


def test_mixed_steps_count_what_was_mixed(one_batch):
    requests, got, want = one_batch
    for request in requests:
        for engine in (got, want):
            assert engine[request.id].mixed_steps == expected_mixed_steps(request, engine[request.id]), request.id
    assert any(got[r.id].method_stats.get("cold_stop") for r in requests)  # the Cold Stop examples fired


def test_moi_changes_outputs(one_batch):
    requests, got, _ = one_batch
    standard = {r.id.split("/")[0]: got[r.id].token_ids for r in requests if r.method == make_spec()}
    moi = {r.id.split("/")[0]: got[r.id].token_ids for r in requests if r.method == make_spec("moi", beta=1.0)}
    assert any(standard[p] != moi[p] for p in standard)


def test_chat_prompt_and_stop_string_match(engine, reference):
    chat = [{"role": "user", "content": prompt_of(5, 12)}]
    requests = [
        Request(id=f"chat/{j}/{len(stop)}", prompt=chat, prefix="<think>\n", method=spec, temperature=temperature(spec),
                max_tokens=24, stop=stop)
        for j, spec in enumerate(SPECS[:4] + [SPECS[SOFT[1]]])
        for stop in ((), ("e", "zz"))
    ]
    got = run(engine, requests)
    assert_same(got, run(reference, requests), requests)
    assert {c.finish_reason for c in got.values()} == {"stop", "length"}


def test_sampled_outputs_repeat_with_the_same_seeds(engine):
    requests = [
        Request(id=f"s{i}/{j}", prompt=prompt_of(i, 6 + i), method=spec, temperature=0.8, top_p=0.9, top_k=50,
                max_tokens=12, seed=1000 * i + j)
        for i in range(3)
        for j, spec in enumerate(SPECS[:5])
    ]
    first = run(engine, requests)
    second = run(engine, list(reversed(requests)))
    assert {k: c.token_ids for k, c in first.items()} == {k: c.token_ids for k, c in second.items()}
    assert len({tuple(c.token_ids) for c in first.values()}) > 1


def test_churn_chunked_prefill_and_preemption_match_transformers(squeezed, reference):
    # Soft Thinking with its thinking ended early by Cold Stop (see the preemption test below)
    early = [make_spec("soft_thinking", entropy_threshold=100.0, length_threshold=5, dirichlet_alpha=1.0),
             make_spec("soft_thinking", entropy_threshold=100.0, length_threshold=4, gumbel_temperature=0.5,
                       after_thinking_temperature=0.0)]
    specs = [SPECS[i] for i in (0, 1, 2, 4, 5, SOFT[1], SOFT[2])] + early
    requests = [
        Request(id=f"p{i}", prompt=prompt_of(i, 150 if i == 0 else 5 + 7 * i), method=specs[i % len(specs)],
                temperature=temperature(specs[i % len(specs)]), max_tokens=100 + 10 * (i % 3), seed=i)
        for i in range(12)
    ]
    before = squeezed.num_preemptions()
    got = run(squeezed, requests)
    assert_same(got, run(reference, requests), requests)
    assert got["p0"].prompt_tokens > 64  # longer than max_num_batched_tokens: a chunked prefill
    assert squeezed.num_preemptions() > before
    summary = squeezed.moi_summary()
    assert summary["resumed_requests"] > 0 and summary["replayed_steps"] > 0


def test_process_default_applies_to_requests_without_settings(squeezed, reference):
    from vllm import SamplingParams

    prompts = [prompt_of(i, 8) for i in range(3)]
    ids = [reference.tokenizer(p)["input_ids"] for p in prompts]
    outs = squeezed.llm.generate(
        [{"prompt_token_ids": i} for i in ids], SamplingParams(temperature=0, max_tokens=12), use_tqdm=False
    )
    requests = [Request(id=str(i), prompt=p, method=make_spec("moi", beta=1.0), temperature=0, max_tokens=12)
                for i, p in enumerate(prompts)]
    want = run(reference, requests)
    assert [list(o.outputs[0].token_ids) for o in outs] == [want[r.id].token_ids for r in requests]


def test_malformed_request_is_refused_and_engine_goes_on(engine):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    for extra, words in (({"moi_method": "bogus"}, "unknown method"), ({"moi_beta": -1}, "beta"),
                         ({"moi_method": "moi", "moi_k": "x"}, "moi_k"), ({"moi_betta": 1}, "moi_betta"),
                         ({"moi_method": "soft_thinking", "moi_max_topk": 0}, "moi_max_topk"),
                         ({"moi_method": "soft_thinking", "moi_gumbel_temperature": -1}, "gumbel_temperature")):
        with pytest.raises(VLLMValidationError, match=words):
            engine.llm.generate([{"prompt_token_ids": [5, 6]}], SamplingParams(max_tokens=2, extra_args=extra),
                                use_tqdm=False)
    request = Request(id="after", prompt="the answer", method=make_spec("moi", beta=1.0), temperature=0, max_tokens=3)
    assert run(engine, [request])["after"].mixed_steps == 2


def test_refused_config_fails_with_one_line(tiny_model_cfg):
    from harness.engines.vllm.engine import VLLMEngine

    with pytest.raises(ConfigError) as err:
        VLLMEngine(tiny_model_cfg, {"enable_prefix_caching": True})
    message = str(err.value)
    assert "prefix_caching" in message and "\n" not in message


def test_worker_refuses_prefix_caching_for_any_vllm_tool(tiny_model_path):
    """Without the harness engine's pre-check, the worker itself refuses (any vLLM tool)."""
    from vllm import LLM

    from harness.engines.vllm import ENGINE_ARGS
    from harness.engines.vllm.settings import MoIConfigError

    with pytest.raises(MoIConfigError, match="enable_prefix_caching"):
        LLM(model=tiny_model_path, max_model_len=256, enforce_eager=True, distributed_executor_backend="uni",
            kv_cache_memory_bytes=8 << 20, **{**ENGINE_ARGS, "enable_prefix_caching": True})


def test_info_records_the_moi_path_and_memory(engine, one_batch):
    info = engine.info()
    assert "MoICPUModelRunner" in info["moi_path"]
    assert isinstance(info["moi_extra_memory_bytes"], int) and info["moi_extra_memory_bytes"] > 0
    assert info["moi"]["mixed_steps"] > 0
    assert info["vllm"].startswith("0.32")


def test_abandoned_generation_is_aborted_and_errors_name_the_request(engine):
    requests = [Request(id=f"a{i}", prompt=prompt_of(i, 6), method=SPECS[i % 4], temperature=0, max_tokens=5 + 20 * i)
                for i in range(4)]
    stream = engine.generate(requests)
    first, _ = next(stream)
    assert first.id == "a0"
    with pytest.raises(RuntimeError, match="already running"):
        next(engine.generate(requests))
    stream.close()  # the other three are aborted
    assert not engine.engine.has_unfinished_requests()
    assert len(run(engine, requests)) == 4


def test_the_context_caps_max_tokens_as_in_transformers(squeezed, tiny_model_cfg):
    """max_model_len=512 on both engines: prompts that leave fewer than max_tokens get what is left
    (the same tokens on both), prompts that leave nothing are prompt_too_long, the rest are untouched."""
    from harness.engines.transformers_engine import TransformersEngine

    reference = TransformersEngine({**tiny_model_cfg, "max_model_len": 512}, {"batch_size": 8})
    try:
        lengths = {n: len(reference.tokenizer(prompt_of(n, n))["input_ids"]) for n in (40, 300, 330, 400)}
        requests = [Request(id=f"c{n}", prompt=prompt_of(n, n), method=SPECS[n % 4], temperature=0, max_tokens=120)
                    for n in lengths]
        got, want = run(squeezed, requests), run(reference, requests)
    finally:
        reference.close()
    assert_same(got, want, requests)
    for n, length in lengths.items():
        budget = min(120, 512 - length)
        assert got[f"c{n}"].max_tokens == want[f"c{n}"].max_tokens == max(budget, 0)
        assert (got[f"c{n}"].finish_reason == "prompt_too_long") == (budget < 1)
        assert got[f"c{n}"].completion_tokens <= max(budget, 0)
    assert {c.finish_reason for c in got.values()} >= {"prompt_too_long"}
    assert sum(0 < 512 - length < 120 for length in lengths.values()) >= 1  # some cut, not all


def test_more_requests_than_the_submission_window(engine):
    requests = [Request(id=f"w{i}", prompt=f"the answer {i}", method=SPECS[i % 4], temperature=0, max_tokens=3)
                for i in range(600)]
    got = run(engine, requests)
    assert len(got) == 600
    assert sum(c.mixed_steps for c in got.values()) == 2 * sum(r.method.mixed for r in requests)


def test_soft_thinking_ends_where_the_model_emits_its_think_end_token(engine, reference):
    """Take a token the model emits while thinking as the think-end token: thinking ends at its first
    occurrence (no Cold Stop), and both engines agree on both phases, in a batch with MoI and Standard."""
    probe = make_spec("soft_thinking", entropy_threshold=0.0, think_end_id=0)
    prompts = [prompt_of(i, 9) for i in range(3)]
    found = run(reference, [Request(id=str(i), prompt=p, method=probe, temperature=0.6, max_tokens=12, seed=i)
                            for i, p in enumerate(prompts)])
    requests = []
    for i, p in enumerate(prompts):
        tokens = found[str(i)].token_ids
        end = make_spec("soft_thinking", entropy_threshold=0.0, think_end_id=tokens[4], after_thinking_temperature=0.0)
        requests += [Request(id=f"st{i}", prompt=p, method=end, temperature=0.6, max_tokens=20, seed=i),
                     Request(id=f"moi{i}", prompt=p, method=SPECS[3], temperature=0, max_tokens=20),
                     Request(id=f"std{i}", prompt=p, method=SPECS[0], temperature=0, max_tokens=20)]
    got, want = run(engine, requests), run(reference, requests)
    assert_same(got, want, requests)
    for i in range(3):
        completion = got[f"st{i}"]
        first = found[str(i)].token_ids.index(found[str(i)].token_ids[4])
        assert completion.token_ids[: first + 1] == found[str(i)].token_ids[: first + 1]  # the same thinking
        assert completion.method_stats["thinking_ended_at"] == first and not completion.method_stats["cold_stop"]
        assert completion.mixed_steps == first


def test_soft_thinking_state_survives_preemption(squeezed, reference):
    """Soft Thinking requests in the squeezed engine, preempted and recomputed (their thinking
    mixtures replayed from the history): the same tokens as the transformers engine. Thinking ends
    by Cold Stop within a few tokens: fully soft inputs on a random-weight model are chaotic under
    float noise, as Direct Mixture on real weights is, while the discrete tail is stable."""
    before = squeezed.moi_summary()["replayed_steps"]
    requests = [
        Request(id=f"q{i}", prompt=prompt_of(i, 40 + 5 * i),
                method=make_spec("soft_thinking", entropy_threshold=100.0, length_threshold=6 + i,
                                 after_thinking_temperature=0.7, dirichlet_alpha=None if i % 2 else 2.0),
                temperature=0.6, max_tokens=110, seed=100 + i)
        for i in range(8)
    ]
    got = run(squeezed, requests)
    assert_same(got, run(reference, requests), requests)
    assert squeezed.moi_summary()["replayed_steps"] > before
    ended = [got[r.id].method_stats for r in requests]
    assert sum(s["cold_stop"] for s in ended) >= 6  # (a request may also end, on the model's own EOS, before it)

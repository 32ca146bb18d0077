"""engine=vllm against engine=transformers: token-for-token equal greedy outputs (fp32).

Two in-process vLLM engines (eager, CPU): one roomy, where every method shares one batch, and one
squeezed (4 rows, 64-token steps, a 5-block KV cache) that forces row churn, chunked prefill and
preemptions. Both are shared by the tests of this module.
"""

from __future__ import annotations

import pytest

from harness.engines.base import Request
from harness.errors import ConfigError
from harness.methods.mixing import MixSpec

pytestmark = pytest.mark.vllm

SPECS = [
    MixSpec(),
    MixSpec("direct_mixture"),
    MixSpec("moi", 0.25),
    MixSpec("moi", 1.0),
    MixSpec("moi", 4.0),
    MixSpec("moi", 1.0, support="full"),
    MixSpec("moi", 1.0, reference_quirks=True),
    MixSpec("moi", 2.0, k=5),
]
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
        where = f"request {request.id} ({request.mix.method}, beta={request.mix.beta}, {request.mix.support})"
        assert a.token_ids == b.token_ids, where
        assert a.text == b.text, where
        assert a.finish_reason == b.finish_reason, where
        assert a.prompt_tokens == b.prompt_tokens, where
        assert a.mixed_steps == b.mixed_steps, where


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
        Request(id=f"{i}/{j}", prompt=prompt_of(i, 4 + 9 * i), mix=spec, temperature=0, max_tokens=14 + 3 * i)
        for i in range(3)
        for j, spec in enumerate(SPECS)
    ]
    return requests, run(engine, requests), run(reference, requests)


def test_every_method_in_one_batch_matches_transformers(one_batch):
    requests, got, want = one_batch
    assert_same(got, want, requests)


def test_mixed_steps_count_fed_back_tokens(one_batch):
    requests, got, _ = one_batch
    for request in requests:
        completion = got[request.id]
        expected = completion.completion_tokens - 1 if request.mix.mixed else 0
        assert completion.mixed_steps == expected, request.id


def test_moi_changes_outputs(one_batch):
    requests, got, _ = one_batch
    standard = {r.id.split("/")[0]: got[r.id].token_ids for r in requests if r.mix == MixSpec()}
    moi = {r.id.split("/")[0]: got[r.id].token_ids for r in requests if r.mix == MixSpec("moi", 1.0)}
    assert any(standard[p] != moi[p] for p in standard)


def test_chat_prompt_and_stop_string_match(engine, reference):
    chat = [{"role": "user", "content": prompt_of(5, 12)}]
    requests = [
        Request(id=f"chat/{j}/{len(stop)}", prompt=chat, prefix="<think>\n", mix=spec, temperature=0, max_tokens=24,
                stop=stop)
        for j, spec in enumerate(SPECS[:4])
        for stop in ((), ("e", "zz"))
    ]
    got = run(engine, requests)
    assert_same(got, run(reference, requests), requests)
    assert {c.finish_reason for c in got.values()} == {"stop", "length"}


def test_sampled_outputs_repeat_with_the_same_seeds(engine):
    requests = [
        Request(id=f"s{i}/{j}", prompt=prompt_of(i, 6 + i), mix=spec, temperature=0.8, top_p=0.9, top_k=50,
                max_tokens=12, seed=1000 * i + j)
        for i in range(3)
        for j, spec in enumerate(SPECS[:5])
    ]
    first = run(engine, requests)
    second = run(engine, list(reversed(requests)))
    assert {k: c.token_ids for k, c in first.items()} == {k: c.token_ids for k, c in second.items()}
    assert len({tuple(c.token_ids) for c in first.values()}) > 1


def test_churn_chunked_prefill_and_preemption_match_transformers(squeezed, reference):
    requests = [
        Request(id=f"p{i}", prompt=prompt_of(i, 150 if i == 0 else 5 + 7 * i), mix=SPECS[[0, 1, 2, 4, 5][i % 5]],
                temperature=0, max_tokens=100 + 10 * (i % 3))
        for i in range(10)
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
    requests = [Request(id=str(i), prompt=p, mix=MixSpec("moi", 1.0), temperature=0, max_tokens=12)
                for i, p in enumerate(prompts)]
    want = run(reference, requests)
    assert [list(o.outputs[0].token_ids) for o in outs] == [want[r.id].token_ids for r in requests]


def test_malformed_request_is_refused_and_engine_goes_on(engine):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    for extra, words in (({"moi_method": "bogus"}, "unknown method"), ({"moi_beta": -1}, "beta"),
                         ({"moi_k": "x"}, "moi_k"), ({"moi_betta": 1}, "moi_betta")):
        with pytest.raises(VLLMValidationError, match=words):
            engine.llm.generate([{"prompt_token_ids": [5, 6]}], SamplingParams(max_tokens=2, extra_args=extra),
                                use_tqdm=False)
    request = Request(id="after", prompt="the answer", mix=MixSpec("moi", 1.0), temperature=0, max_tokens=3)
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
    requests = [Request(id=f"a{i}", prompt=prompt_of(i, 6), mix=SPECS[i % 4], temperature=0, max_tokens=5 + 20 * i)
                for i in range(4)]
    stream = engine.generate(requests)
    first, _ = next(stream)
    assert first.id == "a0"
    with pytest.raises(RuntimeError, match="already running"):
        next(engine.generate(requests))
    stream.close()  # the other three are aborted
    assert not engine.engine.has_unfinished_requests()
    too_long = Request(id="long", prompt=prompt_of(0, 3000), temperature=0, max_tokens=4)
    with pytest.raises(ValueError, match="request long"):
        list(engine.generate([too_long]))
    assert len(run(engine, requests)) == 4


def test_more_requests_than_the_submission_window(engine):
    requests = [Request(id=f"w{i}", prompt=f"the answer {i}", mix=SPECS[i % 4], temperature=0, max_tokens=3)
                for i in range(600)]
    got = run(engine, requests)
    assert len(got) == 600
    assert sum(c.mixed_steps for c in got.values()) == 2 * sum(r.mix.mixed for r in requests)

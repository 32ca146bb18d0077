"""engine=openai against a fake server: retries with backoff, clear refusals, usage per sample."""

from __future__ import annotations

import json

import httpx
import pytest

from harness.engines import openai_engine
from harness.engines.base import Request
from harness.methods import make_spec


def make_engine(handler, monkeypatch, **cfg) -> openai_engine.OpenAIEngine:
    monkeypatch.setattr(openai_engine.time, "sleep", lambda seconds: None)
    engine = openai_engine.OpenAIEngine({"name": "tiny"}, {"url": "http://server/v1", "served_model": "tiny",
                                                           "tokenizer": None, "max_retries": 3, **cfg})
    engine.client = httpx.Client(base_url=engine.url, transport=httpx.MockTransport(handler))
    return engine


def reply(text: str, finish: str = "stop") -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"text": text, "finish_reason": finish}],
                                     "usage": {"prompt_tokens": 7, "completion_tokens": 3}})


def test_transient_failures_are_retried_and_settings_travel_in_vllm_xargs(monkeypatch):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/moi/requests"):
            return httpx.Response(404)  # not a moi-serve server: no counters
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        if len(calls) == 2:
            return httpx.Response(503, text="busy")
        return reply("42", "length")

    engine = make_engine(handler, monkeypatch)
    request = Request(id="r", prompt="What is 6 x 7?", method=make_spec("moi", beta=2.0, reference_quirks=True),
                      temperature=0.6, top_p=0.9, top_k=5, max_tokens=3, seed=11)
    [(got, completion)] = list(engine.generate([request]))
    assert got is request and len(calls) == 3
    body = json.loads(calls[-1].content)
    key = body["vllm_xargs"].pop("moi_request_key")
    assert len(key) == 32
    assert body["vllm_xargs"] == {"moi_method": "moi", "moi_beta": 2.0, "moi_support": "topk", "moi_k": 20,
                                  "moi_reference_quirks": 1, "moi_seed": 11}
    assert (body["prompt"], body["seed"], body["top_k"], body["max_tokens"]) == ("What is 6 x 7?", 11, 5, 3)
    assert (completion.text, completion.finish_reason, completion.prompt_tokens, completion.completion_tokens) == (
        "42", "length", 7, 3)
    assert completion.mixed_steps is None  # a server without the counters route cannot tell


def test_the_method_counters_come_from_the_servers_route(monkeypatch):
    keys = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/moi/requests"):
            key = request.url.params["keys"]
            assert key == keys[-1]
            return httpx.Response(200, json={"data": {key: {"method": "soft_thinking", "mixed_steps": 2,
                                                            "thinking_ended_at": 2, "cold_stop": True}}})
        keys.append(json.loads(request.content)["vllm_xargs"]["moi_request_key"])
        return reply("ok")

    engine = make_engine(handler, monkeypatch)
    [(_, completion)] = list(engine.generate([Request(id="r", prompt="hi", method=make_spec("soft_thinking"))]))
    assert completion.mixed_steps == 2 and completion.method_stats == {"mixed_steps": 2, "thinking_ended_at": 2,
                                                                       "cold_stop": True}


def test_a_refused_request_stops_with_the_servers_message(monkeypatch):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"error": {"message": "invalid MoI request settings: unknown method 'x'"}})

    engine = make_engine(handler, monkeypatch)
    with pytest.raises(openai_engine.ServerError, match="unknown method 'x'"):
        list(engine.generate([Request(id="r", prompt="hi")]))
    assert len(calls) == 1  # a 400 is not retried


def test_gives_up_after_the_retries(monkeypatch):
    engine = make_engine(lambda request: httpx.Response(502, text="bad gateway"), monkeypatch, max_retries=2)
    with pytest.raises(openai_engine.ServerError, match=r"failed 3 times \(HTTP 502: bad gateway\); is the server running\?"):
        list(engine.generate([Request(id="r", prompt="hi")]))


def test_chat_prompts_with_a_prefix_continue_the_assistant_message(monkeypatch):
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                                         "usage": {}})

    engine = make_engine(handler, monkeypatch, concurrency=4)
    requests = [Request(id=str(i), prompt=[{"role": "user", "content": f"q{i}"}], prefix="<think>\n") for i in range(6)]
    results = dict((r.id, c.text) for r, c in engine.generate(requests))
    assert results == {str(i): "ok" for i in range(6)}
    assert all(b["messages"][-1] == {"role": "assistant", "content": "<think>\n"} and b["continue_final_message"]
               for b in bodies)


def test_max_tokens_are_cut_to_the_context_and_too_long_prompts_not_sent(monkeypatch, tiny_model_path):
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/moi/requests"):
            return httpx.Response(404)
        sent.append(json.loads(request.content))
        return reply("1")

    engine = make_engine(handler, monkeypatch, tokenizer=tiny_model_path)
    engine.context_len = 32
    short, long = (Request(id=i, prompt=" ".join(["word"] * n), temperature=0, max_tokens=16) for i, n in (("s", 8), ("l", 30)))
    got = {r.id: c for r, c in engine.generate([short, long])}
    [body] = sent
    assert body["max_tokens"] == 32 - len(body["prompt"]) < 16 and got["s"].max_tokens == body["max_tokens"]
    assert got["l"].finish_reason == "prompt_too_long" and got["l"].max_tokens == 0


def test_forced_tokens_and_logprobs_are_refused_before_anything_is_sent(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    engine = make_engine(handler, monkeypatch)
    with pytest.raises(ValueError, match="request f: engine=openai cannot force tokens"):
        list(engine.generate([Request(id="ok", prompt="x"), Request(id="f", prompt="x", forced_tokens=(1, 2))]))
    with pytest.raises(ValueError, match="request l: engine=openai does not return logprobs"):
        list(engine.generate([Request(id="l", prompt="x", logprobs=5)]))

"""An engine that sends a run's requests to an OpenAI-compatible server (e.g. ``harness.serve``).

Each request carries its MoI settings in ``vllm_xargs`` (``moi_method``, ``moi_beta``, ...), so one
server can back a whole sweep. Prompts are rendered here with the model's tokenizer and sent as
token ids to ``/v1/completions``, so a served run sees exactly the tokens an offline run sees;
with ``tokenizer: null`` chat prompts go to ``/v1/chat/completions`` instead. Requests run with
bounded concurrency; transient failures (connection errors, 429, 5xx) are retried with
exponential backoff, each retry said in one log line; a 400 stops the run with the server's
message. Usage is recorded per sample, and so are the method's counters (``mixed_steps``,
``method_stats``), which ``moi-serve`` reports by the key each request carries
(``GET /v1/moi/requests?keys=...``, :mod:`harness.engines.vllm.routes`); a server without that
route gives ``mixed_steps: null``, said once.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx

from harness.engines.base import (
    Completion,
    Engine,
    Request,
    decode_completion,
    encode_prompt,
    prompt_too_long,
    refuse_forced_tokens,
    token_budget,
)
from harness.errors import ConfigError, UserError
from harness.methods import KEY_FIELD, SEED_FIELD

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
log = logging.getLogger("harness")


class ServerError(UserError):
    """The server refused a request (HTTP 4xx) or kept failing after every retry."""


def wire_xargs(request: Request, key: str = "") -> dict:
    """The request's method as ``vllm_xargs`` (JSON scalars only; null parameters are left out, so
    the server uses its own default for them, e.g. the model's think-end token), its seed, and the
    key its counters are asked for by."""
    fields = {**request.method.to_fields(), SEED_FIELD: request.seed, **({KEY_FIELD: key} if key else {})}
    return {k: (int(v) if isinstance(v, bool) else v) for k, v in fields.items() if v is not None}


class OpenAIEngine(Engine):
    """Requests to ``engine.url`` (an OpenAI-compatible ``/v1`` endpoint with MoI available)."""

    name = "openai"

    def __init__(self, model_cfg: dict, engine_cfg: dict):
        self.url = str(engine_cfg.get("url") or "").rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"engine.url must be an http(s) URL of a /v1 endpoint, got {self.url!r}")
        self.concurrency = int(engine_cfg.get("concurrency", 32))
        self.max_retries = int(engine_cfg.get("max_retries", 6))
        self._no_stats_said = False
        self.timeout = float(engine_cfg.get("timeout", 3600))
        key = engine_cfg.get("api_key") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.client = httpx.Client(base_url=self.url, timeout=self.timeout, headers={"Authorization": f"Bearer {key}"})
        self.served_model, served_context = engine_cfg.get("served_model"), None
        if not self.served_model:
            self.served_model, served_context = self._first_model()
        # the server's context window where it says it (vLLM lists max_model_len), else the model config's
        context = served_context or model_cfg.get("max_model_len")
        self.context_len = int(context) if context else None
        self.tokenizer = None
        self.model_info = None
        if engine_cfg.get("tokenizer", "model"):
            from transformers import AutoTokenizer

            from harness.models import resolve_model

            source = engine_cfg["tokenizer"]
            if source == "model":
                self.model_info = resolve_model(model_cfg)
                source = self.model_info.path
            self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=bool(model_cfg.get("trust_remote_code")))

    def _first_model(self) -> tuple[str, int | None]:
        """The server's first model and its context window where the server says it."""
        try:
            first = self._call("GET", "/models", retries=min(self.max_retries, 2))["data"][0]
            return first["id"], first.get("max_model_len")
        except (KeyError, IndexError, TypeError) as err:
            raise ServerError(f"the server at {self.url} lists no models ({type(err).__name__}: {err})") from None

    def info(self) -> dict:
        return {"engine": self.name, "url": self.url, "served_model": self.served_model, "context_len": self.context_len,
                "concurrency": self.concurrency, "prompts": "token ids" if self.tokenizer else "text/chat"}

    def close(self) -> None:
        self.client.close()

    # -- HTTP ------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None = None, retries: int | None = None) -> dict:
        """One API call with retries and exponential backoff for transient failures."""
        retries = self.max_retries if retries is None else retries
        delay = 1.0
        for attempt in range(retries + 1):
            try:
                response = self.client.request(method, path, json=body)
            except httpx.TransportError as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if response.status_code < 400:
                    return response.json()
                problem = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in RETRY_STATUS:
                    raise ServerError(f"the server at {self.url} refused {method} {path} ({problem})")
            if attempt == retries:
                break
            log.warning("%s %s%s: %s; retrying in %g s (attempt %d of %d)", method, self.url, path, problem, delay,
                        attempt + 2, retries + 1)
            time.sleep(delay)
            delay = min(delay * 2, 60.0)
        raise ServerError(f"{method} {self.url}{path} failed {retries + 1} times ({problem}); is the server running? "
                          "(start one with moi-serve, or set engine.url)")

    def _body(self, request: Request, key: str = "") -> tuple[str, dict, str, list[int] | None]:
        """The route, the request body, the prompt text and (with a tokenizer) the prompt's ids."""
        body = {
            "model": self.served_model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "stop": list(request.stop),
            "vllm_xargs": wire_xargs(request, key),
        }
        if request.top_k > 0:
            body["top_k"] = request.top_k
        if self.tokenizer is not None:
            text, ids = encode_prompt(self.tokenizer, request)
            body["max_tokens"] = token_budget(request.max_tokens, len(ids), self.context_len)
            return "/completions", {**body, "prompt": ids, "return_token_ids": True}, text, ids
        if isinstance(request.prompt, str):
            text = request.prompt + request.prefix
            return "/completions", {**body, "prompt": text}, text, None
        messages = list(request.prompt)
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
            body.update(add_generation_prompt=False, continue_final_message=True)
        return "/chat/completions", {**body, "messages": messages}, "", None

    def _complete(self, request: Request) -> Completion:
        key = uuid.uuid4().hex
        path, body, prompt_text, prompt_ids = self._body(request, key)
        if prompt_ids is not None and body["max_tokens"] < 1:
            return prompt_too_long(prompt_text, prompt_ids)
        reply = self._call("POST", path, body)
        choice = reply["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        token_ids = list(choice.get("token_ids") or [])
        if self.tokenizer is not None and token_ids:  # decoded here exactly as the offline engines do
            stopped_by_string = isinstance(choice.get("stop_reason"), str)
            text = decode_completion(self.tokenizer, token_ids, request.stop if stopped_by_string else ())
        usage = reply.get("usage") or {}
        stats = self._stats(key)
        return Completion(
            text=text or "",
            token_ids=token_ids,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            mixed_steps=None if stats is None else int(stats.get("mixed_steps", 0)),
            prompt_text=prompt_text,
            method_stats={} if stats is None else {k: v for k, v in stats.items()
                                                   if k not in (*request.method.params, "method", "replayed_steps")},
            max_tokens=body["max_tokens"],
        )

    def _stats(self, key: str) -> dict | None:
        """The request's counters from the server's stats route, or None where it has none."""
        try:
            response = self.client.get("/moi/requests", params={"keys": key})
            found = response.json().get("data", {}).get(key) if response.status_code == 200 else None
        except (httpx.TransportError, ValueError, AttributeError):
            found = None
        if found is None and not self._no_stats_said:
            self._no_stats_said = True
            log.warning("the server at %s does not report method counters (no /v1/moi/requests route, as moi-serve "
                        "has): samples get mixed_steps: null", self.url)
        return found

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[Request, Completion]]:
        if not requests:
            return
        refuse_forced_tokens(self.name, requests)
        for request in requests:
            if request.logprobs:
                raise ValueError(f"request {request.id}: engine={self.name} does not return logprobs "
                                 "(Request.logprobs); use engine=vllm or engine=transformers")
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            futures = {pool.submit(self._complete, r): r for r in requests}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:
                for future in futures:
                    future.cancel()

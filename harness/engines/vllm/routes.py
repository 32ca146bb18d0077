"""What ``moi-serve`` adds to vLLM's OpenAI-compatible server, as one ASGI middleware
(``--middleware harness.engines.vllm.routes.MoIRoutes``):

- ``GET /v1/moi/requests?keys=K1,K2``: each request's method counters (``mixed_steps`` and the
  method's own, e.g. Soft Thinking's ``thinking_ended_at``), by the ``moi_request_key`` the client
  sent in ``vllm_xargs``; a key is answered once, when its request has finished (``engine=openai``
  stores them with each sample, so a run through the server keeps its proof that a method was on);
- a cap on ``n`` (choices per request): above ``serve.max_n`` a request gets an HTTP 400;
- the ``moi_*`` fields of ``vllm_xargs`` checked on the JSON as sent, with the same rules as
  everywhere else (vLLM's own parsing would turn ``true`` into 1 before its validator sees it).

Everything else passes through untouched.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from harness.engines.vllm.settings import default_spec, request_spec
from harness.methods import FIELD_PREFIX

COMPLETION_PATHS = ("/v1/completions", "/v1/chat/completions")
DEFAULT_MAX_N = 64


class MoIRoutes:
    """A pure ASGI middleware (it reads a completion request's body once and hands it on intact)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/v1/moi/requests" and method == "GET":
            await self._stats(scope, send)
            return
        if path in COMPLETION_PATHS and method == "POST":
            body = await _read_body(receive)
            problem = self._refused(scope, body)
            if problem:
                await _json(send, 400, {"error": {"message": problem, "type": "BadRequestError", "code": 400}})
                return
            await self.app(scope, _replay(body, receive), send)
            return
        await self.app(scope, receive, send)

    def _refused(self, scope, body: bytes) -> str | None:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return None  # vLLM answers malformed bodies itself
        if not isinstance(request, dict):
            return None
        n = request.get("n", 1)
        limit = _section(scope).get("max_n") or DEFAULT_MAX_N
        if isinstance(n, int) and not isinstance(n, bool) and n > limit:
            return f"n={n} is above this server's limit of {limit} choices per request (serve.max_n)"
        xargs = request.get("vllm_xargs")
        if isinstance(xargs, dict) and any(str(k).startswith(FIELD_PREFIX) for k in xargs):
            # checked here on the JSON as sent: the server's own parsing turns true into 1
            try:
                request_spec(xargs, default_spec(getattr(getattr(scope["app"].state, "vllm_config", None), "additional_config", None)))
            except ValueError as err:
                return f"invalid MoI request settings: {err}"
        return None

    async def _stats(self, scope, send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        keys = [k for value in query.get("keys", []) for k in value.split(",") if k]
        if not keys:
            await _json(send, 400, {"error": {"message": "give the request keys: ?keys=K1,K2", "code": 400}})
            return
        client = scope["app"].state.engine_client
        replies = await client.collective_rpc("moi_request_stats_by_key", args=(keys,))
        await _json(send, 200, {"data": replies[0] if replies else {}})


def _section(scope) -> dict:
    config = getattr(scope["app"].state, "vllm_config", None)
    additional = getattr(config, "additional_config", None) or {}
    return dict(additional.get("moi") or {}) if isinstance(additional, dict) else {}


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """The body once, then the client's own messages (e.g. its disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _json(send, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})

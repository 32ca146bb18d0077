"""What every engine takes and returns: requests in, completions out (streamed as they finish)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from harness.methods import MethodSpec

# "prompt_too_long": the prompt leaves no room in the model's context; nothing was generated.
FINISH_REASONS = ("stop", "length", "prompt_too_long")


@dataclass(frozen=True)
class Request:
    """One generation: its prompt, its decoding method, and how to sample.

    ``prompt`` is raw text, or chat messages (a list of ``{"role", "content"}`` dicts) that the
    engine renders with the model's chat template and its generation prompt. ``prefix`` is
    appended after that (a model's generation prefix, e.g. ``"<think>\\n"``).
    ``temperature == 0`` is greedy; ``top_k <= 0`` and ``top_p == 1`` disable those filters.
    ``seed`` seeds this request's own sampler, so its output does not depend on the batch.
    ``logprobs = k > 0`` asks for the top ``k`` log-probabilities of every generated step (of the
    raw model distribution, see :attr:`Completion.logprobs`). ``forced_tokens`` (teacher forcing,
    the transformers engine only; the others refuse it): step ``t`` emits ``forced_tokens[t]``
    instead of the sampled or method-chosen token, the method mixing from the model's own
    distribution and that token as in normal decoding; generation stops when they are used up.
    """

    id: str
    prompt: str | list[dict]
    prefix: str = ""
    method: MethodSpec = field(default_factory=MethodSpec)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0
    logprobs: int = 0
    forced_tokens: tuple[int, ...] = ()


@dataclass
class Completion:
    """What a request produced. ``mixed_steps`` counts the generated tokens fed back as mixtures
    (None when the engine cannot tell); ``method_stats`` holds the method's own counters (e.g.
    Soft Thinking's ``thinking_ended_at`` and ``cold_stop``) and its per-step histograms.
    ``max_tokens`` is the limit the engine applied: the request's, or less where the model's
    context (prompt + completion) leaves less (see :func:`token_budget`). ``logprobs``: with
    ``Request.logprobs = k``, one dict per generated step, the ``k`` most probable tokens of the raw
    model distribution at that step (log-softmax of the logits, before temperature, top-k, top-p and
    the method) to their log-probabilities; None when not asked for."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    mixed_steps: int | None = 0
    prompt_text: str = ""
    method_stats: dict = field(default_factory=dict)
    max_tokens: int | None = None
    logprobs: list[dict[int, float]] | None = None


class Engine(ABC):
    """A loaded model that turns requests into completions.

    ``context_len`` is the model's context window (prompt + completion tokens), None when the
    engine cannot tell; every engine cuts a request's ``max_tokens`` to what it leaves.
    """

    name: str = "engine"
    context_len: int | None = None

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[Request, Completion]]:
        """Yield ``(request, completion)`` pairs as they finish, in any order."""

    def info(self) -> dict:
        """Facts for the run manifest (versions, device, model revision, MoI memory...)."""
        return {"engine": self.name}

    def close(self) -> None:
        """Release the model and its memory."""


def refuse_forced_tokens(engine: str, requests: Sequence[Request]) -> None:
    """For engines that cannot replay tokens: a ValueError naming the first request that asks."""
    for request in requests:
        if request.forced_tokens:
            raise ValueError(f"request {request.id}: engine={engine} cannot force tokens (Request.forced_tokens); "
                             "only engine=transformers replays them")


def render_prompt(tokenizer, request: Request) -> tuple[str, bool]:
    """The prompt text the model sees, and whether it came from the chat template.

    Chat prompts already hold the template's special tokens, so they are tokenized without
    adding any (a second BOS would change the input).
    """
    if isinstance(request.prompt, str):
        return request.prompt + request.prefix, False
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "this model's tokenizer has no chat template; give the task a raw-text prompt "
            "(model.prompting.use_chat_template) or use a model with a template"
        )
    text = tokenizer.apply_chat_template(list(request.prompt), tokenize=False, add_generation_prompt=True)
    return text + request.prefix, True


def decode_completion(tokenizer, token_ids: Sequence[int], stop: Sequence[str] = ()) -> str:
    """A completion's text: its ids decoded in one go (special tokens skipped), cut before the
    first stop string. Every engine uses this, so the text is a function of the ids alone."""
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True)
    hits = [text.find(s) for s in stop if s and s in text]
    return text[: min(hits)] if hits else text


def encode_prompt(tokenizer, request: Request) -> tuple[str, list[int]]:
    """The rendered prompt and its token ids, the same for every engine."""
    text, is_chat = render_prompt(tokenizer, request)
    ids = tokenizer(text, add_special_tokens=not is_chat)["input_ids"]
    return text, list(ids)


def token_budget(max_tokens: int, prompt_tokens: int, context_len: int | None) -> int:
    """The tokens a request may generate: its ``max_tokens``, cut to what the model's context leaves
    after the prompt (the same rule in every engine; below 1 the prompt is too long)."""
    return max_tokens if context_len is None else min(max_tokens, context_len - prompt_tokens)


def prompt_too_long(prompt_text: str, prompt_ids: Sequence[int]) -> Completion:
    """The completion of a request whose prompt fills the model's context: nothing generated."""
    return Completion(text="", token_ids=[], finish_reason="prompt_too_long", prompt_tokens=len(prompt_ids),
                      completion_tokens=0, mixed_steps=0, prompt_text=prompt_text, max_tokens=0)


def model_facts(tokenizer, model_cfg: dict) -> dict:
    """What methods may take from the model (``Method.from_model``): the think-end token id of the
    model's prompting config (the last id its text encodes to, as Soft Thinking's code takes), or
    None when the model has no thinking delimiters."""
    end = ((model_cfg.get("prompting") or {}).get("thinking") or {}).get("end")
    ids = tokenizer.encode(end, add_special_tokens=False) if end else []
    return {"think_end_id": int(ids[-1]) if ids else None}

"""The transformers reference engine: a plain batched decode loop, the oracle for the vLLM engine.

Every step feeds the model ``inputs_embeds``: the sampled token's embedding for rows whose method
does not mix (Standard), and for the others what their method (:mod:`harness.methods`) returns,
with the same rule the vLLM runner calls. fp32 and deterministic; each request samples from its
own seeded generator, so its output does not depend on what else is in the batch. Prompts are
left-padded; finished rows leave the batch.

Teacher forcing (``Request.forced_tokens``, this engine only): a row emits the given tokens
instead of sampling (or its method choosing), while its method mixes exactly as in normal
decoding from this model's own distribution and the forced token; so another engine's completion
can be replayed and both engines' per-step distributions (``Request.logprobs``) compared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from harness.engines.base import (
    Completion,
    Engine,
    Request,
    decode_completion,
    encode_prompt,
    model_facts,
    prompt_too_long,
    token_budget,
)
from harness.methods import Rows
from harness.methods.batch import bucket, embed_feedback, mix_dense, numeric_params
from harness.models import resolve_model

# float64: the oracle's own float-noise reference (tests/test_vllm_teacher_forced.py)
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def sample_token(logits: torch.Tensor, request: Request, generator: torch.Generator) -> int:
    """One token from raw logits ``[V]`` with the request's temperature, top-k and top-p."""
    if request.temperature == 0:
        return int(torch.argmax(logits))
    scores = logits.float() / request.temperature
    if 0 < request.top_k < scores.shape[-1]:
        kth = torch.topk(scores, request.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if request.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
        drop = before >= request.top_p
        drop[0] = False
        scores = scores.clone()
        scores[order[drop]] = float("-inf")
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class _Row:
    """A request being decoded."""

    def __init__(self, request: Request, prompt_text: str, prompt_ids: list[int], facts: dict, max_tokens: int):
        self.request = request
        self.forced = tuple(int(t) for t in request.forced_tokens)
        self.max_tokens = min(max_tokens, len(self.forced)) if self.forced else max_tokens  # stops when used up
        self.spec = request.method.with_model(facts)
        self.params = numeric_params(self.spec)
        self.state = dict(self.spec.impl.state)
        self.histograms = {name: [0] * bins for name, (_, _, bins) in self.spec.impl.histograms.items()}
        self.prompt_text = prompt_text
        self.prompt_ids = prompt_ids
        self.generated: list[int] = []
        self.logprobs: list[dict[int, float]] = []
        self.mixed_steps = 0
        self.finish_reason: str | None = None
        self.text = ""
        self.generator = torch.Generator().manual_seed(request.seed)

    def method_stats(self) -> dict:
        stats = {"mixed_steps": self.mixed_steps, **self.spec.impl.report(self.state)}
        return stats | {f"{name}_hist": counts for name, counts in self.histograms.items()}


class TransformersEngine(Engine):
    """Reference MoI engine on ``transformers`` (CPU or GPU)."""

    name = "transformers"

    def __init__(self, model_cfg: dict, engine_cfg: dict | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        engine_cfg = engine_cfg or {}
        self.model_info = resolve_model(model_cfg)
        dtype = str(model_cfg.get("dtype", "float32"))
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid dtypes: {', '.join(_DTYPES)}")
        self.batch_size = int(engine_cfg.get("batch_size", 16))
        if self.batch_size < 1:
            raise ValueError(f"engine.batch_size must be >= 1, got {self.batch_size}")
        self.device = torch.device(engine_cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        trust = bool(model_cfg.get("trust_remote_code", False))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_info.path, trust_remote_code=trust)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_info.path, dtype=_DTYPES[dtype], trust_remote_code=trust
        ).to(self.device)
        self.model.eval()
        self.embed = self.model.get_input_embeddings()
        self.facts = model_facts(self.tokenizer, model_cfg)
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # the context window, as vLLM takes it: the model config's max_model_len, else the model's own
        context = model_cfg.get("max_model_len") or getattr(self.model.config, "max_position_embeddings", None)
        self.context_len = int(context) if context else None

    def _eos_ids(self) -> set[int]:
        ids = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        return ids

    def info(self) -> dict:
        import transformers

        return {
            "engine": self.name,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "device": str(self.device),
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "batch_size": self.batch_size,
            "context_len": self.context_len,
            "moi_path": "harness.engines.transformers_engine (inputs_embeds decode loop)",
            "moi_extra_memory_bytes": 0,
        }

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[Request, Completion]]:
        for start in range(0, len(requests), self.batch_size):
            yield from self._generate_batch(requests[start : start + self.batch_size])

    # -- the decode loop -------------------------------------------------------------------------
    @torch.no_grad()
    def _generate_batch(self, requests: Sequence[Request]) -> Iterator[tuple[Request, Completion]]:
        rows = []
        for request in requests:
            bad = [t for t in request.forced_tokens if not 0 <= int(t) < self.embed.num_embeddings]
            if bad:
                raise ValueError(f"request {request.id}: forced token {bad[0]} is not a token id of this model "
                                 f"(0 to {self.embed.num_embeddings - 1})")
            text, ids = encode_prompt(self.tokenizer, request)
            budget = token_budget(request.max_tokens, len(ids), self.context_len)
            if budget < 1:
                yield request, prompt_too_long(text, ids)
            else:
                rows.append(_Row(request, text, ids, self.facts, budget))
        if not rows:
            return
        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            mask[i, width - len(row.prompt_ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1].float()
        active = list(range(len(rows)))  # batch position -> index into rows
        while active:
            current = [rows[i] for i in active]
            self._keep_logprobs(logits, current)
            sampled = [row.forced[len(row.generated)] if row.forced else sample_token(logits[b], row.request, row.generator)
                       for b, row in enumerate(current)]
            tokens, feedback = self._apply_methods(logits, sampled, current)
            keep = []
            for b, row in enumerate(current):
                if not self._append(row, tokens[b]):
                    keep.append(b)
                else:
                    yield row.request, self._completion(row)
            if not keep:
                return
            inputs = self.embed(torch.tensor(tokens, device=self.device))
            going_on = set(keep)
            for index, fb in feedback:
                inputs[index] = embed_feedback(fb, self.embed, self._dense).to(inputs.dtype)
                for b, mixed in zip(index.tolist(), fb.mixed.tolist()):
                    current[b].mixed_steps += int(mixed and b in going_on)  # positions actually fed a mixture
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                inputs, mask, positions = inputs[index], mask[index], positions[index]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=self.device)], dim=1)
            positions = positions[:, -1:] + 1
            out = self.model(
                inputs_embeds=inputs[:, None, :],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            cache, logits = out.past_key_values, out.logits[:, -1].float()

    def _keep_logprobs(self, logits: torch.Tensor, rows: list[_Row]) -> None:
        """The top ``Request.logprobs`` log-probabilities of this step's raw distribution, for the rows
        that ask (what vLLM's default ``logprobs_mode="raw_logprobs"`` returns)."""
        wanted = [b for b, row in enumerate(rows) if row.request.logprobs > 0]
        if not wanted:
            return
        k = min(max(rows[b].request.logprobs for b in wanted), logits.shape[-1])
        index = torch.tensor(wanted, device=logits.device)
        values, ids = torch.log_softmax(logits[index].float(), dim=-1).topk(k, dim=-1)
        values, ids = values.tolist(), ids.tolist()
        for j, b in enumerate(wanted):
            n = rows[b].request.logprobs
            rows[b].logprobs.append(dict(zip(ids[j][:n], values[j][:n])))

    def _apply_methods(self, logits: torch.Tensor, sampled: list[int], rows: list[_Row]) -> tuple[list[int], list]:
        """Each mixing method's rule on its rows: the tokens they emit (the sampled ones unless the
        method chooses, or the forced ones), their new state and histograms, and their next inputs'
        feedback."""
        tokens = list(sampled)
        groups: dict[tuple, list[int]] = {}
        for b, row in enumerate(rows):
            if row.spec.mixed:
                groups.setdefault(row.spec.group, []).append(b)
        feedback = []
        for members in groups.values():
            group = [rows[b] for b in members]
            impl = group[0].spec.impl
            index = torch.tensor(members, device=self.device)
            batch = self._rows(group)
            prepared = impl.prepare(logits[index], batch)
            emitted = prepared.emitted
            if emitted is None or batch.forced is not None:
                chosen = torch.tensor([sampled[b] for b in members], device=self.device)  # forced rows: the forced tokens
                emitted = chosen if emitted is None else torch.where(batch.forced >= 0, chosen, emitted)
            fb = impl.feedback(prepared, emitted, batch)
            stats = {**prepared.stats, **fb.stats}
            for j, (b, row) in enumerate(zip(members, group)):
                tokens[b] = int(emitted[j])
                row.state.update({name: float(value[j]) for name, value in prepared.state.items()})
                for name, values in stats.items():
                    low, high, bins = impl.histograms[name]
                    row.histograms[name][int(bucket(values[j : j + 1], low, high, bins))] += 1
            feedback.append((index, fb))
        return tokens, feedback

    def _rows(self, group: list[_Row]) -> Rows:
        """A group of rows as the method sees them (one tensor per parameter and state field)."""

        def column(values) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=self.device)

        first = group[0]
        host = {name: np.array([row.params[name] for row in group]) for name in first.params}
        host |= {name: np.array([getattr(row.request, name) for row in group], dtype=float) for name in ("temperature", "top_p", "top_k")}
        forced = [row.forced[len(row.generated)] if row.forced else -1 for row in group]  # this step's, -1: none
        return Rows(
            params={name: column(values) for name, values in host.items() if name in first.params},
            state={name: column([row.state[name] for row in group]) for name in first.state},
            group=first.spec.params,
            temperature=column([row.request.temperature for row in group]),
            top_p=column([row.request.top_p for row in group]),
            top_k=torch.tensor([row.request.top_k for row in group], device=self.device),
            seed=torch.tensor([row.request.seed for row in group], device=self.device),
            step=torch.tensor([len(row.generated) for row in group], device=self.device),
            host=host,
            forced=torch.tensor(forced, device=self.device) if any(row.forced for row in group) else None,
        )

    def _dense(self, weights: torch.Tensor) -> torch.Tensor:
        """Dense weights times the embedding matrix, with the model's embedding scale (Gemma)."""
        return mix_dense(weights, self.embed.weight) * getattr(self.embed, "embed_scale", 1.0)

    def _append(self, row: _Row, token: int) -> bool:
        """Add a sampled token; return True when the row has finished."""
        row.generated.append(token)
        request = row.request
        if token in self.eos_ids:
            row.finish_reason = "stop"
        elif request.stop:
            text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
            if any(s and s in text for s in request.stop):
                row.finish_reason = "stop"
        if row.finish_reason is None and len(row.generated) >= row.max_tokens:
            row.finish_reason = "length"
        if row.finish_reason is not None:
            row.text = decode_completion(self.tokenizer, row.generated, request.stop)
            return True
        return False

    @staticmethod
    def _completion(row: _Row) -> Completion:
        return Completion(
            text=row.text,
            token_ids=list(row.generated),
            finish_reason=row.finish_reason or "length",
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(row.generated),
            mixed_steps=row.mixed_steps,
            prompt_text=row.prompt_text,
            method_stats=row.method_stats(),
            max_tokens=row.max_tokens,
            logprobs=list(row.logprobs) if row.request.logprobs > 0 else None,
        )

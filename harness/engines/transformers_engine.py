"""The transformers reference engine: a plain batched decode loop, the oracle for the vLLM engine.

Every step feeds the model ``inputs_embeds`` built by :mod:`harness.methods`: the embedding of the
sampled token for Standard rows, the mixture for Direct Mixture and MoI rows. fp32 and
deterministic; each request samples from its own seeded generator, so its output does not
depend on what else is in the batch. Prompts are left-padded; finished rows leave the batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from harness.engines.base import Completion, Engine, Request, decode_completion, encode_prompt
from harness.methods import mixing
from harness.models import resolve_model

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


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

    def __init__(self, request: Request, prompt_text: str, prompt_ids: list[int]):
        self.request = request
        self.prompt_text = prompt_text
        self.prompt_ids = prompt_ids
        self.generated: list[int] = []
        self.mixed_steps = 0
        self.finish_reason: str | None = None
        self.text = ""
        self.generator = torch.Generator().manual_seed(request.seed)


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
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

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
            text, ids = encode_prompt(self.tokenizer, request)
            rows.append(_Row(request, text, ids))
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
            sampled = [sample_token(logits[b], rows[i].request, rows[i].generator) for b, i in enumerate(active)]
            keep = []
            for b, i in enumerate(active):
                if not self._append(rows[i], sampled[b]):
                    keep.append(b)
                else:
                    yield rows[i].request, self._completion(rows[i])
            if not keep:
                return
            inputs = self._next_inputs(logits, torch.tensor(sampled, device=self.device), [rows[i] for i in active])
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                inputs, mask, positions = inputs[index], mask[index], positions[index]
                active = [active[b] for b in keep]
            for i in active:
                rows[i].mixed_steps += int(rows[i].request.mix.mixed)
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

    def _next_inputs(self, logits: torch.Tensor, sampled: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """Input embeddings for the next step: plain for Standard rows, mixed for the others."""
        inputs = self.embed(sampled)
        specs = [row.request.mix for row in rows]
        for members in mixing.group_rows(specs).values():
            index = torch.tensor(members, device=self.device)
            group_specs = [specs[m] for m in members]
            support = mixing.support_of(logits[index], group_specs[0])
            mixed = mixing.mixed_inputs(support, sampled[index], group_specs, self.embed, self.embed.weight)
            if group_specs[0].support == "full":  # the dense product skips a scaled embedding's factor
                mixed = mixed * getattr(self.embed, "embed_scale", 1.0)
            inputs[index] = mixed
        return inputs

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
        if row.finish_reason is None and len(row.generated) >= request.max_tokens:
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
        )

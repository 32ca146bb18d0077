"""Soft Thinking (Zhang et al., arXiv 2505.15778) and its randomized variants (arXiv 2508.03440).

While the model thinks (until it emits its think-end token, e.g. ``</think>``), the next input is
the probability-weighted mixture of the top ``max_topk`` tokens of the sampling distribution
(temperature, top-k, top-p and min-p filtered and renormalised, with the request's own
temperature, top-p and top-k and the method's ``min_p``), and the emitted token is the most
probable one, so the text stays readable. "Cold Stop": when the entropy (nats, of the
temperature-scaled distribution) stays below ``entropy_threshold`` for ``length_threshold``
consecutive steps, the think-end token is emitted and thinking ends. The think-end token, however
it came, is fed back as itself; after thinking, decoding is discrete with the ``after_thinking_*``
settings (null: the request's own; min-p: 0).

Randomized variants: ``dirichlet_alpha`` replaces the thinking distribution by a Dirichlet draw
with concentrations ``alpha * p``; ``gumbel_temperature`` replaces the top-k weights ``w`` by
``softmax((log w + G) / tau)`` with Gumbel noise ``G``; either way the emitted token is the most
probable after the noise. The discrete tokens after thinking are sampled here too (Gumbel-max), so
all noise comes from :mod:`harness.methods.noise`: a pure function of the request's seed and the
step, the same in every engine.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.methods import noise
from harness.methods.base import Feedback, Method, Param, Prepared, Rows
from harness.methods.mixing import candidates, filtered_distribution
from harness.methods.registry import register

# Noise streams (distinct uses of one step's randomness).
_DIRICHLET, _GUMBEL, _AFTER = 1, 2, 3
# The Dirichlet draw covers the most probable candidates only: tokens below them hold
# concentrations so small that they never reach the top ``max_topk`` after the draw.
DIRICHLET_CANDIDATES = 256


def _or(value: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """A nullable parameter (NaN) replaced by the fallback."""
    return torch.where(torch.isnan(value), fallback.to(value.dtype), value)


@register
class SoftThinking(Method):
    name = "soft_thinking"
    label = "Soft Thinking"
    order = 3
    params = (
        Param("max_topk", 10, "integer", low=1, help="tokens in each thinking mixture"),
        Param("min_p", 0.001, low=0, high=1, help="min-p of the thinking distribution"),
        Param("entropy_threshold", 0.01, low=0, help="Cold Stop: entropy (nats) below which a step counts"),
        Param("length_threshold", 256, "integer", low=0, help="Cold Stop after this many low-entropy steps in a row; 0: never"),
        Param("after_thinking_temperature", None, low=0, nullable=True, help="null: the run's sampling.temperature"),
        Param("after_thinking_top_p", None, low=0, high=1, nullable=True, help="null: the run's sampling.top_p"),
        Param("after_thinking_top_k", None, "integer", nullable=True, help="<= 0: off; null: the run's sampling.top_k"),
        Param("after_thinking_min_p", None, low=0, high=1, nullable=True, help="null: 0 (off)"),
        Param("dirichlet_alpha", None, low=0, nullable=True, help="Dirichlet noise on the thinking distribution; null: off"),
        Param("gumbel_temperature", None, low=0, nullable=True, help="Gumbel-softmax noise on the thinking weights; null: off"),
        Param("think_end_id", -1, "integer", low=-1, identity=False,
              help="the think-end token id; -1: the engine's, from the model's prompting config"),
    )
    state = {"thinking": 1.0, "low_entropy_run": 0.0, "thinking_ended_at": -1.0, "cold_stop": 0.0}
    from_model = {"think_end_id": "think_end_id"}
    emits_own_tokens = True
    examples = (
        {"entropy_threshold": 0.0},  # thinking throughout
        {"entropy_threshold": 100.0, "length_threshold": 3, "after_thinking_temperature": 0.0},  # Cold Stop, then greedy
        {"entropy_threshold": 100.0, "length_threshold": 2, "after_thinking_temperature": 0.8},  # then sampled
        {"dirichlet_alpha": 1.0, "length_threshold": 0},
        {"gumbel_temperature": 0.5, "length_threshold": 0, "max_topk": 4},
    )

    def checked(self, params: dict) -> dict:
        for name in ("dirichlet_alpha", "gumbel_temperature", "after_thinking_top_p"):
            if params[name] is not None and params[name] <= 0:
                raise ValueError(f"{name} must be a finite number > 0 or null, got {params[name]!r}")
        return params

    def group_key(self, params: dict) -> tuple:
        # the noise variants are separate groups: whether to draw noise is then known on the host
        return (params["max_topk"], params["dirichlet_alpha"] is not None, params["gumbel_temperature"] is not None)

    def prepare(self, logits: torch.Tensor, rows: Rows) -> Prepared:
        p, state, group = rows.params, rows.state, rows.group
        thinking = state["thinking"] > 0
        width = candidates(rows.host["top_k"], logits.shape[1])
        ids, probs, entropy = filtered_distribution(logits, rows.temperature, rows.top_k, rows.top_p, p["min_p"], width)
        if group["dirichlet_alpha"] is not None:
            ids, probs = ids[:, :DIRICHLET_CANDIDATES], probs[:, :DIRICHLET_CANDIDATES]
            drawn = noise.dirichlet(probs * p["dirichlet_alpha"][:, None], rows.seed, rows.step, _DIRICHLET)
            probs = torch.where(thinking[:, None], drawn, probs)
        size = min(int(group["max_topk"]), probs.shape[1])
        weights, order = torch.topk(probs, size, dim=-1)
        top_ids = ids.gather(1, order)
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        if group["gumbel_temperature"] is not None:
            g = noise.gumbel(rows.seed, rows.step, size, _GUMBEL)
            soft = torch.softmax((torch.log(weights.clamp_min(1e-30)) + g) / p["gumbel_temperature"][:, None], dim=-1)
            soft, resort = torch.sort(soft, dim=-1, descending=True)
            weights = torch.where(thinking[:, None], soft, weights)
            top_ids = torch.where(thinking[:, None], top_ids.gather(1, resort), top_ids)
        sampled = self._after_thinking(logits, rows)
        think_end = p["think_end_id"].long()
        enabled = (p["entropy_threshold"] > 0) & (p["length_threshold"] > 0) & (think_end >= 0)
        run = torch.where(entropy < p["entropy_threshold"], state["low_entropy_run"] + 1, torch.zeros_like(entropy))
        run = torch.where(thinking & enabled, run, state["low_entropy_run"])
        cold = thinking & enabled & (run >= p["length_threshold"])
        emitted = torch.where(thinking, torch.where(cold, think_end, top_ids[:, 0].long()), sampled)
        if rows.forced is not None:  # teacher forcing: the state follows the forced tokens
            emitted = torch.where(rows.forced >= 0, rows.forced.long(), emitted)
        ended = thinking & (emitted == think_end)
        new_state = {
            "thinking": (thinking & ~ended).float(),
            "low_entropy_run": torch.where(ended, torch.zeros_like(run), run),
            "thinking_ended_at": torch.where(ended, rows.step.float(), state["thinking_ended_at"]),
            "cold_stop": torch.maximum(state["cold_stop"], cold.float()),
        }
        kept = {"ids": top_ids, "weights": weights, "mixed": thinking & ~ended}
        return Prepared(kept=kept, emitted=emitted, state=new_state)

    def _after_thinking(self, logits: torch.Tensor, rows: Rows) -> torch.Tensor:
        """A discrete token from the after-thinking distribution (Gumbel-max over its candidates)."""
        p = rows.params
        temperature = _or(p["after_thinking_temperature"], rows.temperature)
        top_p = _or(p["after_thinking_top_p"], rows.top_p)
        top_k = _or(p["after_thinking_top_k"], rows.top_k.float()).long()
        min_p = _or(p["after_thinking_min_p"], torch.zeros_like(temperature))
        own = rows.host["after_thinking_top_k"]
        width = candidates(np.where(np.isnan(own), rows.host["top_k"], own), logits.shape[1])
        ids, probs, _ = filtered_distribution(logits, temperature, top_k, top_p, min_p, width)
        scores = torch.log(probs.clamp_min(0)) + noise.gumbel(rows.seed, rows.step, probs.shape[1], _AFTER)
        return ids.gather(1, scores.argmax(dim=-1, keepdim=True))[:, 0].long()

    def feedback(self, prepared: Prepared, emitted: torch.Tensor, rows: Rows) -> Feedback:
        kept = prepared.kept
        mixed = kept["mixed"]
        onehot_ids = torch.zeros_like(kept["ids"])
        onehot_ids[:, 0] = emitted
        onehot = torch.zeros_like(kept["weights"])
        onehot[:, 0] = 1.0
        ids = torch.where(mixed[:, None], kept["ids"], onehot_ids)
        weights = torch.where(mixed[:, None], kept["weights"], onehot)
        return Feedback(ids, weights, mixed)

    def report(self, state: dict[str, float]) -> dict:
        ended = int(state["thinking_ended_at"])
        return {"thinking_ended_at": ended if ended >= 0 else None, "cold_stop": bool(state["cold_stop"])}

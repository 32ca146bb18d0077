"""Mixture of Inputs (paper Eq. 5): a Bayesian mix of the sampled token and the output distribution.

``w = (H p + (beta + 1 - H) onehot(y)) / (beta + 1)`` with ``H = entropy(p) / log(|support|)`` in
[0, 1]: the distribution is the Dirichlet prior (weighted by ``H``), the sampled token ``y`` the
observation. beta -> infinity or H = 0 gives Standard; H = 1 and beta = 0 gives Direct Mixture.

``p`` is the raw (temperature 1) distribution over the support (``harness.methods.support``). The
sampled token always gets its observation weight, so the weights sum to 1 even when ``y`` lies
outside the top k. ``reference_quirks=True`` reproduces the reference package (``mixinputs``
0.1.1) instead: ``H (p + beta onehot_topk(y)) / (1 + beta) + (1 - H) onehot(y)``, whose weights sum
to less than 1 when ``y`` is outside the top k.
"""

from __future__ import annotations

import torch

from harness.methods.base import Feedback, Method, Param, Prepared, Rows
from harness.methods.mixing import normalized_entropy
from harness.methods.registry import register
from harness.methods.support import SUPPORT, K, support_identity, support_key, support_of


def moi_weights(
    ids: torch.Tensor | None, probs: torch.Tensor, entropy: torch.Tensor, sampled: torch.Tensor, beta: torch.Tensor,
    reference_quirks: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w_support [n, m], w_obs [n])``: each support token's weight and the sampled token's extra
    weight; the input is ``sum_j w_support[:, j] E[ids[:, j]] + w_obs E[y]``."""
    probs = probs.float()
    denom = beta.float() + 1.0
    if reference_quirks:
        if ids is None:
            raise ValueError("reference_quirks needs a top-k support")
        in_support = (ids == sampled[:, None]).float()
        return entropy[:, None] * (probs + beta[:, None] * in_support) / denom[:, None], 1.0 - entropy
    return (entropy / denom)[:, None] * probs, (denom - entropy) / denom


@register
class MoI(Method):
    name = "moi"
    label = "MoI"
    order = 2
    params = (
        Param("beta", 1.0, low=0, help="small leans on the distribution, large on the sampled token"),
        SUPPORT,
        K,
        Param("reference_quirks", False, "bool", help="the reference package's formula (weights may sum to < 1)"),
    )
    searched = ("beta",)
    examples = (
        {"beta": 0.25}, {"beta": 1.0}, {"beta": 4.0}, {"beta": 1.0, "support": "full"},
        {"beta": 1.0, "reference_quirks": True}, {"beta": 2.0, "k": 5},
    )
    histograms = {"entropy": (0.0, 1.0, 20), "sampled_weight": (0.0, 1.0, 20)}

    def checked(self, params: dict) -> dict:
        if params["reference_quirks"] and params["support"] != "topk":
            raise ValueError("reference_quirks=true needs support=topk (the reference code only has top-k)")
        return params

    def group_key(self, params: dict) -> tuple:
        return (*support_key(params), params["reference_quirks"])

    def identity(self, params: dict) -> dict:
        return {"beta": params["beta"], **support_identity(params), "reference_quirks": params["reference_quirks"]}

    def tag(self, params: dict) -> str:
        return f"moi-b{params['beta']:g}"

    def prepare(self, logits: torch.Tensor, rows: Rows) -> Prepared:
        ids, probs = support_of(logits, rows.group)
        entropy = normalized_entropy(probs)
        return Prepared(kept={"ids": ids, "probs": probs, "entropy": entropy}, stats={"entropy": entropy})

    def feedback(self, prepared: Prepared, emitted: torch.Tensor, rows: Rows) -> Feedback:
        kept = prepared.kept
        ids, probs = kept["ids"], kept["probs"]
        w_support, w_obs = moi_weights(ids, probs, kept["entropy"], emitted, rows.params["beta"], rows.group["reference_quirks"])
        mixed = torch.ones(len(emitted), dtype=torch.bool, device=emitted.device)
        if ids is None:  # dense over the vocabulary
            weights = w_support.scatter_add(1, emitted.long()[:, None], w_obs[:, None])
            sampled_weight = weights.gather(1, emitted.long()[:, None])[:, 0]
            return Feedback(None, weights, mixed, {"sampled_weight": sampled_weight})
        all_ids = torch.cat([ids, emitted.to(ids.dtype)[:, None]], dim=1)
        weights = torch.cat([w_support, w_obs[:, None]], dim=1)
        sampled_weight = (weights * (all_ids == emitted[:, None]).float()).sum(dim=1)
        return Feedback(all_ids, weights, mixed, {"sampled_weight": sampled_weight})

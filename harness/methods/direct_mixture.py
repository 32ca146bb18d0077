"""Direct Mixture: the next input is the output distribution's expected embedding (``w = p``)."""

from __future__ import annotations

import torch

from harness.methods.base import Feedback, Method, Prepared, Rows
from harness.methods.registry import register
from harness.methods.support import SUPPORT, K, support_identity, support_key, support_of


@register
class DirectMixture(Method):
    name = "direct_mixture"
    label = "Direct Mixture"
    order = 1
    params = (SUPPORT, K)

    def group_key(self, params: dict) -> tuple:
        return support_key(params)

    def identity(self, params: dict) -> dict:
        return support_identity(params)

    def prepare(self, logits: torch.Tensor, rows: Rows) -> Prepared:
        ids, probs = support_of(logits, rows.group)
        return Prepared(kept={"ids": ids, "probs": probs})

    def feedback(self, prepared: Prepared, emitted: torch.Tensor, rows: Rows) -> Feedback:
        mixed = torch.ones(len(emitted), dtype=torch.bool, device=emitted.device)
        return Feedback(prepared.kept["ids"], prepared.kept["probs"], mixed)

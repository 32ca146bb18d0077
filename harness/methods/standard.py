"""Standard decoding: the sampled token's own embedding is the next input (``w = onehot(y)``)."""

from __future__ import annotations

from harness.methods.base import Method
from harness.methods.registry import register


@register
class Standard(Method):
    name = "standard"
    label = "Standard"
    order = 0

    def mixes(self, params: dict) -> bool:
        return False

"""What both engines do with a method's output: parameters as numbers, per-sample histograms of a
method's step statistics, and feedback turned into input embeddings."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from harness.methods.base import Feedback
from harness.methods.mixing import mix, mix_dense
from harness.methods.registry import MethodSpec


def numeric_params(spec: MethodSpec) -> dict[str, float]:
    """A spec's parameters as floats for ``Rows.params`` (booleans 0/1, null NaN; choices, which
    are part of the group, are left out)."""
    out = {}
    for param in spec.impl.params:
        value = spec[param.name]
        if param.kind == "choice":
            continue
        out[param.name] = math.nan if value is None else float(value)
    return out


def bucket(values: torch.Tensor, low: float, high: float, bins: int) -> torch.Tensor:
    """The histogram bin of each value: ``bins`` equal bins over [low, high], the ends clamped."""
    scaled = (values.float() - low) / (high - low) * bins
    return scaled.floor().clamp(0, bins - 1).long()


def embed_feedback(feedback: Feedback, embed: Callable[[torch.Tensor], torch.Tensor], matrix: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Input embeddings ``[n, H]`` for a method's feedback. ``embed`` maps token ids to the model's
    input embeddings; ``matrix`` multiplies dense ``[n, V]`` weights by the embedding matrix (with
    any scale the model applies to its embeddings)."""
    if feedback.ids is not None:
        return mix(feedback.ids, feedback.weights, embed)
    return matrix(feedback.weights)


__all__ = ["bucket", "embed_feedback", "mix_dense", "numeric_params"]

"""The support a mixture is taken over: the raw (temperature 1) distribution's top ``k`` tokens,
renormalised (the reference code's choice), or the whole vocabulary (the paper's text)."""

from __future__ import annotations

import torch

from harness.methods.base import Param
from harness.methods.mixing import full_distribution, topk_distribution

DEFAULT_K = 20
SUPPORT = Param("support", "topk", "choice", choices=("topk", "full"), help="topk: the top k tokens renormalised; full: the vocabulary")
K = Param("k", DEFAULT_K, "integer", low=1, help="the top-k support size")


def support_key(params: dict) -> tuple:
    """What shapes a support's tensors: its kind and, for top-k, its size."""
    return (params["support"], params["k"] if params["support"] == "topk" else 0)


def support_of(logits: torch.Tensor, group: dict) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(ids [n, k], probs [n, k])`` for a top-k support, ``(None, probs [n, V])`` for the full one."""
    if group["support"] == "full":
        return None, full_distribution(logits)
    return topk_distribution(logits, int(group["k"]))


def support_identity(params: dict) -> dict:
    """The support's part of the run identity: ``k`` only where it matters (a top-k support)."""
    return {"support": params["support"], **({"k": params["k"]} if params["support"] == "topk" else {})}

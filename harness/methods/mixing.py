"""Mixture of Inputs: the mixing weights and the mixed input embedding, engine independent.

After a token ``y`` is sampled from the next-token distribution ``p``, the next step's input is
``h = sum_i w_i E_i`` instead of ``E_y`` (``E`` is the input embedding matrix):

- ``standard``:        ``w = onehot(y)``
- ``direct_mixture``:  ``w = p``
- ``moi`` (paper Eq. 5): ``w = (H p + (beta + 1 - H) onehot(y)) / (beta + 1)``, with
  ``H = entropy(p) / log(|support|)`` in [0, 1].

``p`` is the model's raw (temperature 1) distribution over a *support*:

- ``support="topk"`` (default, the reference code's choice): the top ``k`` tokens, renormalised,
  entropy normalised by ``log k``;
- ``support="full"`` (the paper's text): the whole vocabulary, entropy normalised by ``log V``.

Weights are kept in a sparse form that every engine can use: a weight per support token
(``w_support``, shape ``[B, M]``) plus a weight for the sampled token (``w_obs``, shape ``[B]``),
which always gets its observation weight, so the weights sum to 1 even when ``y`` lies outside
the top k. ``reference_quirks=True`` reproduces the reference package (``mixinputs`` 0.1.1)
instead: ``H (p + beta onehot_topk(y)) / (1 + beta) + (1 - H) onehot(y)``, whose weights sum to
less than 1 when ``y`` is outside the top k.

Everything here is vectorised over a batch with a different method and beta per row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.methods.spec import DIRECT_MIXTURE, MOI, STANDARD, MixSpec

# --------------------------------------------------------------------------------------------
# The distribution over the support
# --------------------------------------------------------------------------------------------


def topk(logits: torch.Tensor, k: int, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(logits, k)`` over the last dimension of ``[B, V]``, faster on CPUs.

    On CPUs, ``torch.topk`` over a large vocabulary is slow (~40 us per row of 32k); this looks
    only inside the ``k`` chunks of ``chunk`` tokens with the largest maxima, which hold every
    one of the top ``k`` (a chunk outside them has a maximum no larger than the k-th largest
    chunk maximum, itself no larger than the k-th largest logit). Same values; among exactly
    equal logits the ids may differ. 2-3x faster for 32k-150k vocabularies; other devices
    use ``torch.topk`` directly.
    """
    batch, vocab = logits.shape
    n = vocab // chunk
    if logits.device.type != "cpu" or n < 4 * k:
        return torch.topk(logits, k, dim=-1)
    head = logits[:, : n * chunk].reshape(batch, n, chunk)
    chunks = torch.topk(head.amax(dim=-1), k, dim=-1).indices  # [B, k]
    candidates = head.gather(1, chunks[:, :, None].expand(batch, k, chunk)).reshape(batch, k * chunk)
    ids = (chunks[:, :, None] * chunk + torch.arange(chunk, device=logits.device)).reshape(batch, k * chunk)
    if n * chunk < vocab:  # the last, partial chunk is always a candidate
        candidates = torch.cat([candidates, logits[:, n * chunk :]], dim=1)
        tail = torch.arange(n * chunk, vocab, device=logits.device).expand(batch, -1)
        ids = torch.cat([ids, tail], dim=1)
    values, pos = torch.topk(candidates, k, dim=-1)
    return values, ids.gather(1, pos)


def topk_distribution(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` token ids of raw logits ``[B, V]`` and their renormalised probabilities (fp32)."""
    k = min(k, logits.shape[-1])
    # Select in the logits' own dtype (no vocabulary-sized fp32 copy); the values convert exactly.
    values, ids = topk(logits, k)
    return ids, torch.softmax(values.float(), dim=-1)


def full_distribution(logits: torch.Tensor) -> torch.Tensor:
    """The raw temperature-1 distribution over the whole vocabulary (fp32), shape ``[B, V]``."""
    return torch.softmax(logits.float(), dim=-1)


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of ``probs`` ``[B, M]`` divided by ``log M``, in [0, 1]."""
    n = probs.shape[-1]
    if n <= 1:
        return torch.zeros(probs.shape[:-1], dtype=probs.dtype, device=probs.device)
    plogp = probs * torch.log(probs.clamp_min(1e-12))
    return -plogp.sum(dim=-1) / math.log(n)


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def mixing_weights(
    support_ids: torch.Tensor | None,
    probs: torch.Tensor,
    sampled: torch.Tensor,
    methods: torch.Tensor,
    betas: torch.Tensor,
    reference_quirks: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixing weights for a batch, one method and beta per row.

    Args:
        support_ids: ``[B, M]`` token ids of the support, or None for the full vocabulary
            (then column ``j`` of ``probs`` is token ``j``).
        probs: ``[B, M]`` the distribution over the support (rows sum to 1).
        sampled: ``[B]`` the sampled token ids.
        methods: ``[B]`` method codes (``STANDARD``, ``DIRECT_MIXTURE``, ``MOI``).
        betas: ``[B]`` MoI strengths (ignored by the other methods).
        reference_quirks: use the reference package's formula (see the module docstring).

    Returns:
        ``(w_support [B, M], w_obs [B])``: the weight of each support token and the extra
        weight of the sampled token. The input is ``sum_j w_support[j] E[ids_j] + w_obs E[y]``.
    """
    probs = probs.float()
    methods = methods.to(probs.device)
    betas = betas.to(probs.device, torch.float32)
    entropy = normalized_entropy(probs)
    denom = betas + 1.0
    if reference_quirks:
        if support_ids is None:
            raise ValueError("reference_quirks needs a top-k support")
        in_support = (support_ids == sampled[:, None]).float()
        moi_support = entropy[:, None] * (probs + betas[:, None] * in_support) / denom[:, None]
        moi_obs = 1.0 - entropy
    else:
        moi_support = (entropy / denom)[:, None] * probs
        moi_obs = (denom - entropy) / denom
    is_moi = (methods == MOI)[:, None]
    is_dm = (methods == DIRECT_MIXTURE)[:, None]
    w_support = torch.where(is_moi, moi_support, torch.where(is_dm, probs, torch.zeros_like(probs)))
    w_obs = torch.where(
        methods == MOI, moi_obs, torch.where(methods == STANDARD, torch.ones_like(moi_obs), torch.zeros_like(moi_obs))
    )
    return w_support, w_obs


def dense_weights(
    support_ids: torch.Tensor | None,
    w_support: torch.Tensor,
    sampled: torch.Tensor,
    w_obs: torch.Tensor,
    vocab_size: int,
) -> torch.Tensor:
    """The weights as a dense ``[B, V]`` matrix over the vocabulary."""
    batch = w_support.shape[0]
    dense = torch.zeros(batch, vocab_size, dtype=w_support.dtype, device=w_support.device)
    if support_ids is None:
        dense[:, : w_support.shape[1]] += w_support
    else:
        dense.scatter_add_(1, support_ids.long(), w_support)
    dense.scatter_add_(1, sampled.long()[:, None], w_obs[:, None].to(dense.dtype))
    return dense


# --------------------------------------------------------------------------------------------
# Mixed embeddings
# --------------------------------------------------------------------------------------------


def mix_embeddings(
    support_ids: torch.Tensor,
    w_support: torch.Tensor,
    sampled: torch.Tensor,
    w_obs: torch.Tensor,
    embed: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``sum_j w_support[j] E[ids_j] + w_obs E[y]`` for a top-k support, shape ``[B, H]``.

    ``embed`` maps token ids to input embeddings (the model's own embedding module, so that
    scaled or vocabulary-parallel embeddings are handled by the model). Sums run in fp32 and
    the result has the embedding's dtype.
    """
    ids = torch.cat([support_ids.long(), sampled.long()[:, None]], dim=1)
    weights = torch.cat([w_support, w_obs[:, None].to(w_support.dtype)], dim=1)
    vectors = embed(ids)
    # A batched matmul: on CPUs a broadcast multiply + sum over the middle dimension is ~10x slower.
    mixed = torch.bmm(weights.float().unsqueeze(1), vectors.float()).squeeze(1)
    return mixed.to(vectors.dtype)


def mix_dense(weights: torch.Tensor, embedding_matrix: torch.Tensor) -> torch.Tensor:
    """``weights [B, V] @ E [V, H]`` in fp32, for the full-vocabulary support.

    The matrix may hold more rows than ``weights`` has columns (padded vocabularies).
    """
    matrix = embedding_matrix[: weights.shape[1]]
    return (weights.float() @ matrix.float()).to(embedding_matrix.dtype)


# --------------------------------------------------------------------------------------------
# One step for a whole batch (what an engine calls)
# --------------------------------------------------------------------------------------------


@dataclass
class SupportRows:
    """The retained distribution of some rows: what a runner keeps between steps.

    For ``topk`` rows: ``ids`` and ``probs`` are ``[n, k]``. For ``full`` rows: ``ids`` is None
    and ``probs`` is ``[n, V]``.
    """

    ids: torch.Tensor | None
    probs: torch.Tensor


def support_of(logits: torch.Tensor, spec: MixSpec) -> SupportRows:
    """The distribution a spec mixes over, from raw logits ``[n, V]``."""
    if spec.support == "full":
        return SupportRows(None, full_distribution(logits))
    ids, probs = topk_distribution(logits, spec.k)
    return SupportRows(ids, probs)


def group_rows(specs: Sequence[MixSpec]) -> dict[tuple, list[int]]:
    """Rows of mixed requests grouped by what shapes their support: (support, k, quirks)."""
    groups: dict[tuple, list[int]] = {}
    for row, spec in enumerate(specs):
        if spec.mixed:
            key = (spec.support, spec.k if spec.support == "topk" else 0, spec.reference_quirks)
            groups.setdefault(key, []).append(row)
    return groups


def mixed_inputs(
    supports: SupportRows,
    sampled: torch.Tensor,
    specs: Sequence[MixSpec],
    embed: Callable[[torch.Tensor], torch.Tensor],
    embedding_matrix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mixed input embeddings ``[n, H]`` for rows that share one support shape.

    ``supports`` holds the rows' retained distributions; ``specs`` their settings (all with the
    same support, k and quirks flag). ``embedding_matrix`` is needed for the full support.
    """
    device = supports.probs.device
    methods = torch.tensor([s.code for s in specs], device=device)
    betas = torch.tensor([float(s.beta) for s in specs], device=device)
    quirks = specs[0].reference_quirks
    w_support, w_obs = mixing_weights(supports.ids, supports.probs, sampled, methods, betas, quirks)
    if supports.ids is not None:
        return mix_embeddings(supports.ids, w_support, sampled, w_obs, embed)
    if embedding_matrix is None:
        raise ValueError("support=full needs the embedding matrix")
    dense = dense_weights(None, w_support, sampled, w_obs, supports.probs.shape[1])
    return mix_dense(dense, embedding_matrix)

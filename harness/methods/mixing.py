"""The math every decoding method shares, engine independent: supports of a distribution, entropy,
the sampling filters, and mixed input embeddings.

A method's next input is ``h = sum_i w_i E_i`` (``E`` the input embedding matrix); its weights
come as a sparse ``(ids [n, m], weights [n, m])`` pair or a dense ``[n, V]`` matrix, and
:func:`mix` / :func:`mix_dense` turn them into embeddings with the model's own embedding (so
scaled or vocabulary-parallel embeddings are handled by the model).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# --------------------------------------------------------------------------------------------
# Distributions
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


def candidates(top_k, vocab: int) -> int:
    """How many candidates the sampling filters can keep: the largest top-k (host values), or the
    whole vocabulary when some row has none."""
    top_k = [int(k) for k in top_k]
    return vocab if not top_k or min(top_k) <= 0 else min(vocab, max(top_k))


def filtered_distribution(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sampling distribution after temperature, top-k, top-p and min-p, renormalised after each
    filter (in that order, as SGLang's samplers do), per row.

    Returns ``(ids [n, C], probs [n, C], entropy [n])``: the ``width`` most probable candidates
    (:func:`candidates`: enough for every row's top-k), sorted, their filtered
    probabilities (0 for tokens a filter removed), and the entropy in nats of the unfiltered
    temperature-scaled distribution. ``temperature == 0`` rows are greedy: all mass on the argmax.
    """
    n, vocab = logits.shape
    device = logits.device
    greedy = temperature <= 0
    scaled = logits.float() / torch.where(greedy, torch.ones_like(temperature), temperature).float()[:, None]
    log_z = torch.logsumexp(scaled, dim=-1, keepdim=True)
    log_p = scaled - log_z
    entropy = -(log_p.exp() * log_p).sum(dim=-1)
    entropy = torch.where(greedy, torch.zeros_like(entropy), entropy)
    limited = top_k > 0
    values, ids = torch.topk(scaled, width, dim=-1)
    probs = (values - log_z).exp()
    position = torch.arange(width, device=device)[None, :]
    first = position == 0
    probs = torch.where(greedy[:, None], first.float().expand(n, width), probs)
    keep = ~limited[:, None] | (position < top_k[:, None])
    probs = _renormalised(probs * keep)
    before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each candidate
    probs = _renormalised(probs * ((before < top_p[:, None]) | first))
    probs = _renormalised(probs * (probs >= min_p[:, None] * probs[:, :1]))
    return ids, probs, entropy


def _renormalised(probs: torch.Tensor) -> torch.Tensor:
    return probs / probs.sum(dim=-1, keepdim=True).clamp_min(1e-30)


# --------------------------------------------------------------------------------------------
# Mixed embeddings
# --------------------------------------------------------------------------------------------


def mix(ids: torch.Tensor, weights: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``sum_j weights[:, j] E[ids[:, j]]``, shape ``[n, H]``.

    ``embed`` maps token ids to input embeddings (the model's own embedding module). Sums run in
    fp32 and the result has the embedding's dtype.
    """
    vectors = embed(ids.long())
    # A batched matmul: on CPUs a broadcast multiply + sum over the middle dimension is ~10x slower.
    mixed = torch.bmm(weights.float().unsqueeze(1), vectors.float()).squeeze(1)
    return mixed.to(vectors.dtype)


def mix_dense(weights: torch.Tensor, embedding_matrix: torch.Tensor) -> torch.Tensor:
    """``weights [B, V] @ E [V, H]`` in fp32, for the full-vocabulary support.

    The matrix may hold more rows than ``weights`` has columns (padded vocabularies).
    """
    matrix = embedding_matrix[: weights.shape[1]]
    return (weights.float() @ matrix.float()).to(embedding_matrix.dtype)


def dense(ids: torch.Tensor, weights: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Sparse weights as a dense ``[n, V]`` matrix (repeated ids add up)."""
    out = torch.zeros(weights.shape[0], vocab_size, dtype=weights.dtype, device=weights.device)
    return out.scatter_add_(1, ids.long(), weights)

"""The device memory MoI's hooks need beyond vLLM's own profile, and its reservation.

vLLM sizes its KV cache from a profile of the model and its sampler, without MoI's hooks. What the
hooks add at their peak, per engine (bytes), is bounded by:

- ``vocabulary``: ``rows x V x 64``: the widest built-in rule over a step's logits (Soft Thinking
  with no top-k filters over the whole vocabulary: 53 bytes per row and vocabulary entry measured,
  sort values and ids, probabilities and their temporaries), which also covers a full support's
  kept weights (``support=full``: 4 bytes per entry, kept from one step to the next) and MoI's
  dense mixing weights;
- ``mixing``: ``rows x 32 x H x (e + 4) + rows x H x 8``: gathering a sparse support's embeddings
  (the model's dtype, ``e`` bytes, plus an fp32 copy) for supports of up to ``MIX_WIDTH`` tokens;
  wider supports are mixed in row chunks of the same size (:mod:`harness.engines.vllm.runner`);
- ``replay``: ``tokens x H x (4 + e)``: the history of a recomputed (preempted) request, at most
  ``max_num_batched_tokens`` positions a step, mixed in the same chunks;
- ``state``: 16 KiB per row (at least 64 rows) for per-request state, histograms and index arrays;

plus 25% for allocator rounding and kernels' internal workspaces (not measured), and 16 MiB.
``rows`` is ``max_num_seqs``. ``tests/test_vllm_memory.py`` measures every tensor the hooks
allocate, for every method's examples, and checks the peak against this bound.
"""

from __future__ import annotations

import math

from harness.engines.vllm.settings import MoIConfigError

PER_VOCAB_ENTRY = 64
MIX_WIDTH = 32
PER_ROW = 16 << 10
MARGIN = 1.25
FIXED = 16 << 20
MiB = 1 << 20


def device_bound(rows: int, vocab: int, hidden: int, embed_bytes: int, tokens: int) -> dict[str, int]:
    """The bound above, by part, and its ``total``."""
    parts = {
        "vocabulary": rows * vocab * PER_VOCAB_ENTRY,
        "mixing": rows * MIX_WIDTH * hidden * (embed_bytes + 4) + rows * hidden * 8,
        "replay": tokens * hidden * (embed_bytes + 4),
        "state": max(rows, 64) * PER_ROW,  # the per-request arrays start with room for 64
    }
    parts["total"] = math.ceil(MARGIN * sum(parts.values())) + FIXED
    return parts


def bound_of(vllm_config) -> dict[str, int]:
    """:func:`device_bound` for the model and scheduler of a ``VllmConfig``."""
    model, scheduler = vllm_config.model_config, vllm_config.scheduler_config
    return device_bound(scheduler.max_num_seqs, model.get_vocab_size(), model.get_hidden_size(),
                        model.dtype.itemsize, scheduler.max_num_batched_tokens)


def reserve(available: int, bound: int, explicit: bool, free: int | None) -> tuple[int, str]:
    """The KV cache budget once MoI's ``bound`` is set aside, and a line for the log.

    ``available``: what vLLM determined for the KV cache; ``explicit``: it is the user's
    ``kv_cache_memory_bytes`` (vLLM allocates exactly that and skips its profile), in which case it
    is kept and MoI's memory must fit in what is ``free`` beside it. Raises MoIConfigError (one
    line) when it cannot fit.
    """
    if explicit:
        if free is not None and available + bound > free:
            raise MoIConfigError(
                f"MoI needs up to {bound / MiB:.0f} MiB of device memory beside the explicit KV cache "
                f"(kv_cache_memory_bytes={available}), but only {free / MiB:.0f} MiB are free; lower "
                "kv_cache_memory_bytes or max_num_seqs")
        return available, (f"MoI: up to {bound / MiB:.0f} MiB of device memory for its hooks, beside the explicit "
                           f"KV cache of {available / MiB:.0f} MiB (not reduced)")
    if bound >= available:
        raise MoIConfigError(
            f"MoI needs up to {bound / MiB:.0f} MiB of device memory for its hooks, more than the "
            f"{available / MiB:.0f} MiB vLLM found for the KV cache; lower max_num_seqs or raise "
            "gpu_memory_utilization")
    return available - bound, (f"MoI reserves {bound / MiB:.0f} MiB of the KV cache budget for its hooks: "
                               f"{available / MiB:.0f} MiB -> {(available - bound) / MiB:.0f} MiB")


def free_bytes(device) -> int | None:
    """Device memory a new tensor could use now (CUDA: free plus torch's cached blocks; CPU: RAM)."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        import psutil

        return psutil.virtual_memory().available
    return None

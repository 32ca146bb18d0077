"""The MoI model runner: a mixin over vLLM 0.32's V1 model runner (MRV1, ``GPUModelRunner``).

Three overrides, nothing copied:

- ``_update_states``: files last step's history rows, forgets finished requests, reads each new
  request's spec from ``SamplingParams.extra_args`` (over the process default).
- ``_sample``: before vLLM's sampler edits the logits in place, keeps the support (top-k ids and
  renormalised raw probabilities, or the full distribution) of every mixed row that samples.
- ``_preprocess``: after vLLM has embedded this step's token ids into its persistent
  ``inputs_embeds`` buffer, overwrites every position that holds a generated token of a mixed
  request with that token's mixture (from the pending support, or from the history when a
  preempted request is recomputed). The buffer is the one CUDA graphs are captured with.

Everything is keyed by request id, so rows joining, leaving, being condensed or reordered do not
matter. Standard rows are never touched. All MoI math comes from ``harness.methods``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from harness.engines.vllm.settings import check_vllm_config, default_spec, moi_section, request_spec
from harness.engines.vllm.state import NONE, MoIBatchState, SupportRecord
from harness.methods import MixSpec
from harness.methods.mixing import dense_weights, mix_embeddings, mixing_weights, support_of

logger = logging.getLogger("vllm.moi")  # under vLLM's logger: shown in vLLM's logs


def concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``starts[i], starts[i] + 1, ..., starts[i] + counts[i] - 1`` for every i, concatenated.

    Each item's offset within its own range is its global index minus the index where its range
    begins (``cumsum(counts) - counts``, repeated over the range).
    """
    total = int(counts.sum())
    range_begins = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total) - range_begins)


class MoIRunnerMixin:
    """Mixture of Inputs for MRV1 runners; combine with ``GPUModelRunner`` or ``CPUModelRunner``."""

    moi: MoIBatchState

    def _moi_setup(self) -> None:
        """Called at the end of ``__init__``: checks the config and turns the embeddings path on."""
        check_vllm_config(self.vllm_config)
        additional = self.vllm_config.additional_config
        default = default_spec(additional)
        log_requests = bool(moi_section(additional).get("log_requests", False))
        # Feed the model embeddings instead of token ids, so that rows can be mixed. The buffer
        # already exists (vLLM allocates it for prompt embeddings and multimodal inputs).
        self.enable_prompt_embeds = True
        self.moi = MoIBatchState(default, self.device, log_requests)
        self._moi_embedding = None
        self._moi_full_scale: float | None = None
        self._moi_warned: set[str] = set()
        self._moi_kept_bytes = 0
        logger.info(
            "MoI active: %s (vLLM V1 model runner subclass); per-request settings from "
            "SamplingParams.extra_args %s; default for requests without them: %s",
            type(self).__qualname__,
            "moi_*",
            default,
        )

    # ----------------------------------------------------------------------------------------
    # Overrides
    # ----------------------------------------------------------------------------------------

    def _update_states(self, scheduler_output):
        start = time.perf_counter()
        self.moi.flush()
        self.moi.finish(scheduler_output.finished_req_ids)
        self.moi.host_seconds += time.perf_counter() - start
        result = super()._update_states(scheduler_output)
        for new in scheduler_output.scheduled_new_reqs:
            if new.req_id not in self.moi.index:
                self._moi_add(new.req_id)
        for req_id in scheduler_output.scheduled_cached_reqs.resumed_req_ids:
            num = self.moi.index.get(req_id)
            if num is not None and self.moi.mixed[num]:
                self.moi.totals["resumed"] += 1
        return result

    def _sample(self, logits, spec_decode_metadata):
        if logits is not None and spec_decode_metadata is None and self.moi.has_mixed:
            start = time.perf_counter()
            self._moi_capture(logits)
            self.moi.host_seconds += time.perf_counter() - start
        return super()._sample(logits, spec_decode_metadata)

    def _preprocess(self, scheduler_output, num_input_tokens, intermediate_tensors=None):
        out = super()._preprocess(scheduler_output, num_input_tokens, intermediate_tensors)
        inputs_embeds = out[1]
        if inputs_embeds is not None and self.moi.has_mixed:
            start = time.perf_counter()
            self._moi_mix(inputs_embeds)
            self.moi.host_seconds += time.perf_counter() - start
        return out

    # ----------------------------------------------------------------------------------------
    # Requests
    # ----------------------------------------------------------------------------------------

    def _moi_add(self, req_id: str) -> None:
        req = self.requests[req_id]
        spec = MixSpec()
        if req.sampling_params is not None:
            try:
                spec = request_spec(req.sampling_params.extra_args, self.moi.default)
            except ValueError as err:
                # Normally refused at admission (harness.engines.vllm.validator); never crash the engine.
                logger.error("MoI: request %s has invalid settings (%s); it runs as Standard", req_id, err)
        self.moi.add(req_id, spec, req.num_prompt_tokens)

    def _moi_numbers(self) -> tuple[np.ndarray, np.ndarray]:
        """The request number of each row of the batch, and which rows are mixed requests."""
        numbers = self.moi.numbers(self.input_batch.req_ids)
        known = numbers != NONE
        return numbers, known & self.moi.mixed[np.where(known, numbers, 0)]

    # ----------------------------------------------------------------------------------------
    # Sampling: keep the support of every mixed row that samples a token
    # ----------------------------------------------------------------------------------------

    def _moi_capture(self, logits: torch.Tensor) -> None:
        moi = self.moi
        n = self.input_batch.num_reqs
        numbers, mixed = self._moi_numbers()
        # vLLM's own per-row arrays of this step: the length after it, and the partial prefills
        # (whose sampled token is discarded).
        seq_lens = self.optimistic_seq_lens_cpu[:n].numpy()
        partial = self.discard_request_mask.np[:n].astype(bool)
        rows = np.flatnonzero(mixed & ~partial)
        if rows.size == 0:
            return
        # Which generated token each row samples now (0 = the first after the prompt).
        gen_index = seq_lens[rows] - moi.num_prompt[numbers[rows]]
        groups = moi.group[numbers[rows]]
        for group in np.unique(groups).tolist():
            in_group = groups == group
            picked = rows[in_group]
            if picked.size == logits.shape[0]:
                sub = logits
            else:
                sub = logits.index_select(0, torch.from_numpy(picked).to(logits.device))
            support = support_of(sub, moi.group_specs[group])
            moi.keep(SupportRecord(support.ids, support.probs), numbers[picked], gen_index[in_group])
        self._moi_kept_bytes = moi.forget_unused_records()
        moi.note_device_bytes(self._moi_kept_bytes)

    # ----------------------------------------------------------------------------------------
    # Inputs: overwrite the embeddings of generated tokens of mixed requests
    # ----------------------------------------------------------------------------------------

    def _moi_mix(self, out: torch.Tensor) -> None:
        """Every position of this step holding a generated token of a mixed request gets its mixture."""
        moi = self.moi
        n = self.input_batch.num_reqs
        numbers, mixed = self._moi_numbers()
        query_starts = self.query_start_loc.np[: n + 1]  # row r's tokens are out[query_starts[r]:query_starts[r + 1]]
        computed = self.input_batch.num_computed_tokens_cpu[:n]  # sequence position of each row's first token
        ends = computed + np.diff(query_starts)  # one past each row's last position this step
        # The first position this step that holds a generated token (not the prompt), per row.
        first_generated = np.maximum(computed, moi.num_prompt[np.where(mixed, numbers, 0)])
        rows = np.flatnonzero(mixed & (first_generated < ends))
        if rows.size == 0:
            return
        # One item per generated position: usually one per row (a decode step); a recomputed
        # (preempted) request has many.
        counts = ends[rows] - first_generated[rows]
        item_rows = np.repeat(rows, counts)
        positions = concat_ranges(first_generated[rows], counts)  # sequence positions, row after row
        token_index = query_starts[item_rows] + positions - computed[item_rows]  # rows of `out`
        item_numbers = numbers[item_rows]
        gen_index = positions - moi.num_prompt[item_numbers]
        fresh = moi.pending_gen_index[item_numbers] == gen_index
        replay = ~fresh & (gen_index < moi.filed[item_numbers])
        if not (fresh | replay).all():
            self._moi_warn("missing", "MoI: no distribution kept for a generated token; it is fed unmixed")
        groups = moi.group[item_numbers]
        for group in np.unique(groups).tolist():
            in_group = groups == group
            if (pick := in_group & fresh).any():
                self._moi_mix_fresh(group, item_numbers[pick], token_index[pick], out)
            if (pick := in_group & replay).any():
                self._moi_replay(group, item_numbers[pick], gen_index[pick], token_index[pick], out)

    def _moi_mix_fresh(self, group: int, numbers: np.ndarray, token_index: np.ndarray, out: torch.Tensor) -> None:
        """Tokens fed back for the first time: mix from the pending supports, stage the history."""
        moi = self.moi
        device = out.device
        spec = moi.group_specs[group]
        ids, probs = self._moi_pending(numbers)
        index = torch.from_numpy(token_index).to(device)
        sampled = self.input_ids.gpu.index_select(0, index).long()
        methods = torch.from_numpy(moi.method[numbers]).to(device)
        betas = torch.from_numpy(moi.beta[numbers]).to(device)
        if spec.support == "full":
            mixed = self._moi_full_mix(probs, sampled, methods, betas)
            rows = {"embedding": mixed}
        else:
            w_support, w_obs = mixing_weights(ids, probs, sampled, methods, betas, spec.reference_quirks)
            mixed = mix_embeddings(ids, w_support, sampled, w_obs, self._moi_embed)
            rows = {"ids": ids.to(torch.int32), "probs": probs}
        out.index_copy_(0, index, mixed.to(out.dtype))
        moi.stager.stage(group, numbers, rows)
        moi.pending_gen_index[numbers] = NONE
        moi.pending_record[numbers] = NONE
        moi.stored[numbers] += 1
        self._moi_note_temporaries(len(numbers), probs.shape[1], out.shape[1], spec.support == "full")

    def _moi_pending(self, numbers: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The pending supports of these requests, in order (usually all rows of one record)."""
        moi = self.moi
        record_ids, rows = moi.pending_record[numbers], moi.pending_row[numbers]
        parts, order = [], []
        for record_id in np.unique(record_ids).tolist():
            record = moi.records[record_id]
            which = np.flatnonzero(record_ids == record_id)
            if len(which) == record.probs.shape[0] and np.array_equal(rows[which], np.arange(len(which))):
                parts.append((record.ids, record.probs))  # the whole record, in order: no copy
            else:
                index = torch.from_numpy(rows[which]).to(record.probs.device)
                ids = record.ids.index_select(0, index) if record.ids is not None else None
                parts.append((ids, record.probs.index_select(0, index)))
            order.append(which)
        if len(parts) == 1 and np.array_equal(order[0], np.arange(len(numbers))):
            return parts[0]
        inverse = torch.from_numpy(np.argsort(np.concatenate(order))).to(parts[0][1].device)
        probs = torch.cat([p for _, p in parts]).index_select(0, inverse)
        ids = None if parts[0][0] is None else torch.cat([i for i, _ in parts]).index_select(0, inverse)
        return ids, probs

    def _moi_replay(
        self, group: int, numbers: np.ndarray, gen_index: np.ndarray, token_index: np.ndarray, out: torch.Tensor
    ) -> None:
        """Rebuild the inputs of a recomputed (preempted) request from its history."""
        moi = self.moi
        device = out.device
        spec = moi.group_specs[group]
        slots = [moi.slots[number][g] for number, g in zip(numbers.tolist(), gen_index.tolist())]
        stored = {name: torch.from_numpy(value).to(device) for name, value in moi.arenas[group].take(slots).items()}
        index = torch.from_numpy(token_index).to(device)
        if spec.support == "full":
            mixed = stored["embedding"]
        else:
            sampled = self.input_ids.gpu.index_select(0, index).long()
            methods = torch.from_numpy(moi.method[numbers]).to(device)
            betas = torch.from_numpy(moi.beta[numbers]).to(device)
            ids = stored["ids"].long()
            w_support, w_obs = mixing_weights(ids, stored["probs"], sampled, methods, betas, spec.reference_quirks)
            mixed = mix_embeddings(ids, w_support, sampled, w_obs, self._moi_embed)
        out.index_copy_(0, index, mixed.to(out.dtype))
        np.add.at(moi.replayed, numbers, 1)

    def _moi_embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The model's own input embedding (handles vocabulary-parallel and scaled embeddings)."""
        return self.model.embed_input_ids(ids.reshape(-1)).reshape(*ids.shape, -1)

    # ----------------------------------------------------------------------------------------
    # The full-vocabulary support: a dense mixture over the (vocabulary-parallel) matrix
    # ----------------------------------------------------------------------------------------

    def _moi_full_mix(
        self, probs: torch.Tensor, sampled: torch.Tensor, methods: torch.Tensor, betas: torch.Tensor
    ) -> torch.Tensor:
        w_support, w_obs = mixing_weights(None, probs, sampled, methods, betas)
        dense = dense_weights(None, w_support, sampled, w_obs, probs.shape[1])
        if self._moi_full_scale is None:
            self._moi_full_scale = self._moi_measure_scale(sampled)
        return self._moi_dense(dense) * self._moi_full_scale

    def _moi_dense(self, dense: torch.Tensor) -> torch.Tensor:
        """``dense [m, V] @ E`` with this rank's rows of ``E``, summed over tensor-parallel ranks.

        In fp32 this is ``harness.methods.mixing.mix_dense``; in 16-bit the matrix is not copied to fp32
        (that would be a vocabulary-sized copy per step).
        """
        from vllm.distributed import get_tensor_model_parallel_world_size, tensor_model_parallel_all_reduce

        module = self._moi_embedding_module()
        weight = module.weight
        shard = getattr(module, "shard_indices", None)
        first, last = (shard.org_vocab_start_index, shard.org_vocab_end_index) if shard else (0, weight.shape[0])
        last = min(last, dense.shape[1])  # this rank's vocabulary rows are [first, last)
        if weight.dtype == torch.float32:
            local = dense[:, first:last] @ weight[: last - first]
        else:
            local = (dense[:, first:last].to(weight.dtype) @ weight[: last - first]).float()
        if get_tensor_model_parallel_world_size() > 1:
            local = tensor_model_parallel_all_reduce(local)
        return local

    def _moi_embedding_module(self):
        if self._moi_embedding is None:
            from vllm.model_executor.layers.vocab_parallel_embedding import (
                ParallelLMHead,
                VocabParallelEmbedding,
            )

            found = [
                (name, m)
                for name, m in self.model.named_modules()
                if isinstance(m, VocabParallelEmbedding) and not isinstance(m, ParallelLMHead)
            ]
            if not found:
                raise RuntimeError("MoI support=full: the model has no vocabulary embedding module")
            found.sort(key=lambda nm: not nm[0].endswith("embed_tokens"))
            self._moi_embedding = found[0][1]
        return self._moi_embedding

    def _moi_measure_scale(self, sampled: torch.Tensor) -> float:
        """The factor between the model's embedding of a token and its matrix row (Gemma scales)."""
        onehot = torch.zeros(len(sampled), self._moi_vocab_size(), device=sampled.device)
        onehot[torch.arange(len(sampled), device=sampled.device), sampled] = 1.0
        raw = self._moi_dense(onehot)
        emb = self._moi_embed(sampled).float()
        if torch.allclose(emb, raw):
            return 1.0
        scale = float((emb * raw).sum() / (raw * raw).sum().clamp_min(1e-30))
        logger.info("MoI support=full: the model scales its input embeddings by %.6g", scale)
        return scale

    def _moi_vocab_size(self) -> int:
        return self.input_batch.vocab_size

    # ----------------------------------------------------------------------------------------
    # Bookkeeping
    # ----------------------------------------------------------------------------------------

    def _moi_note_temporaries(self, m: int, width: int, hidden: int, full: bool) -> None:
        """Peak device bytes: last step's kept supports plus this step's mixing temporaries (sizes)."""
        if full:
            temp = m * width * 4 * 3 + m * hidden * 4  # weights, dense weights, their product
        else:
            temp = m * (width + 1) * hidden * 8 + m * hidden * 4  # gathered vectors (+ fp32 copy), sum
        self.moi.note_device_bytes(self._moi_kept_bytes + temp)

    def _moi_warn(self, key: str, message: str) -> None:
        if key not in self._moi_warned:
            self._moi_warned.add(key)
            logger.warning(message)


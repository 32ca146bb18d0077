"""The method runner: a mixin over vLLM 0.32's V1 model runner (MRV1, ``GPUModelRunner``).

Three overrides, nothing copied:

- ``_update_states``: files last step's staged history rows and finished requests' counters,
  forgets finished requests, reads each new request's method from ``SamplingParams.extra_args``
  (over the process default).
- ``_sample``: before vLLM's sampler edits the logits in place, each group of rows of a mixing
  method gets its method's ``prepare`` on the raw logits; after the sampler, the method may
  replace the emitted tokens (Soft Thinking), updates its state, and its ``feedback`` (the next
  inputs' weights) is kept.
- ``_preprocess``: after vLLM has embedded this step's token ids into its persistent
  ``inputs_embeds`` buffer, every position that holds a generated token of a mixing request is
  overwritten with its feedback's embedding (fresh, or from the history when a preempted request
  is recomputed). The buffer is the one CUDA graphs are captured with.

Everything is keyed by request id, so rows joining, leaving, being condensed or reordered do not
matter. Rows of methods that do not mix (Standard) are never touched. The rules are the methods'
own (:mod:`harness.methods`); nothing here names a method. Host arrays reach the device through
pinned, non-blocking copies, and nothing is read back from the device during a step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from harness.engines.vllm.memory import MIX_WIDTH
from harness.engines.vllm.settings import (
    check_vllm_config,
    default_spec,
    model_facts,
    moi_section,
    request_spec,
)
from harness.engines.vllm.state import NONE, SAMPLING, BatchState, Group, Pending
from harness.methods import KEY_FIELD, SEED_FIELD, MethodSpec, Prepared, Rows
from harness.methods.batch import bucket, embed_feedback

logger = logging.getLogger("vllm.moi")  # under vLLM's logger: shown in vLLM's logs


def concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``starts[i], starts[i] + 1, ..., starts[i] + counts[i] - 1`` for every i, concatenated.

    Each item's offset within its own range is its global index minus the index where its range
    begins (``cumsum(counts) - counts``, repeated over the range).
    """
    total = int(counts.sum())
    range_begins = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total) - range_begins)


@dataclass
class _Sampling:
    """One group's rows at this step, between its method's ``prepare`` and ``feedback``."""

    group: int
    numbers: np.ndarray  # request numbers (host)
    gen_index: np.ndarray  # which generated token each row samples now (host)
    rows_on_device: torch.Tensor  # the rows' positions in this step's logits / sampled tokens
    numbers_on_device: torch.Tensor
    rows: Rows
    prepared: Prepared


class MoIRunnerMixin:
    """Every decoding method for MRV1 runners; combine with ``GPUModelRunner`` or ``CPUModelRunner``."""

    moi: BatchState

    def _moi_setup(self) -> None:
        """Called at the end of ``__init__``: checks the config and turns the embeddings path on."""
        check_vllm_config(self.vllm_config)
        additional = self.vllm_config.additional_config
        default = default_spec(additional)
        section = moi_section(additional)
        log_requests = bool(section.get("log_requests", False))
        # Feed the model embeddings instead of token ids, so that rows can be mixed. The buffer
        # already exists (vLLM allocates it for prompt embeddings and multimodal inputs).
        self.enable_prompt_embeds = True
        self.moi = BatchState(default, model_facts(additional), self.device, log_requests,
                              float(section.get("log_summary_s", 60.0)))
        self._moi_embedding = None
        self._moi_full_scale: torch.Tensor | None = None
        self._moi_buffer_checked = False
        self._moi_warned: set[str] = set()
        self._moi_kept_bytes = 0
        # Embeddings gathered at once when mixing sparse supports (what memory.MIX_WIDTH reserves).
        self._moi_mix_items = self.vllm_config.scheduler_config.max_num_seqs * MIX_WIDTH
        logger.info(
            "MoI active: %s (vLLM V1 model runner subclass); per-request methods from "
            "SamplingParams.extra_args moi_*; default for requests without them: %s",
            type(self).__qualname__,
            default,
        )

    # ----------------------------------------------------------------------------------------
    # Overrides
    # ----------------------------------------------------------------------------------------

    def _update_states(self, scheduler_output):
        start = time.perf_counter()
        self.moi.upload.begin_step()  # every copy of the last step has run (state.Uploader)
        self.moi.flush()
        self.moi.finish(scheduler_output.finished_req_ids)
        if not scheduler_output.total_num_scheduled_tokens:
            # An idle step: nothing runs on the device (and vLLM does not wait for it), so the
            # finished counts are filed now, waiting for their copies.
            self.moi.flush(idle=True)
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
        if logits is None or spec_decode_metadata is not None or not self.moi.has_mixed:
            return super()._sample(logits, spec_decode_metadata)
        start = time.perf_counter()
        groups = self._moi_prepare(logits)
        self.moi.host_seconds += time.perf_counter() - start
        output = super()._sample(logits, spec_decode_metadata)
        start = time.perf_counter()
        self._moi_feedback(groups, output.sampled_token_ids)
        self.moi.host_seconds += time.perf_counter() - start
        return output

    def _preprocess(self, scheduler_output, num_input_tokens, intermediate_tensors=None):
        out = super()._preprocess(scheduler_output, num_input_tokens, intermediate_tensors)
        inputs_embeds = out[1]
        if inputs_embeds is not None and self.moi.has_mixed:
            start = time.perf_counter()
            if not self._moi_buffer_checked:
                self._moi_check_buffer(inputs_embeds)
            self._moi_mix(inputs_embeds)
            self.moi.host_seconds += time.perf_counter() - start
        return out

    def _moi_check_buffer(self, inputs_embeds: torch.Tensor) -> None:
        """Once per engine: the tensor MoI writes must be the persistent ``inputs_embeds`` buffer
        that the model reads (and CUDA graphs were captured with), not a copy of it; a vLLM that
        hands out a copy would otherwise decode unmixed, silently."""
        buffer = self.inputs_embeds.gpu
        same = (inputs_embeds.data_ptr(), inputs_embeds.stride(), inputs_embeds.shape[1:]) == (
            buffer.data_ptr(), buffer.stride(), buffer.shape[1:])
        if not same:
            raise RuntimeError(
                "MoI: vLLM's _preprocess returned an inputs_embeds tensor that is not its persistent "
                "inputs_embeds buffer (a copy?); mixtures written to it would never reach the model. "
                "This vLLM version is not supported by harness.engines.vllm"
            )
        self._moi_buffer_checked = self.moi.inputs_embeds_checked = True

    # ----------------------------------------------------------------------------------------
    # Requests
    # ----------------------------------------------------------------------------------------

    def _moi_add(self, req_id: str) -> None:
        req = self.requests[req_id]
        spec, params = MethodSpec(), req.sampling_params
        if params is not None:
            try:
                spec = request_spec(params.extra_args, self.moi.default)
            except ValueError as err:
                # Normally refused at admission (harness.engines.vllm.validator); never crash the engine.
                logger.error("MoI: request %s has invalid settings (%s); it runs as Standard", req_id, err)
        extra = (params.extra_args or {}) if params is not None else {}
        sampling = {
            "temperature": float(params.temperature) if params is not None else 1.0,
            "top_p": float(params.top_p) if params is not None else 1.0,
            "top_k": float(params.top_k) if params is not None and params.top_k else 0.0,
            "seed": extra.get(SEED_FIELD, params.seed if params is not None else None),
        }
        key = extra.get(KEY_FIELD, "")
        self.moi.add(req_id, spec, req.num_prompt_tokens, sampling, key if isinstance(key, str) else "")

    def _moi_numbers(self) -> tuple[np.ndarray, np.ndarray]:
        """The request number of each row of the batch, and which rows are mixing requests."""
        numbers = self.moi.numbers(self.input_batch.req_ids)
        known = numbers != NONE
        return numbers, known & self.moi.mixed[np.where(known, numbers, 0)]

    # ----------------------------------------------------------------------------------------
    # Sampling: each method's rule on its rows, before and after vLLM's sampler
    # ----------------------------------------------------------------------------------------

    def _moi_prepare(self, logits: torch.Tensor) -> list[_Sampling]:
        """``prepare`` of each group's rows on the raw logits (before the sampler edits them)."""
        moi = self.moi
        n = self.input_batch.num_reqs
        numbers, mixed = self._moi_numbers()
        # vLLM's own per-row arrays of this step: the length after it, and the partial prefills
        # (whose sampled token is discarded).
        seq_lens = self.optimistic_seq_lens_cpu[:n].numpy()
        partial = self.discard_request_mask.np[:n].astype(bool)
        rows = np.flatnonzero(mixed & ~partial)
        if rows.size == 0:
            return []
        # Which generated token each row samples now (0 = the first after the prompt).
        gen_index = seq_lens[rows] - moi.num_prompt[numbers[rows]]
        groups = moi.group[numbers[rows]]
        out = []
        for g in np.unique(groups).tolist():
            in_group = groups == g
            picked, picked_numbers = rows[in_group], numbers[rows[in_group]]
            indices = moi.upload(np.stack([picked, picked_numbers]))
            rows_on_device, numbers_on_device = indices[0], indices[1]
            group = moi.groups[g]
            batch = self._moi_rows(g, group, picked_numbers, gen_index[in_group], numbers_on_device)
            sub = logits if picked.size == logits.shape[0] else logits.index_select(0, rows_on_device)
            prepared = group.impl.prepare(sub, batch)
            out.append(_Sampling(g, picked_numbers, gen_index[in_group], rows_on_device, numbers_on_device, batch, prepared))
        return out

    def _moi_rows(self, g: int, group: Group, numbers: np.ndarray, gen_index: np.ndarray, numbers_on_device) -> Rows:
        """A group's rows as its method sees them: parameters and settings uploaded in one copy,
        state gathered on the device."""
        host = np.concatenate([group.values[numbers], gen_index[:, None].astype(np.float64)], axis=1)
        values = self.moi.upload(host)
        names = [*group.columns, "step"]
        column = {name: values[:, i] for i, name in enumerate(names)}
        params = {name: column[name].float() for name in group.columns if name not in SAMPLING}
        return Rows(
            params=params,
            state={name: t.index_select(0, numbers_on_device) for name, t in group.state.items()},
            group=group.spec.params,
            temperature=column["temperature"].float(),
            top_p=column["top_p"].float(),
            top_k=column["top_k"].long(),
            seed=column["seed"].long(),
            step=column["step"].long(),
            host={name: host[:, i] for i, name in enumerate(names)},
        )

    def _moi_feedback(self, groups: list[_Sampling], sampled: torch.Tensor) -> None:
        """After the sampler: emitted tokens, the methods' new state, statistics and feedback."""
        moi = self.moi
        for s in groups:
            group = moi.groups[s.group]
            if s.prepared.emitted is not None:  # the method chose the tokens: they are what vLLM emits
                sampled.index_put_((s.rows_on_device, torch.zeros_like(s.rows_on_device)), s.prepared.emitted.to(sampled.dtype))
                emitted = s.prepared.emitted
            else:
                emitted = sampled.index_select(0, s.rows_on_device)[:, 0].long()
            feedback = group.impl.feedback(s.prepared, emitted, s.rows)
            for name, value in s.prepared.state.items():
                group.state[name].index_copy_(0, s.numbers_on_device, value.to(group.state[name].dtype))
            for name, values in {**s.prepared.stats, **feedback.stats}.items():
                low, high, bins = group.impl.histograms[name]
                counts = group.histograms[name]
                counts.index_put_((s.numbers_on_device, bucket(values, low, high, bins)),
                                  torch.ones_like(values, dtype=counts.dtype), accumulate=True)
            moi.keep(Pending(feedback), s.numbers, s.gen_index)
        self._moi_kept_bytes = moi.forget_unused_records()
        moi.note_device_bytes(self._moi_kept_bytes)

    # ----------------------------------------------------------------------------------------
    # Inputs: overwrite the embeddings of generated tokens of mixing requests
    # ----------------------------------------------------------------------------------------

    def _moi_mix(self, out: torch.Tensor) -> None:
        """Every position of this step holding a generated token of a mixing request gets its feedback."""
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
            self._moi_warn("missing", "MoI: no feedback kept for a generated token; it is fed unmixed")
        groups = moi.group[item_numbers]
        for g in np.unique(groups).tolist():
            in_group = groups == g
            if (pick := in_group & fresh).any():
                self._moi_mix_fresh(g, item_numbers[pick], token_index[pick], out)
            if (pick := in_group & replay).any():
                self._moi_replay(g, item_numbers[pick], gen_index[pick], token_index[pick], out)
        # Feedback consumed now is not needed any more: free it before the forward pass.
        self._moi_kept_bytes = moi.forget_unused_records()

    def _moi_mix_fresh(self, g: int, numbers: np.ndarray, token_index: np.ndarray, out: torch.Tensor) -> None:
        """Tokens fed back for the first time: their pending feedback's embedding; history staged."""
        moi = self.moi
        feedback = self._moi_pending(numbers)
        indices = moi.upload(np.stack([token_index, numbers]))
        index, numbers_on_device = indices[0], indices[1]
        if feedback.ids is None:
            mixed = embed_feedback(feedback, self._moi_embed, self._moi_dense_embedding)
        else:
            mixed = self._moi_embed_weights(feedback.ids, feedback.weights)
        out.index_copy_(0, index, mixed.to(out.dtype))
        moi.mixed_count.index_add_(0, numbers_on_device, feedback.mixed.to(moi.mixed_count.dtype))
        if feedback.ids is None:  # dense weights: the history keeps the embedding itself (O(hidden))
            history = {"embedding": mixed}
        else:
            history = {"ids": feedback.ids.to(torch.int32), "weights": feedback.weights.float()}
        moi.stager.stage(("history", g, numbers), history)
        moi.pending_gen_index[numbers] = NONE
        moi.pending_record[numbers] = NONE
        moi.stored[numbers] += 1
        self._moi_note_temporaries(feedback, out.shape[1])

    def _moi_pending(self, numbers: np.ndarray):
        """The pending feedback of these requests, in order (usually all rows of one record)."""
        moi = self.moi
        record_ids, rows = moi.pending_record[numbers], moi.pending_row[numbers]
        parts, order = [], []
        for record_id in np.unique(record_ids).tolist():
            feedback = moi.records[record_id].feedback
            which = np.flatnonzero(record_ids == record_id)
            if len(which) == feedback.weights.shape[0] and np.array_equal(rows[which], np.arange(len(which))):
                parts.append(feedback)  # the whole record, in order: no copy
            else:
                index = moi.upload(rows[which])
                parts.append(type(feedback)(
                    None if feedback.ids is None else feedback.ids.index_select(0, index),
                    feedback.weights.index_select(0, index),
                    feedback.mixed.index_select(0, index),
                ))
            order.append(which)
        if len(parts) == 1 and np.array_equal(order[0], np.arange(len(numbers))):
            return parts[0]
        inverse = moi.upload(np.argsort(np.concatenate(order)))
        ids = None if parts[0].ids is None else torch.cat([p.ids for p in parts]).index_select(0, inverse)
        weights = torch.cat([p.weights for p in parts]).index_select(0, inverse)
        mixed = torch.cat([p.mixed for p in parts]).index_select(0, inverse)
        return type(parts[0])(ids, weights, mixed)

    def _moi_replay(
        self, g: int, numbers: np.ndarray, gen_index: np.ndarray, token_index: np.ndarray, out: torch.Tensor
    ) -> None:
        """Rebuild the inputs of a recomputed (preempted) request from its history."""
        moi = self.moi
        slots = [moi.slots[number][i] for number, i in zip(numbers.tolist(), gen_index.tolist())]
        stored = moi.groups[g].arena.take(slots)
        index = moi.upload(token_index)
        if "embedding" in stored:
            mixed = moi.upload(stored["embedding"])
        else:
            ids = moi.upload(stored["ids"])
            mixed = self._moi_embed_weights(ids, moi.upload(stored["weights"]))
        out.index_copy_(0, index, mixed.to(out.dtype))
        np.add.at(moi.replayed, numbers, 1)

    def _moi_embed_weights(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_j weights[:, j] E[ids[:, j]]``, in row chunks of at most ``max_num_seqs x MIX_WIDTH``
        gathered embeddings: the memory MoI reserved for mixing (:mod:`harness.engines.vllm.memory`).
        Each row is mixed on its own either way, so chunks give the same values."""
        from harness.methods.mixing import mix

        rows, width = ids.shape
        if rows * width <= self._moi_mix_items:
            return mix(ids, weights, self._moi_embed)
        if width > self._moi_mix_items:
            self._moi_warn("wide", f"MoI: a support of {width} tokens is wider than the memory reserved for "
                                   f"mixing ({self._moi_mix_items} embeddings at once); it is mixed anyway")
        step = max(1, self._moi_mix_items // width)
        return torch.cat([mix(ids[i : i + step], weights[i : i + step], self._moi_embed) for i in range(0, rows, step)])

    def _moi_embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The model's own input embedding (handles vocabulary-parallel and scaled embeddings)."""
        return self.model.embed_input_ids(ids.reshape(-1)).reshape(*ids.shape, -1)

    # ----------------------------------------------------------------------------------------
    # Dense weights: a mixture over the whole (vocabulary-parallel) embedding matrix
    # ----------------------------------------------------------------------------------------

    def _moi_dense_embedding(self, dense: torch.Tensor) -> torch.Tensor:
        """``dense [m, V] @ E`` with the factor the model applies to its embeddings (Gemma scales)."""
        if self._moi_full_scale is None:
            self._moi_full_scale = self._moi_measure_scale(dense.shape[1])
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

    def _moi_measure_scale(self, vocab: int) -> torch.Tensor:
        """The factor between the model's embedding of a token and its matrix row (Gemma scales),
        measured once per engine on a few tokens, on the device (nothing is read back: the host
        never waits for it; ``moi_summary`` reports it)."""
        tokens = torch.arange(min(4, vocab), device=self.device)
        onehot = torch.zeros(len(tokens), vocab, device=self.device)
        onehot[torch.arange(len(tokens), device=self.device), tokens] = 1.0
        raw = self._moi_dense(onehot)
        emb = self._moi_embed(tokens).float()
        ratio = (emb * raw).sum() / (raw * raw).sum().clamp_min(1e-30)
        scale = torch.where(torch.isclose(emb, raw).all(), torch.ones_like(ratio), ratio)
        self.moi.embedding_scale = scale
        return scale

    # ----------------------------------------------------------------------------------------
    # Bookkeeping
    # ----------------------------------------------------------------------------------------

    def _moi_note_temporaries(self, feedback, hidden: int) -> None:
        """Peak device bytes: last step's kept feedback plus this step's mixing temporaries (sizes)."""
        m, width = feedback.weights.shape
        if feedback.ids is None:
            temp = m * width * 4 + m * hidden * 4  # the weights in fp32, their product
        else:
            temp = m * width * hidden * 8 + m * hidden * 4  # gathered vectors (+ fp32 copy), sum
        self.moi.note_device_bytes(self._moi_kept_bytes + temp)

    def _moi_warn(self, key: str, message: str) -> None:
        if key not in self._moi_warned:
            self._moi_warned.add(key)
            logger.warning(message)

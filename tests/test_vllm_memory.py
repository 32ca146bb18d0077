"""MoI's device memory beyond vLLM's profile: bounded, reserved from the KV budget, or refused.

The bound (``harness.engines.vllm.memory``) is checked against what the hooks really allocate:
a torch dispatch mode tracks every tensor storage MoI's code creates and its lifetime, so its peak
is the most memory MoI held at once (CUDA kernels' internal workspaces are not seen; the bound's
25% margin is for them and the allocator's rounding).
"""

from __future__ import annotations

import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from harness.engines.base import Request
from harness.engines.vllm import memory
from harness.engines.vllm.settings import MoIConfigError
from harness.errors import ConfigError
from harness.methods import MethodSpec, example_specs

WORDS = "the answer number is create equation using basic arithmetic operations each only once show your work".split()


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created under the mode that are still alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.paused = 0
        self._alive: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self._alive.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.paused:
            return out
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if key not in inputs and key not in self._alive:  # a new storage (not a view, not in place)
                    self._alive.add(key)
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._freed, key, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def test_the_tracker_sees_allocations_and_frees():
    tracker = LiveBytes()
    with tracker:
        a = torch.zeros(1000)
        b = a * 2
        view = b[:10]
        del b
        a.add_(1)  # in place: nothing new
    assert tracker.live == tracker.peak == 8000
    del view
    assert tracker.live == 4000


# ------------------------------------------------------------------------------------------------
# The bound and the reservation
# ------------------------------------------------------------------------------------------------


def test_bound_covers_the_issue_example_and_scales_with_rows():
    # support=full at 256 rows x Qwen's 151,936-token vocabulary keeps 155 MB of weights between steps
    parts = memory.device_bound(256, 151936, 896, 2, 8192)
    assert parts["vocabulary"] > 256 * 151936 * 4 > 155_000_000
    assert parts["total"] == int(np.ceil(1.25 * sum(v for k, v in parts.items() if k != "total"))) + memory.FIXED
    assert memory.device_bound(128, 151936, 896, 2, 8192)["total"] < parts["total"]


def test_reservation_reduces_the_profiled_budget_and_refuses_what_cannot_fit():
    budget, line = memory.reserve(1000 * memory.MiB, 100 * memory.MiB, explicit=False, free=None)
    assert budget == 900 * memory.MiB and "reserves 100 MiB" in line
    with pytest.raises(MoIConfigError) as err:
        memory.reserve(100 * memory.MiB, 120 * memory.MiB, explicit=False, free=None)
    assert "120 MiB" in str(err.value) and "max_num_seqs" in str(err.value) and "\n" not in str(err.value)
    # an explicit KV cache is kept as asked; MoI's memory must fit beside it
    assert memory.reserve(500 * memory.MiB, 100 * memory.MiB, explicit=True, free=700 * memory.MiB)[0] == 500 * memory.MiB
    with pytest.raises(MoIConfigError, match="beside the explicit KV cache"):
        memory.reserve(500 * memory.MiB, 100 * memory.MiB, explicit=True, free=550 * memory.MiB)


# ------------------------------------------------------------------------------------------------
# Every method's hooks, at shapes where the vocabulary or the hidden size dominates
# ------------------------------------------------------------------------------------------------


def hook_peak(spec: MethodSpec, rows: int, vocab: int, hidden: int, dtype: torch.dtype) -> int:
    """Peak bytes MoI's runner allocates in two steps of ``spec`` over ``rows`` rows: the rows'
    parameters, the method's prepare and feedback, the state update and the mixed embeddings, with
    each step's feedback kept until the next step's has been mixed (as the runner keeps it)."""
    from harness.engines.vllm.runner import MoIRunnerMixin
    from harness.engines.vllm.state import BatchState, Pending
    from harness.methods.batch import embed_feedback

    torch.manual_seed(0)
    matrix = torch.randn(vocab, hidden, dtype=dtype)
    moi = BatchState(MethodSpec(), {"think_end_id": 3}, torch.device("cpu"))
    for i in range(rows):
        moi.add(f"r{i}", spec, 10, {"temperature": 0.6, "top_p": 1.0, "top_k": 0.0, "seed": i})
    numbers = np.array([moi.index[f"r{i}"] for i in range(rows)])
    g = int(moi.group[numbers[0]])
    group, runner = moi.groups[g], SimpleNamespace(moi=moi, _moi_mix_items=rows * memory.MIX_WIDTH,
                                                   _moi_embed=lambda ids: matrix[ids.reshape(-1)].reshape(*ids.shape, -1))
    logits = torch.randn(rows, vocab, dtype=dtype)
    tracker, kept = LiveBytes(), None
    for step in range(2):
        with tracker:
            on_device = moi.upload(numbers)
            batch = MoIRunnerMixin._moi_rows(runner, g, group, numbers, np.full(rows, step), on_device)
            prepared = group.impl.prepare(logits, batch)
            emitted = prepared.emitted if prepared.emitted is not None else logits.argmax(-1)
            feedback = group.impl.feedback(prepared, emitted, batch)
            for name, value in prepared.state.items():
                group.state[name].index_copy_(0, on_device, value.to(group.state[name].dtype))
            del prepared, batch
            if feedback.ids is None:
                mixed = embed_feedback(feedback, runner._moi_embed, lambda w: (w.to(dtype) @ matrix).float())
            else:
                mixed = MoIRunnerMixin._moi_embed_weights(runner, feedback.ids, feedback.weights)
            kept = Pending(feedback)  # the previous step's record goes once this one is kept
            del feedback, mixed
    del kept
    return tracker.peak


@pytest.mark.parametrize("rows,vocab,hidden,dtype", [(8, 32768, 64, torch.float32), (8, 32768, 64, torch.bfloat16),
                                                     (8, 512, 2048, torch.float32), (8, 512, 2048, torch.bfloat16)])
def test_every_method_stays_within_the_bound(rows, vocab, hidden, dtype):
    bound = memory.device_bound(rows, vocab, hidden, dtype.itemsize, tokens=0)
    allowed = bound["total"] - memory.FIXED  # the proportional part alone must cover it
    peaks = {str(spec): hook_peak(spec, rows, vocab, hidden, dtype) for spec in example_specs() if spec.mixed}
    assert max(peaks.values()) > allowed / 8  # the bound is not vacuous at these shapes
    assert {k: v for k, v in peaks.items() if v > allowed} == {}


def test_wide_supports_are_mixed_in_chunks_with_the_same_values():
    from harness.engines.vllm.runner import MoIRunnerMixin
    from harness.methods.mixing import mix

    matrix = torch.randn(300, 16)
    embed = lambda ids: matrix[ids.reshape(-1)].reshape(*ids.shape, -1)  # noqa: E731
    ids, weights = torch.randint(0, 300, (7, 50)), torch.rand(7, 50)
    warned = []
    runner = SimpleNamespace(_moi_mix_items=120, _moi_embed=embed, _moi_warn=lambda key, msg: warned.append(key))
    tracker = LiveBytes()
    with tracker:
        chunked = MoIRunnerMixin._moi_embed_weights(runner, ids, weights)
    assert torch.equal(chunked, mix(ids, weights, embed))
    assert tracker.peak < 7 * 50 * 16 * 4  # never all 350 embeddings at once
    assert not warned
    MoIRunnerMixin._moi_embed_weights(SimpleNamespace(**{**vars(runner), "_moi_mix_items": 20}), ids, weights)
    assert warned == ["wide"]


# ------------------------------------------------------------------------------------------------
# In the engine: the KV budget
# ------------------------------------------------------------------------------------------------


def _requests(n_tokens: int = 20) -> list[Request]:
    return [Request(id=f"r{i}", prompt=" ".join(WORDS[(5 * i + j) % len(WORDS)] for j in range(6 + 4 * i)), method=spec,
                    temperature=0.6 if spec.method == "soft_thinking" else 0, max_tokens=n_tokens, seed=i)
            for i, spec in enumerate(example_specs())]


@pytest.fixture
def vllm_budget(monkeypatch):
    """vLLM's own KV budget on CPUs, fixed (it is a share of RAM otherwise)."""
    from vllm.v1.worker.cpu_worker import CPUWorker

    budget = {"bytes": 64 << 20}
    monkeypatch.setattr(CPUWorker, "determine_available_memory", lambda self: budget["bytes"])
    return budget


ENGINE = {"enforce_eager": True, "max_num_seqs": 4, "gpu_memory_utilization": 0.05}


@pytest.mark.vllm
def test_the_engine_reserves_the_bound_from_the_kv_budget(tiny_model_cfg, vllm_budget, monkeypatch):
    from harness.engines.vllm.cpu import MoICPUModelRunner
    from harness.engines.vllm.engine import VLLMEngine
    from harness.engines.vllm.runner import MoIRunnerMixin

    engine = VLLMEngine({**tiny_model_cfg, "max_model_len": 256}, ENGINE)
    try:
        config = engine.llm.llm_engine.vllm_config
        bound = memory.bound_of(config)["total"]
        summary = engine.moi_summary()
        assert summary["bound_bytes"] == summary["reserved_bytes"] == bound
        assert summary["kv_budget_bytes"] == vllm_budget["bytes"] - bound
        # vLLM sized its KV cache from the reduced budget: 128-token blocks of 2 layers x (k, v) x 64 x fp32
        assert config.cache_config.num_gpu_blocks == (vllm_budget["bytes"] - bound) // (128 * 1024)

        # and the hooks, serving every method, never held more than the bound allows
        tracker = LiveBytes()
        mro = MoICPUModelRunner.__mro__
        for name in ("_sample", "_preprocess", "_update_states"):
            ours = MoIRunnerMixin.__dict__[name]
            owner = next(cls for cls in mro[mro.index(MoIRunnerMixin) + 1 :] if name in cls.__dict__)
            theirs = owner.__dict__[name]

            def active(self, *args, _f=ours, **kwargs):
                with tracker:
                    return _f(self, *args, **kwargs)

            def paused(self, *args, _f=theirs, **kwargs):
                tracker.paused += 1
                try:
                    return _f(self, *args, **kwargs)
                finally:
                    tracker.paused -= 1

            monkeypatch.setattr(MoIRunnerMixin, name, active)
            monkeypatch.setattr(owner, name, paused)
        done = list(engine.generate(_requests()))
        assert len(done) == len(example_specs())
        assert 0 < tracker.peak <= bound - memory.FIXED
    finally:
        engine.close()


@pytest.mark.vllm
def test_a_bound_that_does_not_fit_the_budget_is_refused_in_one_line(tiny_model_cfg, vllm_budget):
    from harness.engines.vllm.engine import VLLMEngine

    vllm_budget["bytes"] = 8 << 20  # below the 16 MiB the bound starts with
    with pytest.raises(ConfigError) as err:
        VLLMEngine({**tiny_model_cfg, "max_model_len": 256}, ENGINE)
    message = str(err.value)
    assert message.startswith("engine=vllm: MoI needs up to") and "8 MiB vLLM found" in message and "\n" not in message


@pytest.mark.vllm
def test_an_explicit_kv_cache_is_kept_and_moi_must_fit_beside_it(tiny_model_cfg, monkeypatch):
    from harness.engines.vllm.engine import VLLMEngine

    monkeypatch.setattr(memory, "free_bytes", lambda device: 20 << 20)  # a nearly full device
    with pytest.raises(ConfigError, match="beside the explicit KV cache"):
        VLLMEngine({**tiny_model_cfg, "max_model_len": 256}, {"enforce_eager": True, "kv_cache_memory_bytes": 8 << 20})

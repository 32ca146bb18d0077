"""MoI's hooks never make the host wait for the device: no blocking transfer, no read-back.

On CUDA a host<->device copy from pageable memory, ``.item()``, ``.tolist()``, ``bool(tensor)``,
``nonzero`` or boolean-mask indexing waits for the GPU stream (in ``_sample``: for the whole forward
pass). On CPUs nothing waits, so this test counts the calls that *would* wait, through a torch
function mode that is active exactly while MoI's own code runs in the three hooks (it pauses inside
vLLM's own ``_sample`` / ``_preprocess`` / ``_update_states``, which the hooks call through
``super()``), while the squeezed engine serves every method with row churn, chunked prefill and
preemptions. On CUDA, ``scripts/gpu_check.py`` adds vLLM's own ``VLLM_GPU_SYNC_CHECK``.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from harness.engines.base import Request
from harness.engines.vllm.state import Stager, Uploader
from harness.methods import example_specs, make_spec

HOOKS = ("_sample", "_preprocess", "_update_states")
# Tensor methods and torch functions that read a device value back to the host (or need to,
# to know an output's size).
READS_BACK = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__array__", "cpu",
              "nonzero", "argwhere", "unique", "unique_consecutive", "masked_select", "allclose", "equal", "bincount"}
WORDS = "the answer number is create equation using basic arithmetic operations each only once show your work".split()


def blocking_reason(func, args, kwargs) -> str | None:
    """Why this call would make the host wait for a CUDA device, or None."""
    name = getattr(func, "__name__", "")
    if name in READS_BACK:
        return f"{name}()"
    if name in ("to", "cuda") and args and isinstance(args[0], torch.Tensor):
        if name == "to":
            device, _, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
        else:
            device, non_blocking = "cuda", kwargs.get("non_blocking", len(args) > 2 and args[2])
        if device is not None and not non_blocking:
            return f"{name}(device) without non_blocking=True"
    if name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
        return f"torch.{name}(host data, device=...)"
    if name in ("__getitem__", "__setitem__", "index_put_", "index_put") and len(args) > 1:
        index = args[1] if isinstance(args[1], tuple | list) else (args[1],)
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
            return f"boolean-mask {name}"
    if name == "repeat_interleave" and "output_size" not in kwargs and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return "repeat_interleave without output_size"
    if name == "where" and len(args) == 1 and not kwargs:
        return "torch.where(condition)"
    return None


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if "/harness/" in path:
            return f"{Path(path).name}:{frame.f_code.co_name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


class BlockingCalls(TorchFunctionMode):
    """Counts the torch calls of MoI's code that would block on CUDA (``found``) and all of them (``ops``)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: Counter[str] = Counter()
        self.ops = 0
        self.paused = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused:
            self.ops += 1
            why = blocking_reason(func, args, kwargs)
            if why:
                self.found[f"{why} at {_caller()}"] += 1
        return func(*args, **kwargs)


def watch_hooks(monkeypatch, runner_cls) -> BlockingCalls:
    """Activate the mode in MoI's three hooks of ``runner_cls``; pause it in vLLM's own versions."""
    from harness.engines.vllm.runner import MoIRunnerMixin

    mode = BlockingCalls()
    mro = runner_cls.__mro__
    parents = mro[mro.index(MoIRunnerMixin) + 1 :]
    for name in HOOKS:
        ours = MoIRunnerMixin.__dict__[name]
        owner = next(cls for cls in parents if name in cls.__dict__)
        theirs = owner.__dict__[name]

        def active(self, *args, _f=ours, **kwargs):
            with mode:
                return _f(self, *args, **kwargs)

        def paused(self, *args, _f=theirs, **kwargs):
            mode.paused += 1
            try:
                return _f(self, *args, **kwargs)
            finally:
                mode.paused -= 1

        monkeypatch.setattr(MoIRunnerMixin, name, active)
        monkeypatch.setattr(owner, name, paused)
    return mode


@pytest.fixture(scope="module")
def squeezed(tiny_model_cfg):
    """4 rows, 64-token steps, chunked prefill, 8 KV blocks of 32 tokens: churn and preemptions."""
    from harness.engines.vllm.engine import VLLMEngine

    engine = VLLMEngine({**tiny_model_cfg, "max_model_len": 224}, {
        "enforce_eager": True, "max_num_seqs": 4, "max_num_batched_tokens": 64, "enable_chunked_prefill": True,
        "kv_cache_memory_bytes": 8 * 32 * 1024, "extra": {"block_size": 32, "num_gpu_blocks_override": 8}})
    yield engine
    engine.close()


def every_method(n_tokens: int = 28) -> list[Request]:
    specs = example_specs()
    return [Request(id=f"r{i}", prompt=" ".join(WORDS[(5 * i + j) % len(WORDS)] for j in range(6 + 5 * i)), method=spec,
                    temperature=0.6 if spec.method == "soft_thinking" else 0, max_tokens=n_tokens + 4 * (i % 3), seed=i)
            for i, spec in enumerate(specs)]


@pytest.mark.vllm
def test_hooks_make_no_blocking_transfer_and_read_nothing_back(squeezed, monkeypatch):
    from harness.engines.vllm.cpu import MoICPUModelRunner

    mode = watch_hooks(monkeypatch, MoICPUModelRunner)
    uploads = []
    original = Uploader.__call__
    monkeypatch.setattr(Uploader, "__call__", lambda self, array: uploads.append(array.shape) or original(self, array))
    before = squeezed.moi_summary()
    preempted = squeezed.num_preemptions()
    requests = every_method()
    done = {r.id: c for r, c in squeezed.generate(requests)}
    summary = squeezed.moi_summary()
    assert len(done) == len(requests)
    # the squeezed batch did exercise the hard paths: preemption, replay from the history
    assert squeezed.num_preemptions() > preempted
    assert summary["replayed_steps"] > before["replayed_steps"]
    assert summary["inputs_embeds_checked"]
    # MoI's code ran under the mode, uploaded its index arrays, and nothing in it would block
    assert mode.ops > 5000 and len(uploads) > 100
    assert dict(mode.found) == {}
    assert summary["host_waits"] == 0


@pytest.mark.vllm
def test_the_watch_catches_a_blocking_copy_and_a_read_back(squeezed, monkeypatch):
    """The test above could fail: the pattern this harness used to have, and a read-back."""
    from harness.engines.vllm.cpu import MoICPUModelRunner
    from harness.engines.vllm.runner import MoIRunnerMixin

    prepare = MoIRunnerMixin._moi_prepare

    def with_blocking_calls(self, logits):
        torch.from_numpy(np.arange(3)).to(self.device)  # from pageable memory: waits for the stream
        if logits[0].max():  # reads a device value back
            pass
        return prepare(self, logits)

    monkeypatch.setattr(MoIRunnerMixin, "_moi_prepare", with_blocking_calls)
    mode = watch_hooks(monkeypatch, MoICPUModelRunner)
    list(squeezed.generate([Request(id="x", prompt="the answer", method=make_spec("moi", beta=1.0), temperature=0, max_tokens=3)]))
    assert any(key.startswith("to(device) without non_blocking=True") for key in mode.found), mode.found
    assert any(key.startswith("__bool__()") for key in mode.found), mode.found


def test_blocking_reasons():
    t = torch.arange(4.0)
    assert blocking_reason(torch.Tensor.to, (t, torch.device("cpu")), {}) == "to(device) without non_blocking=True"
    assert blocking_reason(torch.Tensor.to, (t, torch.device("cpu")), {"non_blocking": True}) is None
    assert blocking_reason(torch.Tensor.to, (t, torch.float64), {}) is None
    assert blocking_reason(torch.Tensor.__getitem__, (t, t > 1), {}) == "boolean-mask __getitem__"
    assert blocking_reason(torch.Tensor.__getitem__, (t, (slice(None), torch.tensor([0]))), {}) is None
    assert blocking_reason(torch.tensor, ([1, 2],), {"device": "cpu"}) == "torch.tensor(host data, device=...)"
    assert blocking_reason(torch.Tensor.item, (t[0],), {}) == "item()"


# ------------------------------------------------------------------------------------------------
# The staging buffers themselves (their CUDA path, with ordinary memory standing in for pinned)
# ------------------------------------------------------------------------------------------------


class _Copies(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "to":
            self.calls.append(torch._C._nn._parse_to(*args[1:], **kwargs))
        return func(*args, **kwargs)


def staging_uploader(first: int = 256) -> Uploader:
    uploader = Uploader(torch.device("cpu"), pinned=True)
    uploader.FIRST_ARENA = first
    uploader._allocate = lambda nbytes: torch.zeros(nbytes, dtype=torch.uint8)  # pinned memory needs CUDA
    return uploader


def test_uploads_of_one_step_never_share_staging_memory():
    uploader = staging_uploader()
    with _Copies() as copies:
        a = uploader(np.arange(10, dtype=np.int64))
        b = uploader(np.full((3, 2), 7.5))
        c = uploader(np.arange(40, dtype=np.int64))  # outgrows the first arena: a new one
    assert [call[2] for call in copies.calls] == [True, True, True]  # every copy non_blocking
    assert a.tolist() == list(range(10)) and b.tolist() == [[7.5, 7.5]] * 3 and c.tolist() == list(range(40))
    assert len(uploader.retired) == 1  # the outgrown arena stays alive until the step is over
    assert uploader.transfers == 3
    uploader.begin_step()
    assert uploader.retired == [] and uploader.offset == 0
    d = uploader(np.arange(5, dtype=np.int32))
    assert d.tolist() == list(range(5)) and d.data_ptr() == c.data_ptr()  # the arena is reused next step
    assert d.data_ptr() % Uploader.ALIGN == 0


def test_staged_copies_are_taken_without_waiting_unless_an_event_is_still_pending():
    class Event:
        def __init__(self, done: bool) -> None:
            self.done, self.waited = done, False

        def query(self) -> bool:
            return self.done

        def synchronize(self) -> None:
            self.waited = True

    stager = Stager(torch.device("cpu"))
    passed, pending = Event(True), Event(False)
    stager.batches = [("a", {"x": torch.ones(2)}, passed), ("b", {"x": torch.zeros(1)}, pending)]
    taken = stager.take()
    assert [tag for tag, _ in taken] == ["a", "b"] and not passed.waited and pending.waited
    assert stager.waits == 1
    idle = Event(False)
    stager.batches = [("c", {"x": torch.ones(1)}, idle)]
    stager.take(idle=True)
    assert idle.waited and stager.waits == 1  # after an idle step waiting is expected, not counted

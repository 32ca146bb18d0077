"""What the model runner keeps per request between steps, keyed by request id (never by batch row).

Each live request gets a number; its state lives in arrays indexed by that number, so a step
touches all rows of a group with a few vectorised operations. Requests of one *group* (one method
and the parameters that shape its tensors, :attr:`MethodSpec.group`) share:

- ``values``: host copies of each request's numeric parameters and sampling settings (uploaded
  once per step and group, without waiting);
- ``state``: the method's per-request state (e.g. Soft Thinking's phase) and the histograms of its
  step statistics, on the device, updated there, never read back during a step;
- ``arena``: the history, a host row per generated token already fed back (its sparse weights, or
  for dense weights the mixed embedding), which rebuilds the inputs of a preempted request that
  vLLM 0.32 recomputes. Rows reach it one step late through :class:`Stager`, so the device never
  waits.

Per request, ``pending``: the feedback of its newest sampled token (a row of one of the step's
:class:`Pending` records, on the device), consumed when that token is fed back.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from harness.methods import Feedback, Method, MethodSpec
from harness.methods.batch import numeric_params

logger = logging.getLogger("vllm.moi")  # under vLLM's logger: shown in vLLM's logs

# How many finished requests' counts are kept for callers that ask late (or never).
MAX_FINISHED = 100_000
NONE = -1
SAMPLING = ("temperature", "top_p", "top_k", "seed")  # per-request settings a method sees in Rows


class Uploader:
    """Host arrays to the device without blocking the host.

    On CUDA every upload of a step gets its own slice of one pinned staging arena and is copied with
    ``non_blocking=True`` (a copy from pageable memory would wait for the GPU stream, as vLLM's own
    runner avoids too). Slices are never shared within a step, so a copy still queued on the stream
    cannot see its source overwritten; :meth:`begin_step` hands the arena out again from its start,
    which is safe because vLLM's runner ends every step that ran on the device by waiting for its
    sampled tokens (``_bookkeeping_sync``: the transfer event), after every copy queued in the step,
    and :meth:`BatchState.flush` waits after an idle step. An arena outgrown within a step is kept
    until the next step begins. On CPUs the array is wrapped, not copied. ``transfers`` counts the
    copies made (all non-blocking).
    """

    ALIGN = 64  # bytes: every slice starts aligned for any dtype
    FIRST_ARENA = 1 << 20

    def __init__(self, device: torch.device, pinned: bool | None = None) -> None:
        self.device = device
        self.pinned = device.type == "cuda" if pinned is None else pinned
        self.arena: torch.Tensor | None = None  # uint8, pinned
        self.offset = 0
        self.retired: list[torch.Tensor] = []
        self.transfers = 0

    def begin_step(self) -> None:
        """A new step: every copy of the previous one has run (see the class docstring)."""
        self.offset = 0
        self.retired.clear()

    def _allocate(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(array))
        if not self.pinned:
            return host
        nbytes = host.numel() * host.element_size()
        start = -(-self.offset // self.ALIGN) * self.ALIGN
        if self.arena is None or start + nbytes > self.arena.numel():
            if self.arena is not None:
                self.retired.append(self.arena)  # copies of this step may still read it
            self.arena = self._allocate(max(self.FIRST_ARENA, 2 * (start + nbytes)))
            start = 0
        staged = self.arena[start : start + nbytes].view(host.dtype).view(host.shape)
        staged.copy_(host)
        self.offset = start + nbytes
        self.transfers += 1
        return staged.to(self.device, non_blocking=True)


class HistoryArena:
    """History rows of all requests of one group, in shared growing host arrays.

    Rows are filed a whole step at a time (vectorised); a request keeps its slot numbers, in
    generated-token order, and gives them back when it finishes.
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.free: list[int] = []
        self.used = 0  # high-water mark

    def put(self, rows: dict[str, np.ndarray]) -> list[int]:
        n = len(next(iter(rows.values())))
        reuse = min(n, len(self.free))
        slots = self.free[len(self.free) - reuse :]
        del self.free[len(self.free) - reuse :]
        slots.extend(range(self.used, self.used + n - reuse))
        self.used += n - reuse
        if not self.arrays:
            self.arrays = {name: np.empty((max(64, 2 * n), *v.shape[1:]), dtype=v.dtype) for name, v in rows.items()}
        capacity = next(iter(self.arrays.values())).shape[0]
        if self.used > capacity:
            grown = max(2 * capacity, self.used)
            for name, arr in self.arrays.items():
                bigger = np.empty((grown, *arr.shape[1:]), dtype=arr.dtype)
                bigger[:capacity] = arr
                self.arrays[name] = bigger
        index = np.asarray(slots)
        for name, value in rows.items():
            self.arrays[name][index] = value
        return slots

    def take(self, slots: list[int]) -> dict[str, np.ndarray]:
        index = np.asarray(slots)
        return {name: arr[index] for name, arr in self.arrays.items()}

    @property
    def nbytes(self) -> int:
        return sum(arr.nbytes for arr in self.arrays.values())


class Stager:
    """Device -> host copies that do not wait; each batch is resolved a step later (or on demand).

    A batch is staged with an event recorded after its copies; a step later the event has long
    passed (vLLM waited for its sampled tokens since), so taking it does not wait. ``waits`` counts
    the times it had to (an event not yet passed when a step began: it should stay 0).
    """

    def __init__(self, device: torch.device) -> None:
        self.is_cuda = device.type == "cuda"
        self.batches: list[tuple[object, dict[str, torch.Tensor], object]] = []
        self.waits = 0

    def stage(self, tag: object, tensors: dict[str, torch.Tensor]) -> None:
        # A device -> host copy with non_blocking=True lands in pinned memory that torch allocates.
        host = {name: t.detach().to("cpu", non_blocking=True) for name, t in tensors.items()}
        event = None
        if self.is_cuda:
            event = torch.cuda.Event()
            event.record()
        self.batches.append((tag, host, event))

    def take(self, idle: bool = False) -> list[tuple[object, dict[str, np.ndarray]]]:
        """Every staged batch, its copies finished. After an idle step (nothing ran since they were
        staged) waiting is expected and not counted."""
        out = []
        for tag, host, event in self.batches:
            if event is not None and not event.query():
                self.waits += not idle
                event.synchronize()
            out.append((tag, {name: t.numpy() for name, t in host.items()}))
        self.batches.clear()
        return out


@dataclass
class Pending:
    """The feedback computed at one sampling step for one group's rows (device tensors)."""

    feedback: Feedback

    @property
    def nbytes(self) -> int:
        tensors = [self.feedback.weights, self.feedback.mixed] + ([self.feedback.ids] if self.feedback.ids is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Group:
    """The requests of one method whose tensors share shapes, with their per-request arrays."""

    impl: Method
    spec: MethodSpec  # a representative: its grouped parameters are every member's
    columns: list[str]  # numeric parameters, then SAMPLING: the columns of ``values``
    values: np.ndarray  # [capacity, len(columns)] float64, by request number
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # [capacity] float32 on the device
    histograms: dict[str, torch.Tensor] = field(default_factory=dict)  # [capacity, bins] float32
    arena: HistoryArena = field(default_factory=HistoryArena)

    def grow(self, capacity: int) -> None:
        old = self.values.shape[0]
        if capacity <= old:
            return
        values = np.zeros((capacity, len(self.columns)))
        values[:old] = self.values
        self.values = values
        for name, tensor in self.state.items():
            self.state[name] = torch.cat([tensor, tensor.new_full((capacity - old,), self.impl.state[name])])
        for name, tensor in self.histograms.items():
            self.histograms[name] = torch.cat([tensor, tensor.new_zeros(capacity - old, tensor.shape[1])])


class BatchState:
    """All requests' method state in one runner, plus the counters a run reports."""

    _FIELDS = {  # host arrays by request number: (dtype, fill)
        "mixed": (bool, False),
        "group": (np.int64, NONE),
        "num_prompt": (np.int64, 0),
        "pending_record": (np.int64, NONE),
        "pending_row": (np.int64, NONE),
        "pending_gen_index": (np.int64, NONE),  # which generated token the pending feedback is for
        "stored": (np.int64, 0),  # generated tokens fed back (in the history or staged for it)
        "filed": (np.int64, 0),  # of those, rows already in the history arena
        "replayed": (np.int64, 0),  # inputs rebuilt from the history (after preemptions)
    }

    mixed: np.ndarray
    group: np.ndarray
    num_prompt: np.ndarray
    pending_record: np.ndarray
    pending_row: np.ndarray
    pending_gen_index: np.ndarray
    stored: np.ndarray
    filed: np.ndarray
    replayed: np.ndarray

    def __init__(self, default: MethodSpec, facts: dict, device: torch.device, log_requests: bool = False,
                 log_summary_s: float = 60.0) -> None:
        self.default = default
        self.facts = facts
        self.device = device
        self.log_requests = log_requests
        self.log_summary_s = log_summary_s
        self.window = {"since": time.monotonic(), "requests": 0, "mixed_requests": 0, "mixed_steps": 0}
        self.keys: dict[str, str] = {}  # live request id -> the client's key (moi_request_key)
        self.finished_by_key: OrderedDict[str, dict] = OrderedDict()
        self.upload = Uploader(device)
        self.stager = Stager(device)
        self.index: dict[str, int] = {}  # request id -> number
        self.specs: list[MethodSpec | None] = []
        self.slots: list[list[int]] = []  # history slots by generated index
        self.free_numbers: list[int] = []
        self.groups: list[Group] = []
        self.group_ids: dict[tuple, int] = {}
        self.mixed_count = torch.zeros(0, device=device)  # fed-back mixtures per request, on the device
        self.records: dict[int, Pending] = {}
        self.next_record = 0
        self._grow(64)
        self.num_mixed_live = 0
        self.finished: OrderedDict[str, dict] = OrderedDict()
        self.reported: set[str] = set()  # live requests whose counts were read: not kept once finished
        self.totals = {"requests": 0, "mixed_requests": 0, "mixed_steps": 0, "replayed_steps": 0, "resumed": 0}
        self.history_bytes_peak = 0
        self.device_bytes_peak = 0
        self.host_seconds = 0.0  # wall time in the hooks (on GPUs: launching, not running, kernels)
        self.embedding_scale: torch.Tensor | None = None  # support=full: the model's embedding scale
        self.inputs_embeds_checked = False  # the runner writes vLLM's persistent buffer (checked once)
        self.memory: dict[str, int] = {}  # MoI's bound and what it took from the KV budget (the worker's)

    # -- per-request arrays ---------------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        """Room for ``capacity`` live requests (the arrays above, by request number)."""
        old = len(self.specs)
        for name, (dtype, fill) in self._FIELDS.items():
            arr = np.full(capacity, fill, dtype=dtype)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)
        self.mixed_count = torch.cat([self.mixed_count, self.mixed_count.new_zeros(capacity - old)])
        for group in self.groups:
            group.grow(capacity)
        self.free_numbers.extend(range(capacity - 1, old - 1, -1))
        self.specs.extend([None] * (capacity - old))
        self.slots.extend([] for _ in range(capacity - old))

    def numbers(self, req_ids: list[str]) -> np.ndarray:
        """The numbers of these live requests (NONE for unknown ones)."""
        get = self.index.get
        return np.fromiter((get(r, NONE) for r in req_ids), dtype=np.int64, count=len(req_ids))

    @property
    def has_mixed(self) -> bool:
        return self.num_mixed_live > 0

    def group_of(self, spec: MethodSpec) -> int:
        key = spec.group
        if key not in self.group_ids:
            impl = spec.impl
            columns = [*numeric_params(spec), *SAMPLING]
            group = Group(impl, spec, columns, np.zeros((len(self.specs), len(columns))))
            capacity = len(self.specs)
            group.state = {name: torch.full((capacity,), fill, device=self.device) for name, fill in impl.state.items()}
            group.histograms = {name: torch.zeros(capacity, bins, device=self.device) for name, (_, _, bins) in impl.histograms.items()}
            self.group_ids[key] = len(self.groups)
            self.groups.append(group)
        return self.group_ids[key]

    def add(self, req_id: str, spec: MethodSpec, num_prompt: int, sampling: dict, key: str = "") -> None:
        """A new request: its number, its group, its parameters and sampling settings, fresh state;
        ``key``: the client's own key for its counters (the server's stats route)."""
        spec = spec.with_model(self.facts)
        if key:
            self.keys[req_id] = key
        if not self.free_numbers:
            self._grow(2 * len(self.specs))
        num = self.free_numbers.pop()
        self.index[req_id] = num
        self.specs[num] = spec
        self.slots[num] = []
        self.mixed[num] = spec.mixed
        self.num_prompt[num] = num_prompt
        self.totals["requests"] += 1
        if not spec.mixed:
            return
        g = self.group_of(spec)
        self.group[num] = g
        group = self.groups[g]
        seed = sampling.get("seed")
        values = {**numeric_params(spec), **sampling, "seed": random.getrandbits(31) if seed is None else seed}
        group.values[num] = [values[c] for c in group.columns]
        for name, fill in group.impl.state.items():  # on the device, ordered before any later read
            group.state[name][num] = fill
        for tensor in group.histograms.values():
            tensor[num] = 0
        self.mixed_count[num] = 0
        self.num_mixed_live += 1
        self.totals["mixed_requests"] += 1

    def stats(self, num: int) -> dict:
        """A live request's counts, read from the device now (for callers outside the hooks)."""
        spec = self.specs[num]
        out = {"method": spec.method, **spec.params, "mixed_steps": 0, "replayed_steps": int(self.replayed[num])}
        if spec.mixed:
            group = self.groups[int(self.group[num])]
            state = {name: float(t[num]) for name, t in group.state.items()}
            out.update(group.impl.report(state), mixed_steps=int(self.mixed_count[num]))
            out.update({f"{name}_hist": [int(v) for v in t[num].tolist()] for name, t in group.histograms.items()})
        return out

    def finish(self, req_ids: Iterable[str]) -> None:
        """Forget finished requests; their device counters are copied out without waiting."""
        done = [(req_id, self.index.pop(req_id)) for req_id in req_ids if req_id in self.index]
        if not done:
            return
        by_group: dict[int, list[tuple[str, int]]] = {}
        for req_id, num in done:
            if self.mixed[num]:
                by_group.setdefault(int(self.group[num]), []).append((req_id, num))
            else:
                self._file_finished(req_id, {"method": self.specs[num].method, **self.specs[num].params,
                                             "mixed_steps": 0, "replayed_steps": int(self.replayed[num])})
        for g, members in by_group.items():
            group = self.groups[g]
            numbers = self.upload(np.array([num for _, num in members], dtype=np.int64))
            tensors = {"mixed_steps": self.mixed_count.index_select(0, numbers)}
            tensors |= {f"state:{name}": t.index_select(0, numbers) for name, t in group.state.items()}
            tensors |= {f"hist:{name}": t.index_select(0, numbers) for name, t in group.histograms.items()}
            known = [{"method": self.specs[num].method, **self.specs[num].params, "replayed_steps": int(self.replayed[num])}
                     for _, num in members]
            self.stager.stage(("finished", g, [r for r, _ in members], known), tensors)
            self.num_mixed_live -= len(members)
        for _, num in done:
            if self.slots[num]:
                self.groups[int(self.group[num])].arena.free.extend(self.slots[num])
            self.specs[num], self.slots[num] = None, []
            for name, (_, fill) in self._FIELDS.items():
                getattr(self, name)[num] = fill
            self.free_numbers.append(num)
        if not self.num_mixed_live:
            self.records.clear()

    def _file_finished(self, req_id: str, stats: dict) -> None:
        self.totals["mixed_steps"] += stats["mixed_steps"]
        self.totals["replayed_steps"] += stats["replayed_steps"]
        key = self.keys.pop(req_id, "")
        if key:
            self.finished_by_key[key] = stats
            if len(self.finished_by_key) > MAX_FINISHED:
                self.finished_by_key.popitem(last=False)
        if req_id in self.reported:
            self.reported.discard(req_id)
        else:
            self.finished[req_id] = stats
            if len(self.finished) > MAX_FINISHED:
                self.finished.popitem(last=False)
        if self.log_requests and stats["mixed_steps"]:
            logger.info("MoI request %s finished: method=%s mixed_steps=%d replayed_steps=%d", req_id,
                        stats["method"], stats["mixed_steps"], stats["replayed_steps"])
        self._log_summary(stats)

    def _log_summary(self, stats: dict) -> None:
        """One line at most every ``log_summary_s`` seconds: the requests finished since the last."""
        window = self.window
        window["requests"] += 1
        window["mixed_requests"] += bool(stats["mixed_steps"])
        window["mixed_steps"] += stats["mixed_steps"]
        elapsed = time.monotonic() - window["since"]
        if self.log_summary_s and elapsed >= self.log_summary_s:
            logger.info("MoI: %d requests finished in the last %.0f s, %d of them with mixed inputs (%d mixed steps)",
                        window["requests"], elapsed, window["mixed_requests"], window["mixed_steps"])
            self.window = {"since": time.monotonic(), "requests": 0, "mixed_requests": 0, "mixed_steps": 0}

    # -- feedback kept between steps ----------------------------------------------------------------

    def keep(self, pending: Pending, numbers: np.ndarray, gen_index: np.ndarray) -> None:
        """These requests' newest sampled tokens (their ``gen_index``-th generated tokens) have
        ``pending``'s rows, in order."""
        self.records[self.next_record] = pending
        self.pending_record[numbers] = self.next_record
        self.pending_row[numbers] = np.arange(len(numbers))
        self.pending_gen_index[numbers] = gen_index
        self.next_record += 1

    def forget_unused_records(self) -> int:
        """Drop records no request still needs; returns the bytes of those kept."""
        used = set(np.unique(self.pending_record[self.pending_record != NONE]).tolist())
        for rid in [r for r in self.records if r not in used]:
            del self.records[rid]
        return sum(record.nbytes for record in self.records.values())

    # -- staged copies: history rows and finished requests' counters ----------------------------------

    def flush(self, idle: bool = False) -> None:
        """File what was staged (the copies have finished by now, a step later; after an idle
        step, ``idle``, this waits for them)."""
        if not self.stager.batches:
            return
        for tag, host in self.stager.take(idle):
            if tag[0] == "history":
                _, g, numbers = tag
                slots = self.groups[g].arena.put(host)
                for num, slot in zip(numbers.tolist(), slots):
                    self.slots[num].append(slot)
                self.filed[numbers] += 1
            else:
                _, g, req_ids, known = tag
                impl = self.groups[g].impl
                for j, (req_id, stats) in enumerate(zip(req_ids, known)):
                    state = {name[6:]: float(v[j]) for name, v in host.items() if name.startswith("state:")}
                    stats = {**stats, "mixed_steps": int(host["mixed_steps"][j]), **impl.report(state)}
                    stats |= {f"{name[5:]}_hist": [int(x) for x in v[j]] for name, v in host.items() if name.startswith("hist:")}
                    self._file_finished(req_id, stats)
        self.history_bytes_peak = max(self.history_bytes_peak, self.history_bytes)

    @property
    def history_bytes(self) -> int:
        """Host memory held by the history arenas (their capacity)."""
        return sum(group.arena.nbytes for group in self.groups)

    def note_device_bytes(self, nbytes: int) -> None:
        self.device_bytes_peak = max(self.device_bytes_peak, nbytes)

    # -- reporting ----------------------------------------------------------------------------------

    def request_stats(self, req_ids: Iterable[str]) -> dict[str, dict]:
        """Counts for these requests, read once, when they have finished.

        vLLM reports a request finished before its runner hears of it, so a request may still be
        live here: its counts are already final (its last token is never fed back).
        """
        self.flush(idle=True)
        out = {}
        for req_id in req_ids:
            if req_id in self.finished:
                out[req_id] = self.finished.pop(req_id)
            elif req_id in self.index:
                out[req_id] = self.stats(self.index[req_id])
                self.reported.add(req_id)
        return out

    def stats_by_key(self, keys: Iterable[str]) -> dict[str, dict]:
        """Counts for the requests with these client keys, read once, when they have finished (or
        are finishing: see :meth:`request_stats`); keys not (yet) known are left out."""
        self.flush()
        live = {key: req_id for req_id, key in self.keys.items()}
        out = {}
        for key in keys:
            if key in self.finished_by_key:
                out[key] = self.finished_by_key.pop(key)
            elif key in live and live[key] in self.index:
                out[key] = self.stats(self.index[live[key]])
        return out

    def summary(self) -> dict:
        self.flush(idle=True)
        live = np.fromiter(self.index.values(), dtype=np.int64, count=len(self.index))
        live_mixed = live[self.mixed[live]] if len(live) else live
        live_steps = int(self.mixed_count[torch.from_numpy(live_mixed).to(self.device)].sum()) if len(live_mixed) else 0
        return {
            "default": self.default.to_fields(),
            "requests": self.totals["requests"],
            "mixed_requests": self.totals["mixed_requests"],
            "mixed_steps": self.totals["mixed_steps"] + live_steps,
            "replayed_steps": self.totals["replayed_steps"] + int(self.replayed[live].sum()),
            "resumed_requests": self.totals["resumed"],
            "live_requests": len(self.index),
            "history_bytes": self.history_bytes,
            "history_bytes_peak": self.history_bytes_peak,
            "device_bytes_peak": self.device_bytes_peak,
            "host_seconds": round(self.host_seconds, 6),
            "host_to_device_copies": self.upload.transfers,
            "host_waits": self.stager.waits,
            "inputs_embeds_checked": self.inputs_embeds_checked,
            **self.memory,
            "embedding_scale": None if self.embedding_scale is None else float(self.embedding_scale),
        }

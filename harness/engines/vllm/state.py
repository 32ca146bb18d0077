"""What the model runner keeps per request between steps, keyed by request id (never by row).

Each live request gets a number; its state lives in arrays indexed by that number, so a step
touches all rows with a few vectorised operations:

- its spec (``mixed``, ``method``, ``beta``, and ``group``: requests of one group share a
  support shape, i.e. support, k and quirks);
- ``pending``: the support of its newest sampled token (a row of one of the step's
  ``SupportRecord``s, on the device), consumed when that token is fed back;
- its history: for every generated token already fed back, a row in a host-memory
  ``HistoryArena``, which rebuilds its mixed input after a preemption (vLLM 0.32 recomputes
  preempted requests): the top-k ids and probabilities (O(generated x k)), or for the
  full-vocabulary support the mixed embedding itself (O(generated x hidden)). Rows reach the
  arena one step late through ``Stager``, so the device never waits.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from harness.methods import MixSpec

logger = logging.getLogger("vllm.moi")  # under vLLM's logger: shown in vLLM's logs

# How many finished requests' counts are kept for callers that ask late (or never).
MAX_FINISHED = 100_000
NONE = -1


@dataclass
class SupportRecord:
    """The supports computed at one sampling step for one group of rows (device tensors)."""

    ids: torch.Tensor | None  # [n, k] int64, or None for the full vocabulary
    probs: torch.Tensor  # [n, k] or [n, V], fp32

    @property
    def nbytes(self) -> int:
        ids = 0 if self.ids is None else self.ids.numel() * self.ids.element_size()
        return ids + self.probs.numel() * self.probs.element_size()


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
    """Copies history rows device -> host without waiting; ``flush`` files them a step later."""

    def __init__(self, device: torch.device) -> None:
        self.is_cuda = device.type == "cuda"
        self.batches: list[tuple[int, np.ndarray, dict[str, torch.Tensor], object]] = []

    def stage(self, group: int, numbers: np.ndarray, rows: dict[str, torch.Tensor]) -> None:
        host = {name: t.detach().to("cpu", non_blocking=True) for name, t in rows.items()}
        event = None
        if self.is_cuda:
            event = torch.cuda.Event()
            event.record()
        self.batches.append((group, numbers, host, event))


class MoIBatchState:
    """All requests' MoI state in one runner, plus the counters a run reports."""

    def __init__(self, default: MixSpec, device: torch.device, log_requests: bool = False) -> None:
        self.default = default
        self.log_requests = log_requests
        self.stager = Stager(device)
        self.index: dict[str, int] = {}  # request id -> number
        self.specs: list[MixSpec | None] = []
        self.slots: list[list[int]] = []  # history slots by generated index
        self.free_numbers: list[int] = []
        self.groups: dict[tuple, int] = {}  # (support, k, quirks) -> group
        self.group_specs: list[MixSpec] = []
        self.arenas: list[HistoryArena] = []
        self.records: dict[int, SupportRecord] = {}
        self.next_record = 0
        self._grow(64)
        self.num_mixed_live = 0
        self.finished: OrderedDict[str, dict] = OrderedDict()
        self.reported: set[str] = set()  # live requests whose counts were read: not kept once finished
        self.totals = {"requests": 0, "mixed_requests": 0, "mixed_steps": 0, "replayed_steps": 0, "resumed": 0}
        self.history_bytes_peak = 0
        self.device_bytes_peak = 0
        self.host_seconds = 0.0  # wall time in MoI's hooks (on GPUs: launching, not running, kernels)

    # -- per-request arrays ---------------------------------------------------------------------

    _FIELDS = {
        "mixed": (bool, False),
        "group": (np.int64, NONE),
        "method": (np.int64, 0),
        "beta": (np.float32, 0.0),
        "num_prompt": (np.int64, 0),
        "pending_record": (np.int64, NONE),
        "pending_row": (np.int64, NONE),
        "pending_gen_index": (np.int64, NONE),  # which generated token the pending support is for
        "stored": (np.int64, 0),  # generated tokens fed back (in the history or staged for it)
        "filed": (np.int64, 0),  # of those, rows already in the history arena
        "replayed": (np.int64, 0),  # mixed inputs rebuilt from the history (after preemptions)
    }

    mixed: np.ndarray
    group: np.ndarray
    method: np.ndarray
    beta: np.ndarray
    num_prompt: np.ndarray
    pending_record: np.ndarray
    pending_row: np.ndarray
    pending_gen_index: np.ndarray
    stored: np.ndarray
    filed: np.ndarray
    replayed: np.ndarray

    def _grow(self, capacity: int) -> None:
        """Room for ``capacity`` live requests (the arrays above, by request number)."""
        old = len(self.specs)
        for name, (dtype, fill) in self._FIELDS.items():
            arr = np.full(capacity, fill, dtype=dtype)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)
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

    def group_of(self, spec: MixSpec) -> int:
        key = (spec.support, spec.k if spec.support == "topk" else 0, spec.reference_quirks)
        if key not in self.groups:
            self.groups[key] = len(self.group_specs)
            self.group_specs.append(spec)
            self.arenas.append(HistoryArena())
        return self.groups[key]

    def add(self, req_id: str, spec: MixSpec, num_prompt: int) -> None:
        if not self.free_numbers:
            self._grow(2 * len(self.specs))
        num = self.free_numbers.pop()
        self.index[req_id] = num
        self.specs[num] = spec
        self.slots[num] = []
        self.mixed[num] = spec.mixed
        self.group[num] = self.group_of(spec)
        self.method[num] = spec.code
        self.beta[num] = spec.beta
        self.num_prompt[num] = num_prompt
        self.totals["requests"] += 1
        if spec.mixed:
            self.num_mixed_live += 1
            self.totals["mixed_requests"] += 1

    def stats(self, num: int) -> dict:
        spec = self.specs[num]
        return {
            "method": spec.method,
            "beta": spec.beta,
            "support": spec.support,
            "k": spec.k,
            "mixed_steps": int(self.stored[num]) if spec.mixed else 0,
            "replayed_steps": int(self.replayed[num]),
        }

    def finish(self, req_ids: Iterable[str]) -> None:
        for req_id in req_ids:
            num = self.index.pop(req_id, None)
            if num is None:
                continue
            stats = self.stats(num)
            if self.specs[num].mixed:
                self.num_mixed_live -= 1
            if self.slots[num]:
                self.arenas[int(self.group[num])].free.extend(self.slots[num])
            self.specs[num], self.slots[num] = None, []
            for name, (_, fill) in self._FIELDS.items():
                getattr(self, name)[num] = fill
            self.free_numbers.append(num)
            self.totals["mixed_steps"] += stats["mixed_steps"]
            self.totals["replayed_steps"] += stats["replayed_steps"]
            if req_id in self.reported:
                self.reported.discard(req_id)
            else:
                self.finished[req_id] = stats
                if len(self.finished) > MAX_FINISHED:
                    self.finished.popitem(last=False)
            if self.log_requests and stats["mixed_steps"]:
                logger.info(
                    "MoI request %s finished: method=%s beta=%s mixed_steps=%d replayed_steps=%d",
                    req_id,
                    stats["method"],
                    stats["beta"],
                    stats["mixed_steps"],
                    stats["replayed_steps"],
                )
        if not self.num_mixed_live:
            self.records.clear()

    # -- supports kept between steps --------------------------------------------------------------

    def keep(self, record: SupportRecord, numbers: np.ndarray, gen_index: np.ndarray) -> None:
        """These requests' newest sampled tokens (their ``gen_index``-th generated tokens) have
        ``record``'s rows, in order."""
        self.records[self.next_record] = record
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

    # -- history ------------------------------------------------------------------------------------

    def flush(self) -> None:
        """File the rows staged last step into the arenas (their copies have finished by now)."""
        if not self.stager.batches:
            return
        for group, numbers, host, event in self.stager.batches:
            if event is not None:
                event.synchronize()
            slots = self.arenas[group].put({name: t.numpy() for name, t in host.items()})
            for num, slot in zip(numbers.tolist(), slots):
                self.slots[num].append(slot)
            self.filed[numbers] += 1
        self.stager.batches.clear()
        self.history_bytes_peak = max(self.history_bytes_peak, self.history_bytes)

    @property
    def history_bytes(self) -> int:
        """Host memory held by the history arenas (their capacity)."""
        return sum(arena.nbytes for arena in self.arenas)

    def note_device_bytes(self, nbytes: int) -> None:
        self.device_bytes_peak = max(self.device_bytes_peak, nbytes)

    # -- reporting ----------------------------------------------------------------------------------

    def request_stats(self, req_ids: Iterable[str]) -> dict[str, dict]:
        """Counts for these requests, read once, when they have finished.

        vLLM reports a request finished before its runner hears of it, so a request may still be
        live here: its counts are already final (its last token is never fed back).
        """
        out = {}
        for req_id in req_ids:
            if req_id in self.finished:
                out[req_id] = self.finished.pop(req_id)
            elif req_id in self.index:
                out[req_id] = self.stats(self.index[req_id])
                self.reported.add(req_id)
        return out

    def summary(self) -> dict:
        live = np.fromiter(self.index.values(), dtype=np.int64, count=len(self.index))
        live_mixed = live[self.mixed[live]] if len(live) else live
        return {
            "default": self.default.to_extra_args(),
            "requests": self.totals["requests"],
            "mixed_requests": self.totals["mixed_requests"],
            "mixed_steps": self.totals["mixed_steps"] + int(self.stored[live_mixed].sum()),
            "replayed_steps": self.totals["replayed_steps"] + int(self.replayed[live].sum()),
            "resumed_requests": self.totals["resumed"],
            "live_requests": len(self.index),
            "history_bytes": self.history_bytes,
            "history_bytes_peak": self.history_bytes_peak,
            "device_bytes_peak": self.device_bytes_peak,
            "host_seconds": round(self.host_seconds, 6),
        }

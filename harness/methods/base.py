"""The interface of a decoding method: its parameters, and its rule for a group of rows.

A method decides, at every generated token, what the model is fed next: the sampled token's
embedding (Standard), or a mixture ``sum_i w_i E_i``. Both engines call the same rule, in two
parts per step and per group of rows (rows of one method whose tensors share a shape):

- :meth:`Method.prepare` runs on the raw logits before the engine's sampler touches them. It keeps
  what the method needs (a support, its probabilities...), may choose the emitted token itself
  (``Prepared.emitted``, e.g. Soft Thinking's argmax) and updates the rows' method state.
- :meth:`Method.feedback` runs once the emitted token is known and returns the weights of the
  next input.

Everything is vectorised over the rows: per-row parameters and state arrive as tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass(frozen=True)
class Param:
    """One parameter of a method: its default, what values are valid, and whether it is part of
    the run identity (what determines the samples) or only a detail the engines derive."""

    name: str
    default: Any
    kind: str = "number"  # number | integer | bool | choice
    low: float | None = None  # inclusive bounds for numbers and integers
    high: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False  # None is valid (and means "off" or "the run's own setting")
    identity: bool = True
    help: str = ""

    def describe(self) -> str:
        """The valid values, in words."""
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(self.choices)
        else:
            text = "an integer" if self.kind == "integer" else "a finite number"
            if self.low is not None and self.high is not None:
                text += f" in [{self.low:g}, {self.high:g}]"
            elif self.low is not None:
                text += f" >= {self.low:g}"
            elif self.high is not None:
                text += f" <= {self.high:g}"
        return text + (" or null" if self.nullable else "")

    def parse(self, value: Any) -> Any:
        """The value as this parameter's type; ValueError naming the value and the valid ones."""
        if value is None and self.nullable:
            return None
        bad = ValueError(f"{self.name} must be {self.describe()}, got {value!r}")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise bad
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise bad
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        if self.kind == "integer":
            if float(value) != int(value):
                raise bad
            value = int(value)
        else:
            value = float(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise bad
        return value


@dataclass
class Rows:
    """A group of rows at one sampling step, as an engine hands them to a method (length ``n``).

    ``params`` and ``state`` hold one tensor of ``n`` values per parameter or state field (float32;
    booleans as 0/1, a null parameter as NaN); ``group`` the parameters of one of the rows, which
    all rows share for the parameters in the method's ``group_key``;
    ``temperature``, ``top_p`` and ``top_k`` are the requests' own sampling settings (``top_k <= 0``:
    off; ``temperature == 0``: greedy); ``seed`` and ``step`` (the index of the token being sampled
    among the generated ones) let a method draw its own reproducible noise (``harness.methods.noise``).
    ``host`` holds the same parameters and settings as numpy arrays, for decisions about shapes
    (reading a device tensor back would make the host wait for the device).
    ``forced``: the token each row must emit at this step (teacher forcing, which only the
    transformers oracle does; -1: none), or None; a method that chooses its own tokens
    (``Prepared.emitted``) emits these instead and computes its new state from them.
    """

    params: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    group: dict
    temperature: torch.Tensor
    top_p: torch.Tensor
    top_k: torch.Tensor
    seed: torch.Tensor
    step: torch.Tensor
    host: dict[str, np.ndarray] = field(default_factory=dict)
    forced: torch.Tensor | None = None


@dataclass
class Prepared:
    """What :meth:`Method.prepare` keeps for :meth:`Method.feedback`.

    ``emitted``: the token each row emits, or None to keep what the engine sampled. ``state``: the
    rows' new method state (all fields). ``stats``: per-row values of this step that the engine
    accumulates per sample (see ``Method.histograms``).
    """

    kept: dict[str, torch.Tensor | None] = field(default_factory=dict)
    emitted: torch.Tensor | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Feedback:
    """The next inputs' weights: ``sum_j weights[:, j] E[ids[:, j]]``, or, with ``ids`` None, a
    dense ``[n, V]`` matrix over the vocabulary. ``mixed`` says which rows are fed a mixture
    (False: the emitted token's own embedding, which the weights then equal); ``stats`` more
    per-row values of this step (see ``Prepared.stats``)."""

    ids: torch.Tensor | None
    weights: torch.Tensor
    mixed: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Method:
    """A decoding method. Subclasses set the class attributes and implement the two steps.

    ``name`` is what configs and requests use (``method=NAME``, ``moi_method``); ``label`` what
    tables print; ``order`` sorts tables (the paper's methods first). ``params`` declares every
    parameter; ``state`` the per-request state fields with their initial values (kept by request,
    never by batch row, so it survives preemption); ``histograms`` the per-step statistics an
    engine bins per sample, as ``name: (low, high, bins)``; ``searched`` the parameters a grid
    searches over beside temperature and top-p (what selection and derived grids carry);
    ``from_model`` the parameters an engine fills in from the model when left at their default
    (e.g. ``{"think_end_id": "think_end_id"}``: the model's think-end token); ``examples`` parameter
    sets that together cover the method's options, which the equivalence tests and the GPU check
    run (a new method is covered by adding its file).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    order: ClassVar[int] = 100
    params: ClassVar[tuple[Param, ...]] = ()
    state: ClassVar[dict[str, float]] = {}
    histograms: ClassVar[dict[str, tuple[float, float, int]]] = {}
    searched: ClassVar[tuple[str, ...]] = ()
    from_model: ClassVar[dict[str, str]] = {}  # parameter -> the model fact an engine fills it from
    emits_own_tokens: ClassVar[bool] = False  # it chooses every emitted token; the engine's sampler is ignored
    examples: ClassVar[tuple[dict, ...]] = ({},)  # parameter sets that cover the method's options (tests, checks)

    # -- what an engine asks before any step ------------------------------------------------------
    def mixes(self, params: dict) -> bool:
        """Whether generated tokens can be fed back as anything but their own embedding."""
        return True

    def group_key(self, params: dict) -> tuple:
        """Rows with the same key are prepared together (their tensors have the same shapes)."""
        return ()

    def identity(self, params: dict) -> dict:
        """The parameters that determine samples (part of the run identity)."""
        return {p.name: params[p.name] for p in self.params if p.identity}

    def tag(self, params: dict) -> str:
        """A short name for run directories (e.g. ``moi-b2``)."""
        return self.name

    def checked(self, params: dict) -> dict:
        """Parameters after checks that involve several of them (ValueError with a one-line message)."""
        return params

    # -- the rule ---------------------------------------------------------------------------------
    def prepare(self, logits: torch.Tensor, rows: Rows) -> Prepared:
        """From the raw logits ``[n, V]`` of this step (before any sampling processing)."""
        return Prepared()

    def feedback(self, prepared: Prepared, emitted: torch.Tensor, rows: Rows) -> Feedback:
        """The next inputs' weights, given the token each row emitted ``[n]``."""
        ones = torch.ones(len(emitted), 1, device=emitted.device)
        return Feedback(emitted[:, None], ones, torch.zeros(len(emitted), dtype=torch.bool, device=emitted.device))

    def report(self, state: dict[str, float]) -> dict:
        """The method's own counters for a finished sample, from its final state."""
        return {}

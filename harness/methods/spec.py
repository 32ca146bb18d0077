"""A request's decoding method and its parameters (``MixSpec``), and the request fields that carry it.

Both engines, the vLLM request validator and the run config read methods from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

METHODS = ("standard", "direct_mixture", "moi")
SUPPORTS = ("topk", "full")
STANDARD, DIRECT_MIXTURE, MOI = range(3)
DEFAULT_K = 20

# Keys of vLLM's SamplingParams.extra_args (and of the server's `vllm_xargs`).
EXTRA_ARGS_KEYS = ("moi_method", "moi_beta", "moi_support", "moi_k", "moi_reference_quirks")


@dataclass(frozen=True)
class MixSpec:
    """How one request's generated tokens are fed back: method, strength and support."""

    method: str = "standard"
    beta: float = 1.0
    support: str = "topk"
    k: int = DEFAULT_K
    reference_quirks: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid methods: {', '.join(METHODS)}")
        if self.support not in SUPPORTS:
            raise ValueError(f"unknown support {self.support!r}; valid supports: {', '.join(SUPPORTS)}")
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        k = self.k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k (the top-k support size) must be an integer >= 1, got {k!r}")
        if not isinstance(self.reference_quirks, bool):
            raise ValueError(f"reference_quirks must be true or false, got {self.reference_quirks!r}")
        if self.reference_quirks and self.support != "topk":
            raise ValueError("reference_quirks=true needs support=topk (the reference code only has top-k)")

    @property
    def mixed(self) -> bool:
        """Whether generated tokens are fed back as mixtures (anything but Standard)."""
        return self.method != "standard"

    @property
    def code(self) -> int:
        return METHODS.index(self.method)

    def to_extra_args(self) -> dict:
        """The request fields that carry this spec through vLLM (``SamplingParams.extra_args``)."""
        return {f"moi_{key}": value for key, value in asdict(self).items()}

    @classmethod
    def from_extra_args(cls, extra: dict | None, default: MixSpec | None = None) -> MixSpec:
        """Parse ``moi_*`` fields; fields that are absent come from ``default``.

        Raises ValueError with a message naming the bad field and its valid values.
        """
        base = asdict(default or cls())
        extra = extra or {}
        unknown = sorted(k for k in extra if k.startswith("moi_") and k not in EXTRA_ARGS_KEYS)
        if unknown:
            raise ValueError(f"unknown MoI field(s) {', '.join(unknown)}; valid fields: {', '.join(EXTRA_ARGS_KEYS)}")
        values = dict(base)
        for key in base:
            if f"moi_{key}" in extra:
                values[key] = extra[f"moi_{key}"]
        values["beta"] = _as_number(values["beta"], "moi_beta")
        values["k"] = _as_int(values["k"], "moi_k")
        values["reference_quirks"] = _as_bool(values["reference_quirks"], "moi_reference_quirks")
        if not isinstance(values["method"], str):
            raise ValueError(f"moi_method must be one of {', '.join(METHODS)}, got {values['method']!r}")
        return cls(**values)


def _as_number(value, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _as_int(value, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, int):
        return value
    raise ValueError(f"{name} must be an integer, got {value!r}")


def _as_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")

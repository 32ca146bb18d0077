"""Methods by the name used in configs and requests, and the spec of one request's method.

Every module of ``harness/methods/`` that defines a method registers it with :func:`register`
(adding a method is one file there plus ``configs/method/NAME.yaml``); :func:`get_method` finds
it by name. A :class:`MethodSpec` is a method with all its parameters checked and filled in: what
a request carries, what the run identity records, what engines group rows by.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.methods.base import Method

_REGISTRY: dict[str, Method] = {}
_INTERNAL = {"base", "batch", "registry", "mixing", "noise", "support"}
FIELD_PREFIX = "moi_"  # request fields (vLLM's extra_args, the server's vllm_xargs): moi_method, moi_<param>
METHOD_FIELD = FIELD_PREFIX + "method"
SEED_FIELD = FIELD_PREFIX + "seed"  # the seed of a method's own noise (default: the request's seed)
KEY_FIELD = FIELD_PREFIX + "request_key"  # a client's own key for the request's counters (the server's stats route)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under ``cls.name``."""
    if not cls.name or not cls.label:
        raise ValueError(f"{cls.__name__} needs a name and a label")
    _REGISTRY[cls.name] = cls()
    return cls


def _discover() -> None:
    package = importlib.import_module("harness.methods")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _INTERNAL and not module.name.startswith("_"):
            importlib.import_module(f"harness.methods.{module.name}")


def method_names() -> list[str]:
    """Every registered method, in table order."""
    _discover()
    return sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].order, name))


def get_method(name: str) -> Method:
    """The method registered under ``name``; ValueError listing the valid names."""
    if name not in _REGISTRY:
        _discover()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}")
    return _REGISTRY[name]


@dataclass(frozen=True)
class MethodSpec:
    """One request's decoding method with every parameter checked and filled in (hashable)."""

    method: str = "standard"
    values: tuple[tuple[str, Any], ...] = ()

    @property
    def impl(self) -> Method:
        return get_method(self.method)

    @property
    def params(self) -> dict:
        return dict(self.values)

    def __getitem__(self, name: str) -> Any:
        return self.params[name]

    @property
    def mixed(self) -> bool:
        """Whether generated tokens may be fed back as anything but their own embedding."""
        return self.impl.mixes(self.params)

    @property
    def group(self) -> tuple:
        """Requests with equal groups are processed together by an engine."""
        return (self.method, *self.impl.group_key(self.params))

    def __str__(self) -> str:
        return f"{self.method}(" + ", ".join(f"{k}={v}" for k, v in self.values) + ")"

    def identity(self) -> dict:
        """The method and the parameters that determine samples (the run identity's part)."""
        return {"name": self.method, **self.impl.identity(self.params)}

    def tag(self) -> str:
        return self.impl.tag(self.params)

    def with_model(self, facts: dict) -> MethodSpec:
        """The spec with its model-dependent parameters (``Method.from_model``, e.g. Soft Thinking's
        think-end token) filled in from ``facts`` where they are still at their default."""
        impl = self.impl
        params = self.params
        defaults = {p.name: p.default for p in impl.params}
        changed = {name: facts[fact] for name, fact in impl.from_model.items()
                   if params[name] == defaults[name] and facts.get(fact) is not None}
        return make_spec(self.method, **{**params, **changed}) if changed else self

    def to_fields(self) -> dict:
        """The request fields that carry this spec (``moi_method`` and ``moi_<param>``)."""
        return {METHOD_FIELD: self.method, **{FIELD_PREFIX + k: v for k, v in self.values}}


def make_spec(method: str = "standard", **params: Any) -> MethodSpec:
    """A checked spec: the method's defaults, overridden by ``params``; ValueError naming a bad value."""
    impl = get_method(method)
    declared = {p.name: p for p in impl.params}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        valid = ", ".join(declared) or "none"
        raise ValueError(f"method {method} has no parameter {unknown[0]!r}; its parameters: {valid}")
    values = {name: p.parse(params[name]) if name in params else p.default for name, p in declared.items()}
    values = impl.checked(values)
    return MethodSpec(method, tuple((p.name, values[p.name]) for p in impl.params))


def spec_from_config(method_cfg: Mapping) -> MethodSpec:
    """A run config's ``method`` section: ``name`` and the method's parameters (keys it does not
    declare, such as ``beta`` kept in every method file so that sweeps compose, are ignored)."""
    name = method_cfg.get("name")
    impl = get_method(name)
    declared = {p.name for p in impl.params}
    return make_spec(name, **{k: v for k, v in method_cfg.items() if k in declared})


def spec_from_fields(fields: Mapping | None, default: MethodSpec | None = None) -> MethodSpec:
    """A request's spec from its ``moi_*`` fields; absent ones come from ``default`` (a process-wide
    default) when the request keeps the default's method, else from the method's own defaults.
    Fields of other registered methods are checked and then ignored (a sweep may send ``moi_beta``
    to Standard); unknown fields raise ValueError listing the valid ones."""
    fields = {k: v for k, v in (fields or {}).items() if k.startswith(FIELD_PREFIX)}
    seed = fields.pop(SEED_FIELD, 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{SEED_FIELD} must be an integer, got {seed!r}")
    key = fields.pop(KEY_FIELD, "")
    if not isinstance(key, str) or len(key) > 200:
        raise ValueError(f"{KEY_FIELD} must be a string of at most 200 characters, got {key!r}")
    default = default or MethodSpec()
    name = fields.get(METHOD_FIELD, default.method)
    if not isinstance(name, str):
        raise ValueError(f"{METHOD_FIELD} must be one of {', '.join(method_names())}, got {name!r}")
    impl = get_method(name)
    declared = {FIELD_PREFIX + p.name: p for m in reversed(method_names()) for p in get_method(m).params}
    unknown = sorted(set(fields) - set(declared) - {METHOD_FIELD})
    if unknown:
        valid = ", ".join([METHOD_FIELD, *(FIELD_PREFIX + p.name for p in impl.params)])
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; valid fields for method {name}: {valid}")
    own = {FIELD_PREFIX + p.name for p in impl.params}
    try:
        for field_name in sorted(set(fields) - own - {METHOD_FIELD}):  # another method's: checked, then ignored
            declared[field_name].parse(fields[field_name])
        base = default.params if name == default.method else {}
        params = {**base, **{p.name: fields[FIELD_PREFIX + p.name] for p in impl.params if FIELD_PREFIX + p.name in fields}}
        return make_spec(name, **params)
    except ValueError as err:
        raise ValueError(f"{FIELD_PREFIX}{err}") from None


def example_specs() -> list[MethodSpec]:
    """Every registered method at each of its examples (``Method.examples``), in table order."""
    return [make_spec(name, **example) for name in method_names() for example in get_method(name).examples]

"""Decoding methods as plugins: how a sampled token is fed back as the next input.

One module per method (``standard``, ``direct_mixture``, ``moi``, ``soft_thinking``), each a
:class:`~harness.methods.base.Method` registered by name; ``mixing`` and ``noise`` hold the math
they share. Both engines, the vLLM request validator, run naming and the tables read this
registry; none of them names a method. See README, "Adding a decoding method".
"""

from harness.methods.base import Feedback, Method, Param, Prepared, Rows
from harness.methods.registry import (
    FIELD_PREFIX,
    KEY_FIELD,
    METHOD_FIELD,
    SEED_FIELD,
    MethodSpec,
    example_specs,
    get_method,
    make_spec,
    method_names,
    register,
    spec_from_config,
    spec_from_fields,
)

__all__ = [
    "FIELD_PREFIX", "KEY_FIELD", "METHOD_FIELD", "SEED_FIELD", "Feedback", "Method", "MethodSpec", "Param", "Prepared", "Rows", "example_specs", "get_method",
    "make_spec", "method_names", "register", "spec_from_config", "spec_from_fields",
]

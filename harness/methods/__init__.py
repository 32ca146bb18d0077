"""Decoding methods: how a sampled token is fed back as the next input (the math both engines call)."""

from harness.methods.spec import DEFAULT_K, EXTRA_ARGS_KEYS, METHODS, SUPPORTS, MixSpec

__all__ = ["DEFAULT_K", "EXTRA_ARGS_KEYS", "METHODS", "SUPPORTS", "MixSpec"]

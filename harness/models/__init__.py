"""Models by config: a hub id or local folder resolved to weights on disk, or a model built here."""

from harness.models.resolve import ResolvedModel, resolve_model

__all__ = ["ResolvedModel", "resolve_model"]

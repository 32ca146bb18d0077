"""The errors a user can cause, each with a message that names the bad value and what would be valid.

Every entry point turns a :class:`UserError` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: a config value, a data file, a model folder... The message says what to do."""


class ConfigError(UserError):
    """A config value that cannot run; the message names it and the valid choices."""


class DataError(UserError):
    """Missing or unreadable data, with a message that says what to do."""


class ModelError(UserError):
    """A model that cannot be found or loaded, with advice."""

"""Errors that carry a one-line message meant for the user.

The CLI turns these into a single line on stderr and exit code 2; library users can catch them
like any ``ValueError``.
"""


class EsdsnnError(ValueError):
    """Base class: the message names the problem and, where possible, the fix."""


class ConfigError(EsdsnnError):
    """An impossible or unknown configuration value."""


class DataError(EsdsnnError):
    """A missing, truncated or malformed data set or file."""


class CheckpointError(EsdsnnError):
    """A missing, corrupt or incompatible checkpoint or run directory."""


class TrainingDiverged(EsdsnnError):
    """The loss became NaN or infinite."""

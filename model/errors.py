"""The qsweep error tree. Every user-facing failure raises one of these.

Messages say what was wrong, the offending value, what is allowed and what to do.
The CLI prints ``str(error)`` (no traceback) and exits non-zero.
"""

from __future__ import annotations

__all__ = ["QsweepError", "ConfigError", "DataError", "EncoderError", "ServiceError"]


class QsweepError(Exception):
    """Base class of every error qsweep raises on purpose."""


class ConfigError(QsweepError):
    """A configuration or search-space value is invalid (names the key and the value)."""


class DataError(QsweepError):
    """A data set is missing, unreachable or malformed (names the file/column and the fix)."""


class EncoderError(QsweepError):
    """A sentence encoder cannot be loaded (names the encoder and how to use a local one)."""


class ServiceError(QsweepError):
    """An external service (Ray, MLflow, Slurm) is unreachable or refused a request."""

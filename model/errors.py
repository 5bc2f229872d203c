"""The qsweep error tree. Every user-facing failure raises one of these.

Messages say what was wrong, the offending value, what is allowed and what to do.
The CLI prints ``str(error)`` (no traceback) and exits non-zero.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "QsweepError",
    "ConfigError",
    "DataError",
    "EncoderError",
    "ServiceError",
    "short_repr",
    "shorten",
]


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


# A bounded repr: it never walks more than a few levels and items of a value, so a
# 330,000-level list or an expanded YAML alias bomb costs microseconds to show.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxdict = 6
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 10
_REPR.maxstring = 160
_REPR.maxother = 160
_REPR.maxlong = 40


def short_repr(value: Any, limit: int = 240) -> str:
    """``repr(value)`` for an error message, cut to at most ``limit`` characters.

    Long strings keep their start and end, long containers their first items and their
    length: ``[1e-06, 2e-06, ...] (330,000 items)``. Every message that prints a value
    from user input goes through this.
    """
    text = _REPR.repr(value)
    if isinstance(value, (list, tuple, dict, set, frozenset)) and len(value) > _REPR.maxlist:
        text += f" ({len(value):,} items)"
    return shorten(text, limit)


def shorten(text: str, limit: int = 240) -> str:
    """``text`` cut to at most ``limit`` characters (for names and keys, which are shown
    without quotes)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""qsweep's science: data, embeddings, the hybrid quantum head, training, energy.

Knows nothing of Ray, MLflow or Slurm. One trial is::

    from model import DataConfig, TrialConfig, fit, load_and_embed
    data = load_and_embed(DataConfig(source="demo", encoder="minilm"))
    result = fit(TrialConfig(qubits=9, epochs=30), data)

Heavy modules (torch, sentence-transformers) load on first use of these names.
"""

from __future__ import annotations

import importlib
from typing import Any

from model.config import DataConfig, TrialConfig
from model.errors import ConfigError, DataError, EncoderError, QsweepError, ServiceError
from model.types import EmbeddedSplits, TextSplits, TrialResult

__all__ = [
    "ConfigError",
    "DataConfig",
    "DataError",
    "EmbeddedSplits",
    "EncoderError",
    "QsweepError",
    "ServiceError",
    "TextSplits",
    "TrialConfig",
    "TrialResult",
    "fit",
    "load_and_embed",
    "make_splits",
]

_LAZY = {
    "fit": "model.training",
    "load_and_embed": "model.embeddings",
    "make_splits": "model.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")

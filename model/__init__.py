"""qsweep's science: data, embeddings, the hybrid quantum head, training, energy.

Knows nothing of Ray, MLflow or Slurm. One trial is::

    from model import DataConfig, TrialConfig, fit, load_and_embed
    data = load_and_embed(DataConfig(source="demo", encoder="minilm"))
    result = fit(TrialConfig(qubits=9, epochs=30), data)

Heavy modules (torch, sentence-transformers) load on first use of these names.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# OpenMP threads (torch's and the CPU circuit kernel's, one libgomp) sleep when idle instead
# of spinning: a spinning thread takes a core from the others whenever the machine has more
# busy threads than cores (other trials, other users), and a lone 10-qubit trial with 2
# threads on this 2-core VM under load then ran 6-10x slower than with 1 (1.3-2.5 vs
# 0.22 s/epoch; 0.18-0.25 passive). Read by libgomp when torch loads it, so only when
# qsweep is imported before torch; set OMP_WAIT_POLICY=ACTIVE on a dedicated node to spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

"""Which trials can share one packed model, and how many: facts the planner needs without torch.

Trials whose configs differ only in :data:`PACKABLE_KEYS` train as one model
(``model.training.fit_packed``). :func:`auto_pack_size` is ``pack_size: auto``;
:func:`use_adjoint` says whether a config's circuits use adjoint gradients.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from model.config import TrialConfig
from model.heads import registry

__all__ = [
    "PACKABLE_KEYS",
    "ADJOINT_MIN_QUBITS",
    "AUTO_PACK_MAX",
    "pack_key",
    "auto_pack_size",
    "use_adjoint",
]

PACKABLE_KEYS = ("seed", "learning_rate", "lr_decay", "weight_decay")

# From this register size on, circuits are differentiated by un-computing them (adjoint):
# peak memory a few states instead of about two per circuit step. Measured on the torch
# path with `python -m model.benchmark_trials --memory --qubits Q --kernel off` (README
# "Adjoint gradients"): at 10 qubits adjoint is 1.24x slower, at 14 qubits 0.46x the time,
# at 18 0.70x. The CPU kernel (trial.cpu_kernel) is adjoint at every size either way.
ADJOINT_MIN_QUBITS = 14


def use_adjoint(config: TrialConfig) -> bool:
    """``trial.gradient``: adjoint | autograd | auto (adjoint from ADJOINT_MIN_QUBITS qubits)."""
    if config.gradient == "auto":
        return config.qubits >= ADJOINT_MIN_QUBITS
    return config.gradient == "adjoint"


# Largest automatic pack: on a CPU the 10-qubit head runs 2.6x faster per trial at 8
# members and 3.0x at 16 than alone with the CPU kernel (2.0x and 2.1x on the torch path;
# `python -m model.benchmark_trials --pack 1 8 16 --kernel both`, 1 thread, 2026-12-02);
# a GPU keeps gaining until memory or 64 members. The planner splits packs further so
# that every concurrent slot gets one (orchestrator/packing.py).
AUTO_PACK_MAX = {"cpu": 16, "gpu": 64}


def auto_pack_size(
    config: TrialConfig, *, gpu: bool, memory_bytes: int | None = None, share: float = 1.0
) -> int:
    """``pack_size: auto``: members that fit half the memory, capped per device kind.

    ``share``: the part of the device this pack has to itself (``resources.gpu: 1/k``:
    k packs on one GPU, each sized for half of 1/k of its memory).

    Memory per member is estimated from the state size ``batch x encoders x 2**qubits``
    complex64 amplitudes times the states a training step keeps: about two per circuit
    step with autograd, about eight with adjoint gradients. epochless heads (sklearn, finetune) are not packed.
    """
    if registry.is_epochless(config.head):
        return 1
    cap = AUTO_PACK_MAX["gpu" if gpu else "cpu"]
    if not config.is_quantum:
        return cap
    if memory_bytes is None:
        memory_bytes = (
            _gpu_memory() if gpu else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        )
    layers = config.encoder_layers + config.reuploads * config.reupload_layers + config.main_layers
    blocks = -(-config.qubits // (4 if config.qubits <= 11 else 5))
    kept = 8 if use_adjoint(config) else 2 * layers * (blocks + 1)
    state = config.batch_size * max(1, config.encoders) * (1 << config.qubits) * 8
    usable = int(memory_bytes * min(1.0, share)) // 2
    return int(max(1, min(cap, usable // (state * kept))))


def _gpu_memory() -> int:
    """Memory of the visible GPU; 16 GB when planning on a machine without one."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    return 16 << 30


def pack_key(config: TrialConfig) -> tuple:
    """Trials with equal keys can share one packed model (all but PACKABLE_KEYS equal).

    The fields are read directly (every TrialConfig field is a scalar): the same key as
    ``sorted(config.to_dict().items())`` without ``dataclasses.asdict``'s deep copy, which
    was most of the time of planning 100,000 trials."""
    return tuple((k, getattr(config, k)) for k in _key_fields(type(config)))


@functools.cache
def _key_fields(cls: type) -> tuple[str, ...]:
    return tuple(sorted(f.name for f in dataclasses.fields(cls) if f.name not in PACKABLE_KEYS))

"""A fake ``fit`` for sweep tests (same contract as ``model.training.fit``, no torch training).

Used in-process (``run_study(fit=fake_fit)``) and by subprocess drivers through the test
hook ``QSWEEP_FIT=tests.sweep_fakes:fake_fit``. Behaviour is a pure function of the
config so tests can compute the expected table independently:

- val accuracy at epoch e: ``expected_val(cfg) * e / epochs``; test accuracy = val - 0.01;
- ``weight_decay == 0.5``: raises every attempt; ``weight_decay == 0.25``: raises on the
  first attempt of a process only;
- ``QSWEEP_FAKE_EPOCH_S`` seconds of sleep per epoch (default 0.01);
- ``QSWEEP_FAKE_STATE=1``: the result carries the untrained head's state (a real model to log).
"""

from __future__ import annotations

import os
import time

import numpy as np

from model.config import TrialConfig
from model.types import EmbeddedSplits, TrialResult

_ATTEMPTS: dict[str, int] = {}


def expected_val(cfg: TrialConfig) -> float:
    return round(0.5 + 0.02 * cfg.qubits - 10.0 * cfg.learning_rate + 0.001 * cfg.seed, 6)


def tiny_data(n: int = 8, dim: int = 4) -> EmbeddedSplits:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = np.arange(n, dtype=np.int64) % 2
    return EmbeddedSplits(x, y, x, y, x, y, encoder="fake", source="fake")


def fake_fit(config: TrialConfig, data: EmbeddedSplits, on_epoch=None) -> TrialResult:
    key = repr(sorted(config.to_dict().items()))
    _ATTEMPTS[key] = _ATTEMPTS.get(key, 0) + 1
    if config.weight_decay == 0.5:
        raise RuntimeError(f"fake failure for weight_decay={config.weight_decay}")
    if config.weight_decay == 0.25 and _ATTEMPTS[key] == 1:
        raise RuntimeError("fake transient failure")
    sleep = float(os.environ.get("QSWEEP_FAKE_EPOCH_S", "0.01"))
    target = expected_val(config)
    history = []
    t0 = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        time.sleep(sleep)
        val = target * epoch / config.epochs
        metrics = {
            "epoch": epoch,
            "train_loss": 1.0 / epoch,
            "train_accuracy": val,
            "val_loss": 1.0 - val,
            "val_accuracy": val,
            "lr": config.learning_rate,
            "elapsed_s": time.monotonic() - t0,
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    return TrialResult(
        val_accuracy=target,
        test_accuracy=round(target - 0.01, 6),
        best_epoch=config.epochs,
        epochs_run=config.epochs,
        n_params=10 * config.qubits,
        wall_time_s=time.monotonic() - t0,
        device="cpu",
        engine="cpu-torch",
        history=history,
        energy={"qpu_energy_j": 1.5 * config.qubits, "gpu_energy_j": 2.0},
        config=config.to_dict(),
        state=_initial_state(config, data) if os.environ.get("QSWEEP_FAKE_STATE") else None,
    )


def _initial_state(config: TrialConfig, data: EmbeddedSplits) -> dict:
    from model.heads.factory import build_head

    return build_head(config.replace(device="cpu"), data.dim).state_dict()

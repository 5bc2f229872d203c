"""Training one head on fixed embeddings: the trial contract every driver calls.

    from model import fit, TrialConfig
    result = fit(TrialConfig(qubits=10, epochs=800), embedded, on_epoch=print)

Adam with weight decay and per-epoch exponential learning-rate decay; the epoch with the
best validation accuracy is kept (ties: the earlier epoch) and the test accuracy is
measured with its weights. Knows nothing of Ray, MLflow or Slurm.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.config import TrialConfig
from model.errors import ConfigError
from model.types import EmbeddedSplits, TrialResult

__all__ = ["fit", "resolve_device", "evaluate", "count_parameters"]

EpochCallback = Callable[[dict[str, Any]], Any]

# Largest number of amplitudes (batch x 2**qubits) evaluated at once without gradients.
_EVAL_AMPLITUDES = 1 << 22


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU. Asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "trial.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'."
        )
    return torch.device(name)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def fit(
    config: TrialConfig,
    data: EmbeddedSplits,
    on_epoch: EpochCallback | None = None,
) -> TrialResult:
    """Train ``config.head`` on ``data`` and return its validation/test accuracy.

    ``on_epoch`` is called after every epoch with ``{"epoch" (1-based), "train_loss",
    "train_accuracy", "val_loss", "val_accuracy", "lr", "elapsed_s"}``; drivers use it
    to report progress (and may stop the trial by raising).
    """
    data.check_trainable()
    if config.head in ("logreg", "svc"):
        from model.heads.baselines import fit_baseline

        return fit_baseline(config, data)

    from model.heads.factory import build_head

    start = time.perf_counter()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (2**32))
    head = build_head(config, data.dim).to(device)
    n_params = count_parameters(head)

    x_train = torch.as_tensor(data.x_train, dtype=torch.float32, device=device)
    y_train = torch.as_tensor(data.y_train, dtype=torch.long, device=device)
    x_val = torch.as_tensor(data.x_val, dtype=torch.float32, device=device)
    y_val = torch.as_tensor(data.y_val, dtype=torch.long, device=device)

    optimizer = torch.optim.Adam(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    shuffle = torch.Generator(device="cpu").manual_seed(config.seed)
    eval_batch = _eval_batch_size(config)

    history: list[dict[str, float]] = []
    best_val, best_epoch, best_state = -1.0, 0, None
    n = len(y_train)
    for epoch in range(1, config.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        head.train()
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for lo in range(0, n, config.batch_size):
            idx = order[lo : lo + config.batch_size]
            logits = head(x_train[idx])  # (b, 2)
            loss = F.cross_entropy(logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == y_train[idx]).sum()
        scheduler.step()

        val_loss, val_acc = evaluate(head, x_val, y_val, batch_size=eval_batch)
        metrics = {
            "epoch": epoch,
            "train_loss": float(loss_sum) / n,
            "train_accuracy": float(correct) / n,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": lr,
            "elapsed_s": time.perf_counter() - start,
        }
        history.append(metrics)
        if val_acc > best_val:
            best_val, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(head.state_dict())
        if on_epoch is not None:
            on_epoch(dict(metrics))

    if best_state is not None:
        head.load_state_dict(best_state)
    x_test = torch.as_tensor(data.x_test, dtype=torch.float32, device=device)
    y_test = torch.as_tensor(data.y_test, dtype=torch.long, device=device)
    _, test_acc = evaluate(head, x_test, y_test, batch_size=eval_batch)

    return TrialResult(
        val_accuracy=best_val,
        test_accuracy=test_acc,
        best_epoch=best_epoch,
        epochs_run=config.epochs,
        n_params=n_params,
        wall_time_s=time.perf_counter() - start,
        device=str(device),
        history=history,
        energy=_energy(config),
        config=config.to_dict(),
    )


@torch.no_grad()
def evaluate(
    head: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``head`` in eval mode. x: (n, d), y: (n,)."""
    if len(y) == 0:
        return math.nan, math.nan
    head.eval()
    loss_sum, correct = 0.0, 0
    for lo in range(0, len(y), batch_size):
        logits = head(x[lo : lo + batch_size])
        target = y[lo : lo + batch_size]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    return loss_sum / len(y), correct / len(y)


def _eval_batch_size(config: TrialConfig) -> int:
    if not config.is_quantum:
        return config.eval_batch_size
    per_sample = (1 << config.qubits) * max(1, config.encoders)
    return max(1, min(config.eval_batch_size, _EVAL_AMPLITUDES // per_sample))


def _energy(config: TrialConfig) -> dict[str, float]:
    if not config.is_quantum:
        return {}
    from model.energy import inference_energy

    return {k: float(v) for k, v in inference_energy(config).items()}

"""``build_head(config, input_dim)``: the trainable head a ``TrialConfig`` names."""

from __future__ import annotations

from torch import nn

from model.config import HEADS, TrialConfig
from model.errors import ConfigError

__all__ = ["build_head"]


def build_head(config: TrialConfig, input_dim: int, **kwargs) -> nn.Module:
    """The nn.Module for ``config.head``: forward (B, input_dim) -> logits (B, 2).

    mlp -> :class:`model.heads.classical.MLPHead`; quantum, mlp_encoder ->
    ``model.heads.quantum.QuantumHead``. logreg and svc are fitted by
    :func:`model.heads.baselines.fit_baseline` and finetune by
    :func:`model.heads.finetune.fit_finetune`, not trained by gradient descent here.
    """
    if config.head == "mlp":
        from model.heads.classical import MLPHead

        return MLPHead(config, input_dim, seeds=kwargs.get("seeds"))
    if config.head in ("quantum", "mlp_encoder"):
        from model.heads.quantum import QuantumHead

        return QuantumHead(config, input_dim, **kwargs)
    if config.head in ("logreg", "svc", "finetune"):
        where = "finetune.fit_finetune" if config.head == "finetune" else "baselines.fit_baseline"
        raise ConfigError(
            f"trial.head = {config.head!r} is fitted by model.heads.{where}, not trained "
            "by gradient descent on fixed embeddings; heads built here: mlp, quantum, mlp_encoder."
        )
    raise ConfigError(f"trial.head = {config.head!r} is not allowed; allowed: {', '.join(HEADS)}.")

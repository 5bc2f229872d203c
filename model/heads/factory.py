"""``build_head(config, input_dim)``: the trainable head a ``TrialConfig`` names."""

from __future__ import annotations

from torch import nn

from model.config import TrialConfig
from model.errors import ConfigError
from model.heads import registry

__all__ = ["build_head"]


def build_head(
    config: TrialConfig, input_dim: int, *, seeds: list[int] | None = None, adjoint: bool = False
) -> nn.Module:
    """The nn.Module for ``config.head``: forward (B, input_dim) -> logits (B, 2).

    ``seeds``: one initialisation seed per packed member (default ``[config.seed]``);
    ``adjoint``: adjoint-differentiated circuits (quantum heads).

    The class comes from :mod:`model.heads.registry` (``mlp`` ->
    :class:`model.heads.classical.MLPHead`; ``quantum``, ``mlp_encoder`` ->
    ``model.heads.quantum.QuantumHead``). sklearn heads (logreg, svc) are fitted by
    :func:`model.heads.baselines.fit_baseline`, not trained by gradient descent.
    """
    spec = registry.head_spec(config.head)
    if not spec.gradient_trained:
        raise ConfigError(
            f"trial.head = {config.head!r} is a scikit-learn baseline: it is fitted by "
            "model.heads.baselines.fit_baseline, not trained by gradient descent; "
            f"heads built here: {', '.join(registry.TORCH_HEADS)}."
        )
    kwargs = {"adjoint": adjoint} if spec.family == "quantum" else {}
    return registry.load(config.head)(config, input_dim, seeds=seeds, **kwargs)

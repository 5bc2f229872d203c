"""``build_head(config, input_dim)``: the trainable head a ``TrialConfig`` names."""

from __future__ import annotations

from torch import nn

from model.config import TrialConfig
from model.errors import ConfigError
from model.heads import registry

__all__ = ["build_head", "restore_head"]


def build_head(
    config: TrialConfig, input_dim: int, *, seeds: list[int] | None = None, adjoint: bool = False
) -> nn.Module:
    """The nn.Module for ``config.head``: forward (B, input_dim) -> logits (B, 2).

    ``seeds``: one initialisation seed per packed member (default ``[config.seed]``);
    ``adjoint``: adjoint-differentiated circuits (quantum heads).

    The class comes from :mod:`model.heads.registry` (``mlp`` ->
    :class:`model.heads.classical.MLPHead`; ``quantum``, ``mlp_encoder`` ->
    ``model.heads.quantum.QuantumHead``). Epochless heads (logreg, svc: fitted by
    :func:`model.heads.baselines.fit_baseline`; finetune: :func:`model.heads.finetune.fit_finetune`)
    are not trained by gradient descent here.
    """
    spec = registry.head_spec(config.head)
    if not spec.gradient_trained:
        raise ConfigError(
            f"trial.head = {config.head!r} is fitted by {spec.target.replace(':', '.')}, not "
            "trained by gradient descent on fixed embeddings; heads built here: "
            f"{', '.join(registry.TORCH_HEADS)}."
        )
    kwargs = {"adjoint": adjoint} if spec.family == "quantum" else {}
    return registry.load(config.head)(config, input_dim, seeds=seeds, **kwargs)


def restore_head(config: TrialConfig, input_dim: int, state: dict) -> nn.Module:
    """The trained head of one trial: ``build_head`` (one member) plus its ``state_dict``,
    on CPU, in eval mode.

    ``state`` is ``TrialResult.state`` of an nn.Module head (one member; a packed member
    is sliced out by ``model.training.member_state``). Shots and gate noise are switched
    off: the restored head predicts with exact expectations.
    """
    if registry.is_quantum(config.head):
        config = config.replace(shots=0, noise_p1=0.0, noise_p2=0.0)
    head = build_head(config.replace(device="cpu"), input_dim)
    head.load_state_dict(state)
    return head.eval()

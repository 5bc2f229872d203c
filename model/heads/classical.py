"""Classical heads trained by the same loop as the quantum head (``model.training.fit``).

    head = MLPHead(TrialConfig(head="mlp", hidden=96, batch_norm=True), input_dim=768)
    logits = head(x)  # x: (B, 768) -> (B, 2)

The paper's MLP head family (Table XIV): hidden width 0, 48, 96, 144 or 192, with or
without batch normalisation. Width 0 is logistic regression trained by gradient descent.
Packed like the quantum head: ``MLPHead(config, d, seeds=[...])`` maps ``(B, T, d) -> (B, T, 2)``.
"""

from __future__ import annotations

import torch
from torch import nn

from model.config import TrialConfig
from model.errors import ConfigError
from model.heads.packed import (
    PackedBatchNorm,
    PackedLinear,
    as_members,
    from_members,
    member_generators,
)

__all__ = ["MLPHead", "mlp_param_count"]


class MLPHead(nn.Module):
    """Linear(d, h) -> [BatchNorm1d(h)] -> ReLU -> Linear(h, 2); h = 0: a single Linear(d, 2).

    Each layer is packed (one copy per member): see ``model.heads.packed``.
    """

    def __init__(
        self, config: TrialConfig, input_dim: int, *, seeds: list[int] | None = None
    ) -> None:
        super().__init__()
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
            raise ConfigError(
                f"input_dim = {input_dim!r} is not allowed; it must be an integer >= 1."
            )
        if config.hidden < 0:
            raise ConfigError(f"trial.hidden = {config.hidden!r} is not allowed; it must be >= 0.")
        hidden = config.hidden
        gens = member_generators([config.seed] if seeds is None else seeds)
        self.members, self.input_dim = len(gens), input_dim
        t = self.members
        if hidden == 0:
            self.net = nn.Sequential(PackedLinear(t, input_dim, 2, gens))
        else:
            layers: list[nn.Module] = [PackedLinear(t, input_dim, hidden, gens)]
            if config.batch_norm:
                layers.append(PackedBatchNorm(t, hidden))
            layers += [nn.ReLU(), PackedLinear(t, hidden, 2, gens)]
            self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, squeeze = as_members(x, self.members, self.input_dim, "MLPHead")
        return from_members(self.net(x), squeeze)  # (B, T, d) -> (B, T, 2)


def mlp_param_count(input_dim: int, hidden: int, batch_norm: bool) -> int:
    """Trainable scalars of :class:`MLPHead`: d*h + h + [2h] + 2h + 2 (h = 0: 2d + 2)."""
    if hidden == 0:
        return 2 * input_dim + 2
    return input_dim * hidden + hidden + (2 * hidden if batch_norm else 0) + 2 * hidden + 2

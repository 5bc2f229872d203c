"""Building blocks for *packed* heads: T independent trials trained as one module.

Every trainable tensor carries a member axis of size T, every activation is
``(B, T, ...)``: member t only ever sees its own weights and its own rows, so a packed
step is T ordinary steps done by one set of kernels. Each member draws its initial
weights from its own generator, in the same order whatever T is, so member t of a pack
starts exactly where a T = 1 head with the same seed starts.

    lin = PackedLinear(4, 768, 2, generators=[torch.Generator().manual_seed(s) for s in range(4)])
    y = lin(x)  # x (B, 4, 768) -> (B, 4, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.errors import ConfigError

__all__ = ["PackedLinear", "PackedBatchNorm", "as_members", "from_members", "member_generators"]


def member_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per member for weight initialisation, seeded with its trial seed."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def as_members(x: Tensor, members: int, dim: int, what: str) -> tuple[Tensor, bool]:
    """``(B, dim)`` (one member) or ``(B, T, dim)`` -> ``(B, T, dim)``, and whether it was 2-D."""
    if x.dim() == 2 and members == 1 and x.shape[1] == dim:
        return x.unsqueeze(1), True
    if x.dim() == 3 and x.shape[1] == members and x.shape[2] == dim:
        return x, False
    want = f"(B, {dim}) or (B, 1, {dim})" if members == 1 else f"(B, {members}, {dim})"
    raise ConfigError(f"{what} expects input of shape {want}, got {tuple(x.shape)}.")


def from_members(y: Tensor, squeeze: bool) -> Tensor:
    """Undo :func:`as_members`: drop the member axis of a one-member result."""
    return y[:, 0] if squeeze else y


class PackedLinear(nn.Module):
    """T independent ``nn.Linear(fan_in, fan_out)``: ``(B, T, fan_in) -> (B, T, fan_out)``.

    Initialised like ``nn.Linear`` (weight, then bias, each U(-1/sqrt(fan_in), 1/sqrt(fan_in)))
    from each member's generator.
    """

    def __init__(
        self, members: int, fan_in: int, fan_out: int, generators: Sequence[torch.Generator]
    ) -> None:
        super().__init__()
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        weight, bias = [], []
        for g in generators:
            weight.append(torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=g))
            bias.append(torch.empty(fan_out).uniform_(-bound, bound, generator=g))
        self.weight = nn.Parameter(torch.stack(weight))  # (T, out, in)
        self.bias = nn.Parameter(torch.stack(bias))  # (T, out)
        self.members = members

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bti,toi->bto", x, self.weight) + self.bias


class PackedBatchNorm(nn.Module):
    """T independent ``nn.BatchNorm1d(features)`` on ``(B, T, features)``.

    One ``F.batch_norm`` over ``T * features`` channels: the statistics of member t's
    features are taken over member t's own rows only.
    """

    def __init__(self, members: int, features: int, *, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))
        self.register_buffer("running_mean", torch.zeros(members, features))
        self.register_buffer("running_var", torch.ones(members, features))

    def forward(self, x: Tensor) -> Tensor:
        b, t, f = x.shape
        y = F.batch_norm(
            x.reshape(b, t * f),
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.reshape(-1),
            self.bias.reshape(-1),
            self.training,
            self.momentum,
            self.eps,
        )
        return y.reshape(b, t, f)

"""Random draws for noise sampling, one seeded stream per packed trial.

A packed model trains T trials at once; every tensor of noise then carries a *member*
axis of size T. :class:`MemberRNG` draws each member's slice from that member's own
``torch.Generator``, so member t sees exactly the numbers it would see if it were
trained alone (T = 1) with the same seed -- the basis of packing's equivalence test.

Every noise function in ``model.quantum.noise`` takes ``generator`` as ``None`` (the
global stream), a ``torch.Generator`` or a ``MemberRNG``; :func:`rand`, :func:`randn`
and :func:`randint` dispatch on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["MemberRNG", "rand", "randn", "randint"]


class MemberRNG:
    """One generator per member; draws split along batch axis ``axis`` (size T).

    ``axis`` counts in the *draw's* shape (for a ``(B, T, N)`` draw, ``axis=1``).
    """

    def __init__(self, generators: Sequence[torch.Generator], axis: int = 1) -> None:
        if not generators:
            raise ValueError("MemberRNG needs at least one generator")
        self.generators = list(generators)
        self.axis = axis

    def __len__(self) -> int:
        return len(self.generators)

    @classmethod
    def seeded(cls, seeds: Sequence[int], device: torch.device | str = "cpu", axis: int = 1):
        gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        return cls(gens, axis)

    def draw(self, fn, shape: tuple[int, ...], **kw) -> Tensor:
        """``fn(member_shape, generator=g_t, **kw)`` for every member, stacked at ``axis``."""
        shape = tuple(shape)
        if len(shape) <= self.axis or shape[self.axis] != len(self.generators):
            raise ValueError(
                f"draw of shape {shape} has no member axis {self.axis} of size {len(self)}"
            )
        member = shape[: self.axis] + shape[self.axis + 1 :]
        parts = [fn(member, generator=g, **kw) for g in self.generators]
        return torch.stack(parts, dim=self.axis)


def _dispatch(fn, shape, generator, **kw) -> Tensor:
    if isinstance(generator, MemberRNG):
        return generator.draw(fn, tuple(shape), **kw)
    return fn(tuple(shape), generator=generator, **kw)


def rand(shape, generator=None, **kw) -> Tensor:
    """``torch.rand(shape)`` from a generator, ``None`` or a :class:`MemberRNG`."""
    return _dispatch(torch.rand, shape, generator, **kw)


def randn(shape, generator=None, **kw) -> Tensor:
    """``torch.randn(shape)`` from a generator, ``None`` or a :class:`MemberRNG`."""
    return _dispatch(torch.randn, shape, generator, **kw)


def randint(low: int, high: int, shape, generator=None, **kw) -> Tensor:
    """``torch.randint(low, high, shape)`` from a generator, ``None`` or a :class:`MemberRNG`."""

    def fn(size, generator=None, **kw2):
        return torch.randint(low, high, size, generator=generator, **kw2)

    return _dispatch(fn, shape, generator, **kw)

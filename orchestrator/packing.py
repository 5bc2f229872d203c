"""Which trials share one packed model (one Ray trial): the pack plan of a study.


Trials whose configs differ only in ``model.training.PACKABLE_KEYS`` (seed, learning
rate, LR decay, weight decay) are grouped in plan order and cut into packs of at most
``pack_size`` members. Trials with different data settings (``PlannedTrial.data``: a
``data.*`` factor) never share a pack. Packs of one group have balanced sizes, and
``auto`` splits packs until every concurrent slot has one. Each member keeps its own
trial id, row and MLflow run; the pack id only tags them. Pure Python: no Ray, testable
on its own.

    packs = plan_packs(spec.planned_trials(), resolve_pack_size(spec), gpu=False, slots=2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from model.errors import ConfigError, short_repr
from model.packing import auto_pack_size, pack_key

__all__ = [
    "Pack",
    "plan_packs",
    "resolve_pack_size",
    "parse_pack_size",
    "size_for",
    "pack_summary",
]


@dataclass(frozen=True)
class Pack:
    """Trials trained together; ``members`` are ``orchestrator.spec.PlannedTrial``s."""

    pack_id: str
    members: tuple[Any, ...]

    @property
    def size(self) -> int:
        return len(self.members)


def parse_pack_size(value: Any, where: str = "pack_size") -> int | str:
    """``auto`` or an integer >= 1 (1 turns packing off)."""
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{where} = {short_repr(value)} is not allowed; allowed: auto or an integer >= 1 "
            "(1: every trial alone)."
        )
    return value


def resolve_pack_size(spec, requested: int | str | None = None) -> int | str:
    """The pack size a study runs with: ``requested`` (CLI) over ``spec.pack_size``.

    ``auto`` stays ``auto``: :func:`plan_packs` asks
    :func:`model.packing.auto_pack_size` (qubits, device, memory) once per group of
    packable trials. ASHA stops Ray trials, so with early stopping packing is off under
    ``auto`` and an explicit size > 1 is an error.
    """
    value = spec.pack_size if requested is None else parse_pack_size(requested, "--pack-size")
    if spec.early_stopping:
        if value != "auto" and value > 1:
            raise ConfigError(
                f"pack_size = {value} cannot be combined with early_stopping (ASHA): ASHA stops "
                "whole Ray trials, and a pack is one Ray trial, so it would stop every member "
                "of a pack together. Use pack_size: 1 (or auto, which is 1 with ASHA), or drop "
                "early_stopping."
            )
        return 1
    return value


def size_for(config, pack_size: int | str, *, gpu: bool, share: float = 1.0) -> int:
    """``pack_size`` for trials like ``config``: the number, or the automatic choice
    (``share``: the part of the GPU a Ray trial has, ``resources.gpu`` below 1)."""
    if pack_size != "auto":
        return int(pack_size)
    return auto_pack_size(config, gpu=gpu, share=share)


def _balanced(members: Sequence[Any], count: int) -> list[tuple[Any, ...]]:
    """``members`` in order, cut into ``count`` contiguous chunks whose sizes differ by <= 1."""
    base, extra = divmod(len(members), count)
    chunks, lo = [], 0
    for i in range(count):
        hi = lo + base + (1 if i < extra else 0)
        chunks.append(tuple(members[lo:hi]))
        lo = hi
    return chunks


def plan_packs(
    trials: Sequence[Any], pack_size: int | str, *, gpu: bool = False, slots: int = 1
) -> list[Pack]:
    """Group ``trials`` (PlannedTrial, in order) into packs of equal data setting and pack
    key, <= pack_size.

    Each group is cut into as few packs as the size allows, of balanced sizes (21 trials
    at size 16: 11 + 10, not 16 + 5). Under ``auto``, when that leaves fewer packs than
    ``slots`` (the study's concurrent trials), the largest packs are split again so that
    no slot stays idle (16 trials on 2 slots: 8 + 8).
    """
    groups: dict[tuple, list[Any]] = {}
    for trial in trials:
        groups.setdefault((getattr(trial, "data", None), pack_key(trial.config)), []).append(trial)
    parts: list[list[Any]] = []  # [members, number of packs] per group
    for members in groups.values():
        size = max(1, size_for(members[0].config, pack_size, gpu=gpu))
        parts.append([members, -(-len(members) // size)])
    if pack_size == "auto":
        while sum(count for _, count in parts) < slots:
            # split the group with the largest packs (ties: the earlier group)
            splittable = [p for p in parts if p[1] < len(p[0])]
            if not splittable:
                break
            max(splittable, key=lambda p: len(p[0]) / p[1])[1] += 1
    packs = []
    for members, count in parts:
        for chunk in _balanced(members, count):
            pack_id = chunk[0].trial_id if len(chunk) == 1 else f"{chunk[0].trial_id}+{len(chunk)}"
            packs.append(Pack(pack_id, chunk))
    first_index = {id(t): i for i, t in enumerate(trials)}
    packs.sort(key=lambda p: first_index[id(p.members[0])])
    return packs


def pack_summary(packs: Sequence[Pack]) -> str:
    """One line for --dry-run: how many packs of which sizes."""
    if not packs:
        return "packs: none"
    sizes: dict[int, int] = {}
    for p in packs:
        sizes[p.size] = sizes.get(p.size, 0) + 1
    parts = ", ".join(
        f"{n} pack{'s' if n != 1 else ''} of {s} trial{'s' if s != 1 else ''}"
        for s, n in sorted(sizes.items(), reverse=True)
    )
    members = sum(p.size for p in packs)
    return f"packs: {len(packs)} Ray trials for {members} trials ({parts})"

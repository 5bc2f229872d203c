"""Design-of-experiments points for a screening study (pyDOE does the designs).

    from orchestrator.design import design_points, aliasing
    points = design_points({"qubits": [4, 8], "reuploads": [1, 4], "lr_decay": [0.99, 1.0]},
                           "fracfact", resolution=3)
    # [{"qubits": 4, "reuploads": 1, "lr_decay": 1.0}, ...]

Factors are ``{name: [level, ...]}`` (listed levels) or ``{name: {low, high, log}}`` (a
range). Kinds:

- ``full``: every combination of listed levels (ranges are not allowed);
- ``fracfact``: two-level fractional factorial of a given resolution (``fracfact_by_res``);
  a range contributes ``low`` / ``high``;
- ``pb``: two-level Plackett-Burman (``pbdesign``), more runs than factors;
- ``lhs``: ``samples`` points of a seeded Latin hypercube; a listed factor maps the unit
  interval onto its levels in equal strata, a range is sampled continuously (log-uniform
  when ``log: true``; rounded to int when both bounds are ints).

Every design is deterministic (``lhs`` for a given ``seed``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from model.errors import ConfigError, short_repr

__all__ = [
    "KINDS",
    "SEARCH_KINDS",
    "design_kind",
    "full_factorial",
    "design_points",
    "design_matrix",
    "aliasing",
    "factor_levels",
]

KINDS = ("full", "fracfact", "pb", "lhs")  # the designs
# Every search.kind of a study file: grid is the full factorial, optuna samples (Ray Tune).
SEARCH_KINDS = ("grid", "optuna", *KINDS)
_RANGE_KEYS = {"low", "high", "log"}


# ------------------------------------------------------------------------------------
def design_kind(kind: str | None) -> str | None:
    """The design a search kind stands for: ``grid`` is ``full``; other kinds unchanged."""
    return "full" if kind == "grid" else kind


def full_factorial(levels: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of listed levels, the last factor varying fastest; ``{}`` -> ``[{}]``."""
    names = list(levels)
    return [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(levels[n] for n in names))
    ]


def design_points(
    factors: dict[str, list | dict],
    kind: str,
    *,
    resolution: int | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The runs of a design as a list of ``{factor: level}`` dicts (plain Python values)."""
    _check_factors(factors)
    names = list(factors)
    if kind == "full":
        for name in names:
            spec = factors[name]
            if isinstance(spec, dict):
                raise ConfigError(
                    f"factors.{name} = {short_repr(spec)} is a range; a full factorial needs listed levels "
                    "(e.g. [0.001, 0.01]); use kind lhs to sample a range."
                )
        return full_factorial(factors)
    if kind in ("fracfact", "pb"):
        matrix = design_matrix(factors, kind, resolution=resolution)
        two = {name: _two_levels(name, factors[name], kind) for name in names}
        return [
            {name: two[name][0 if x < 0 else 1] for name, x in zip(names, row, strict=True)}
            for row in matrix
        ]
    if kind == "lhs":
        unit = design_matrix(factors, kind, samples=samples, seed=seed)
        return [
            {name: _from_unit(name, factors[name], u) for name, u in zip(names, row, strict=True)}
            for row in unit
        ]
    raise ConfigError(
        f"search.kind = {short_repr(kind)} is not a design; allowed: {', '.join(KINDS)}."
    )


def design_matrix(
    factors: dict[str, list | dict],
    kind: str,
    *,
    resolution: int | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Coded design: ``(runs, factors)`` of -1/+1 for fracfact/pb, of [0, 1) for lhs."""
    import pydoe

    _check_factors(factors)
    names = list(factors)
    n = len(names)
    if kind == "fracfact":
        for name in names:
            _two_levels(name, factors[name], kind)
        if resolution is None:
            raise ConfigError(
                "search.resolution is missing; a fracfact design needs one of 3, 4, 5."
            )
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 3:
            raise ConfigError(
                f"search.resolution = {short_repr(resolution)} is not allowed; allowed: an integer >= 3 "
                "(3: main effects aliased with 2-factor interactions, 4: not, 5: 2FIs clear too)."
            )
        if n < 2:
            raise ConfigError(
                f"a fracfact design needs at least 2 factors, got {n} ({', '.join(names)}); "
                "use kind full for one factor."
            )
        try:
            return np.asarray(pydoe.fracfact_by_res(n, resolution), dtype=float)
        except ValueError as err:
            raise ConfigError(
                f"no fractional factorial with {n} factors at resolution {resolution}: {err}."
            ) from None
    if kind == "pb":
        for name in names:
            _two_levels(name, factors[name], kind)
        if n < 1:
            raise ConfigError("a Plackett-Burman design needs at least 1 factor.")
        return np.asarray(pydoe.pbdesign(n), dtype=float)
    if kind == "lhs":
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(
                f"search.samples = {short_repr(samples)} is not allowed; a Latin hypercube needs an integer "
                "number of points >= 1."
            )
        return np.asarray(pydoe.lhs(n, samples=samples, seed=int(seed)), dtype=float)
    if kind == "full":
        raise ConfigError("a full factorial has no coded matrix here; call design_points.")
    raise ConfigError(
        f"search.kind = {short_repr(kind)} is not a design; allowed: {', '.join(KINDS)}."
    )


def aliasing(factors: dict[str, list | dict], resolution: int) -> list[str]:
    """Alias structure of the ``fracfact`` design for display.

    Lines: the run count, the generators (``D = A*B``: a generated factor is the product
    of base factors) and every main effect or two-factor interaction that shares its
    contrast column with another one (``A = B*D``; signs ignored).
    """
    matrix = design_matrix(factors, "fracfact", resolution=resolution)
    names = list(factors)
    runs, n = matrix.shape
    k = int(round(math.log2(runs)))
    lines = [
        f"{runs} runs for {n} two-level factors at resolution >= {resolution} (2^({n}-{n - k}))"
    ]
    base = matrix[:, :k]
    generators = []
    for j in range(k, n):
        word = _as_product(matrix[:, j], base)
        generators.append(
            f"{names[j]} = " + ("*".join(names[i] for i in word) if word else "(not a product)")
        )
    lines.append(
        "generators: " + ("; ".join(generators) if generators else "none (full factorial)")
    )
    effects: list[tuple[str, np.ndarray]] = [(name, matrix[:, i]) for i, name in enumerate(names)]
    effects += [
        (f"{names[i]}*{names[j]}", matrix[:, i] * matrix[:, j])
        for i, j in itertools.combinations(range(n), 2)
    ]
    groups: dict[bytes, list[str]] = {}
    for label, column in effects:
        key = (column * column[0]).astype(np.int8).tobytes()  # sign-free identity
        groups.setdefault(key, []).append(label)
    confounded = [labels for labels in groups.values() if len(labels) > 1]
    if not confounded:
        lines.append("no main effect or 2-factor interaction is aliased with another one")
    for labels in confounded:
        lines.append("aliased: " + " = ".join(labels))
    return lines


def factor_levels(spec: list | dict) -> list[Any]:
    """Levels of a factor for display: the list, or ``[low, high]`` of a range."""
    if isinstance(spec, dict):
        return [spec["low"], spec["high"]]
    return list(spec)


# ------------------------------------------------------------------------------------
def _check_factors(factors: dict[str, list | dict]) -> None:
    if not isinstance(factors, dict) or not factors:
        raise ConfigError(
            f"factors = {short_repr(factors)} is not allowed; give a mapping of factor name to a list of "
            "levels or {low, high, log}, e.g. {qubits: [4, 8]}."
        )
    for name, spec in factors.items():
        if isinstance(spec, (list, tuple)):
            if len(spec) == 0:
                raise ConfigError(f"factors.{name} has no levels; give at least one.")
            if len({repr(v) for v in spec}) != len(spec):
                raise ConfigError(
                    f"factors.{name} = {short_repr(list(spec))} repeats a level; levels must differ."
                )
            continue
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - _RANGE_KEYS)
            missing = sorted({"low", "high"} - set(spec))
            if unknown or missing:
                raise ConfigError(
                    f"factors.{name} = {short_repr(spec)} is not a range; allowed keys: low, high, log "
                    f"(missing: {', '.join(missing) or '-'}; unknown: {', '.join(unknown) or '-'})."
                )
            low, high = spec["low"], spec["high"]
            for key, value in (("low", low), ("high", high)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(
                        f"factors.{name}.{key} = {short_repr(value)} is not a number."
                    )
            if not low < high:
                raise ConfigError(
                    f"factors.{name}: low = {short_repr(low)} must be < high = {short_repr(high)}."
                )
            if spec.get("log") and low <= 0:
                raise ConfigError(
                    f"factors.{name}: log range needs low > 0, got low = {short_repr(low)}."
                )
            continue
        raise ConfigError(
            f"factors.{name} = {short_repr(spec)} is not allowed; give a list of levels or {{low, high, log}}."
        )


def _two_levels(name: str, spec: list | dict, kind: str) -> list[Any]:
    levels = factor_levels(spec)
    if len(levels) != 2:
        raise ConfigError(
            f"factors.{name} has {len(levels)} levels {short_repr(levels)}; a {kind} design needs exactly 2 "
            "levels per factor (use kind full or lhs for more)."
        )
    return levels


def _from_unit(name: str, spec: list | dict, u: float) -> Any:
    """Map a unit-interval coordinate onto a factor's levels or range."""
    if isinstance(spec, dict):
        low, high = spec["low"], spec["high"]
        if spec.get("log"):
            value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            value = low + u * (high - low)
        if isinstance(low, int) and isinstance(high, int):
            return int(min(max(round(value), low), high))
        return float(value)
    index = min(int(u * len(spec)), len(spec) - 1)
    return spec[index]


def _as_product(column: np.ndarray, base: np.ndarray) -> list[int]:
    """Indices of base columns whose product equals ``column`` up to sign ([] if none)."""
    k = base.shape[1]
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            product = np.prod(base[:, subset], axis=1)
            if np.array_equal(product, column) or np.array_equal(product, -column):
                return list(subset)
    return []

"""Design points: sizes, balance, orthogonality and strata against textbook properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from model.errors import ConfigError
from orchestrator.design import aliasing, design_matrix, design_points

NAMES = "abcdefghijk"


def _two_level(n: int) -> dict[str, list]:
    return {NAMES[i]: [10 * i, 10 * i + 1] for i in range(n)}


def _coded(points: list[dict], factors: dict[str, list]) -> np.ndarray:
    """Recode levels to -1/+1 independently of the implementation's matrix."""
    return np.array([[-1 if p[k] == lv[0] else 1 for k, lv in factors.items()] for p in points])


def test_full_factorial_is_every_combination():
    factors = {"qubits": [4, 8, 12], "head": ["quantum", "mlp"], "final_linear": [True, False]}
    points = design_points(factors, "full")
    assert len(points) == 3 * 2 * 2
    seen = {(p["qubits"], p["head"], p["final_linear"]) for p in points}
    expected = {(q, h, f) for q in (4, 8, 12) for h in ("quantum", "mlp") for f in (True, False)}
    assert seen == expected


# Minimal run counts of regular two-level designs (Montgomery, Table 8.14; NIST 5.3.3.4.7).
RUNS = {(4, 3): 8, (5, 3): 8, (6, 3): 8, (7, 3): 8, (4, 4): 8, (5, 4): 16, (6, 4): 16, (7, 4): 16}


@pytest.mark.parametrize(("n", "resolution"), sorted(RUNS))
def test_fracfact_balanced_orthogonal_and_minimal(n, resolution):
    factors = _two_level(n)
    points = design_points(factors, "fracfact", resolution=resolution)
    x = _coded(points, factors)
    assert x.shape == (RUNS[(n, resolution)], n)
    assert np.all(x.sum(axis=0) == 0)  # each level in half the runs
    np.testing.assert_array_equal(x.T @ x, len(x) * np.eye(n))  # orthogonal main effects
    assert len({tuple(r) for r in x}) == len(x)  # no repeated run
    two_fi = [x[:, i] * x[:, j] for i, j in itertools.combinations(range(n), 2)]
    overlaps = [abs(int(x[:, m] @ c)) for m in range(n) for c in two_fi]
    if resolution >= 4:
        assert max(overlaps) == 0  # main effects clear of 2-factor interactions
    else:
        assert max(overlaps) == len(x)  # some main effect is fully aliased with a 2FI


def test_aliasing_of_the_half_fraction_with_four_factors():
    lines = aliasing(_two_level(4), 4)
    text = "\n".join(lines)
    assert lines[0].startswith("8 runs")
    assert "d = a*b*c" in text  # the only resolution IV generator of a 2^(4-1)
    aliased = [line.removeprefix("aliased: ").split(" = ") for line in lines if "aliased:" in line]
    # I = ABCD: each 2FI aliased with its complement, main effects clear.
    assert sorted(sorted(g) for g in aliased) == [["a*b", "c*d"], ["a*c", "b*d"], ["a*d", "b*c"]]


def test_aliasing_resolution_three_shows_main_effect_confounding():
    lines = aliasing(_two_level(5), 3)
    main_aliased = [
        line
        for line in lines
        if line.startswith("aliased:") and line.split(" = ")[0][-1] in "abcde"
    ]
    assert main_aliased, lines


@pytest.mark.parametrize("n", [3, 5, 7, 11])
def test_plackett_burman_orthogonal(n):
    factors = _two_level(n)
    x = _coded(design_points(factors, "pb"), factors)
    runs = len(x)
    assert runs > n and runs % 4 == 0
    assert np.all(x.sum(axis=0) == 0)
    np.testing.assert_array_equal(x.T @ x, runs * np.eye(n))


def test_lhs_one_sample_per_stratum_and_deterministic():
    samples = 12
    factors = {
        "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
        "weight_decay": {"low": 0.0, "high": 0.5},
        "qubits": [4, 6, 8, 10],
    }
    points = design_points(factors, "lhs", samples=samples, seed=3)
    assert len(points) == samples
    lr_u = [(math.log(p["learning_rate"]) - math.log(1e-4)) / math.log(1e3) for p in points]
    wd_u = [p["weight_decay"] / 0.5 for p in points]
    for unit in (lr_u, wd_u):
        assert sorted(min(int(u * samples), samples - 1) for u in unit) == list(range(samples))
    counts = {q: sum(p["qubits"] == q for p in points) for q in (4, 6, 8, 10)}
    assert counts == {4: 3, 6: 3, 8: 3, 10: 3}
    assert design_points(factors, "lhs", samples=samples, seed=3) == points
    assert design_points(factors, "lhs", samples=samples, seed=4) != points


def test_lhs_int_range_gives_ints_within_bounds():
    points = design_points({"hidden": {"low": 2, "high": 64}}, "lhs", samples=20, seed=0)
    assert all(isinstance(p["hidden"], int) and 2 <= p["hidden"] <= 64 for p in points)


def test_lhs_matrix_in_unit_cube():
    m = design_matrix({"a": [1, 2], "b": {"low": 0, "high": 1.0}}, "lhs", samples=7, seed=0)
    assert m.shape == (7, 2) and np.all((m >= 0) & (m < 1))


@pytest.mark.parametrize(
    ("factors", "kind", "kwargs", "needle"),
    [
        ({"qubits": [4, 8, 12], "reuploads": [1, 2]}, "fracfact", {"resolution": 3}, "qubits"),
        ({"qubits": [4, 8, 12]}, "pb", {}, "exactly 2"),
        ({"learning_rate": {"low": 1e-3, "high": 1e-1}}, "full", {}, "learning_rate"),
        ({"a": [1, 2], "b": [1, 2]}, "fracfact", {}, "resolution"),
        ({"a": [1, 2], "b": [1, 2]}, "fracfact", {"resolution": 2}, "resolution = 2"),
        ({"a": [1, 2]}, "lhs", {}, "samples"),
        ({"a": [1, 2]}, "grid", {}, "allowed: full, fracfact, pb, lhs"),
        ({"a": {"low": 5, "high": 1}}, "lhs", {"samples": 3}, "low = 5"),
        ({"a": {"low": 0, "high": 1, "log": True}}, "lhs", {"samples": 3}, "low > 0"),
        ({"a": {"lo": 0, "high": 1}}, "lhs", {"samples": 3}, "allowed keys"),
        ({"a": []}, "full", {}, "no levels"),
        ({"a": 3}, "full", {}, "factors.a = 3"),
        ({}, "full", {}, "factors"),
    ],
)
def test_errors_name_value_and_allowed(factors, kind, kwargs, needle):
    with pytest.raises(ConfigError, match=None) as err:
        design_points(factors, kind, **kwargs)
    assert needle in str(err.value)


# ------------------------------------------------------------------------------------
SPACE = """
name: screen
data: {source: demo}
fixed: {epochs: 2}
factors:
  qubits: [4, 8]
  reuploads: [1, 4]
  main_layers: [1, 2]
  lr_decay: [0.99, 1.0]
  final_linear: [true, false]
search: {kind: fracfact, resolution: 3}
seeds: [0, 1]
"""


def test_cli_design_prints_points_and_aliasing_and_writes_csv(tmp_path, capsys):
    import csv

    from orchestrator import cli

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "points.csv"
    assert cli.main(["design", str(space), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8 runs, 5 factors" in printed and "Alias structure:" in printed
    assert "generators: lr_decay = qubits*reuploads" in printed
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == [str(i) for i in range(1, 9)]
    for name, levels in (("qubits", {"4", "8"}), ("final_linear", {"True", "False"})):
        assert sorted(r[name] for r in rows).count(sorted(levels)[0]) == 4
        assert {r[name] for r in rows} == levels


def test_cli_design_options_override_the_file(tmp_path, capsys):
    from orchestrator import cli

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    assert cli.main(["design", str(space), "--kind", "full"]) == 0
    assert "32 runs, 5 factors" in capsys.readouterr().out
    assert cli.main(["design", str(space), "--kind", "fracfact", "--resolution", "4"]) == 0
    printed = capsys.readouterr().out
    assert "16 runs" in printed and "aliased: qubits =" not in printed
    assert cli.main(["design", str(space), "--kind", "lhs"]) == 2
    assert "pass --samples N" in capsys.readouterr().err

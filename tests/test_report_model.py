"""The model a design supports, its ANOVA and Lenth's method, on designs with known effects.

References are independent of the implementation: statsmodels fits of the full model
written out by hand, the aliasing of regular fractions (D = AB, ...), a textbook worked
example of Lenth's method, and the definition computed by hand.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.formula.api import ols

from orchestrator.design import design_points
from orchestrator.report import build_report
from orchestrator.report.effects import anova
from orchestrator.report.factorial import (
    FactorModel,
    Term,
    coded_effects,
    interaction_table,
    lenth,
    model_anova,
    supported_model,
)
from tests.test_report import FRACTION_FACTORS, trial_row, write_study

SIGMA = 0.004


def replicated_2x2x2(interaction: float, seeds: int = 3, seed: int = 5) -> pd.DataFrame:
    """offset x trainable x readout, like paper_sst2_remedies: offset helps (+0.04), and the
    ZZ readout helps only with the offset (the planted offset x readout interaction)."""
    rng = np.random.default_rng(seed)
    rows = []
    for offset, trainable, readout in itertools.product([0.0, 1.0], [False, True], ["z", "zz"]):
        for s in range(seeds):
            y = 0.78 + 0.04 * offset + rng.normal(0, SIGMA)
            y += interaction * (1 if (offset > 0) == (readout == "zz") else -1)
            rows.append(
                {
                    "amplitude_offset": offset,
                    "amplitude_offset_trainable": trainable,
                    "sqe_readout": readout,
                    "seed": s,
                    "test_accuracy": y,
                }
            )
    return pd.DataFrame(rows)


FACTORS = ["amplitude_offset", "amplitude_offset_trainable", "sqe_readout"]


def statsmodels_full(frame: pd.DataFrame) -> pd.DataFrame:
    """The reference: main effects and every two-factor interaction, by hand."""
    data = frame.rename(
        columns={"amplitude_offset": "a", "amplitude_offset_trainable": "b", "sqe_readout": "c"}
    ).astype({"a": str, "b": str, "c": str})
    fit = ols("test_accuracy ~ (C(a, Sum) + C(b, Sum) + C(c, Sum)) ** 2", data=data).fit()
    return sm.stats.anova_lm(fit, typ=2)


# ------------------------------------------------------------------------------------
def test_planted_interaction_is_in_the_model_and_main_effect_f_matches_statsmodels():
    frame = replicated_2x2x2(interaction=0.012)
    model = supported_model(frame, FACTORS, "test_accuracy", search={"kind": "grid"})
    assert [t.name for t in model.terms][:3] == FACTORS
    assert {t.name for t in model.interactions} == {
        "amplitude_offset:amplitude_offset_trainable",
        "amplitude_offset:sqe_readout",
        "amplitude_offset_trainable:sqe_readout",
    }
    assert (model.n_params, model.residual_df, model.pure_error_df) == (7, 17, 16)
    table, notes = model_anova(frame, model, "test_accuracy")
    assert notes == []
    ours = table.set_index("source")
    want = statsmodels_full(frame)
    for name, ref in zip(FACTORS, ["C(a, Sum)", "C(b, Sum)", "C(c, Sum)"], strict=True):
        assert ours.loc[name, "F"] == pytest.approx(want.loc[ref, "F"], rel=1e-9)
        assert ours.loc[name, "p_value"] == pytest.approx(want.loc[ref, "PR(>F)"], rel=1e-9)
    planted = ours.loc["amplitude_offset:sqe_readout"]
    assert planted["F"] == pytest.approx(want.loc["C(a, Sum):C(c, Sum)", "F"], rel=1e-9)
    assert planted["p_value"] < 1e-10 and planted["term"] == "interaction"
    # the other interactions are null; the residual is the full model's
    assert ours.loc["amplitude_offset_trainable:sqe_readout", "p_value"] > 1e-3
    assert ours.loc["Residual", "df"] == 17
    pairs = interaction_table(model, table)
    assert pairs.loc[0, "interaction"] == "amplitude_offset:sqe_readout"


def test_a_main_effects_model_would_test_against_the_wrong_error_term():
    """What the report used to do: the planted interaction sits in the residual, so the
    offset's F is far smaller than in the model the design supports."""
    frame = replicated_2x2x2(interaction=0.012)
    data = frame.astype({f: str for f in FACTORS})
    mains = ols(
        "test_accuracy ~ C(amplitude_offset) + C(amplitude_offset_trainable) + C(sqe_readout)",
        data=data,
    ).fit()
    main_f = sm.stats.anova_lm(mains, typ=2).loc["C(amplitude_offset)", "F"]
    table, _ = anova(frame, FACTORS, "test_accuracy", search={"kind": "grid"})
    assert table.set_index("source").loc["amplitude_offset", "F"] > 5 * main_f


def test_the_report_states_the_model_and_finds_the_planted_interaction(tmp_path):
    frame = replicated_2x2x2(interaction=0.012)
    rows = [
        trial_row(
            i // 3, int(r.seed), float(r.test_accuracy), **{f: getattr(r, f) for f in FACTORS}
        )
        for i, r in enumerate(frame.itertuples())
    ]
    factors = {
        "amplitude_offset": [0.0, 1.0],
        "amplitude_offset_trainable": [False, True],
        "sqe_readout": ["z", "zz"],
    }
    study = write_study(tmp_path / "remedies", rows, factors, n_trials_planned=24)
    build_report(study)
    out = study / "report"
    md = (out / "report.md").read_text()
    assert (
        "Model (main effects and 3 two-factor interactions): test_accuracy ~ amplitude_offset "
        "+ amplitude_offset_trainable + sqe_readout + amplitude_offset:sqe_readout" in md
    )
    assert "17 residual degrees of freedom, 16 of them from repeated design points" in md
    table = pd.read_csv(out / "anova.csv").set_index("source")
    want = statsmodels_full(frame)
    assert table.loc["amplitude_offset", "F"] == pytest.approx(want.loc["C(a, Sum)", "F"], rel=1e-9)
    pairs = pd.read_csv(out / "interactions.csv")
    assert pairs.loc[0, "interaction"] == "amplitude_offset:sqe_readout"
    assert pairs.loc[0, "p_value"] < 1e-10 and (pairs.loc[1:, "p_value"] > 1e-3).all()
    assert (out / "interactions.png").exists()


def test_multi_level_factors_get_their_interaction_with_the_right_df():
    rng = np.random.default_rng(3)
    rows = []
    for q, lr, _seed in itertools.product([8, 10, 12], [0.001, 0.003, 0.01, 0.03], range(2)):
        y = 0.8 + 0.01 * (q == 12) * (lr == 0.03) + rng.normal(0, 0.002)
        rows.append({"qubits": q, "learning_rate": lr, "acc": y})
    frame = pd.DataFrame(rows)
    model = supported_model(frame, ["qubits", "learning_rate"], "acc")
    assert [t.name for t in model.interactions] == ["qubits:learning_rate"]
    table, _ = model_anova(frame, model, "acc")
    by = table.set_index("source")
    assert by.loc["qubits:learning_rate", "df"] == 6 and by.loc["Residual", "df"] == 12
    data = frame.astype(str).assign(acc=frame["acc"])
    want = sm.stats.anova_lm(
        ols("acc ~ C(qubits, Sum) * C(learning_rate, Sum)", data=data).fit(), typ=2
    )
    assert by.loc["qubits", "F"] == pytest.approx(want.loc["C(qubits, Sum)", "F"], rel=1e-9)


def test_unreplicated_two_factor_grid_keeps_its_interaction_as_the_error_term():
    """4 x 3, one trial each: a:b would use the last 6 degrees of freedom; it stays out
    and the main effects are tested against it (Tukey's classic additive analysis)."""
    rng = np.random.default_rng(8)
    rows = [
        {"a": a, "b": b, "y": 0.1 * a + 0.05 * b + rng.normal(0, 0.01)}
        for a, b in itertools.product([1, 2, 3, 4], [1, 2, 3])
    ]
    frame = pd.DataFrame(rows)
    model = supported_model(frame, ["a", "b"], "y")
    assert model.interactions == []
    assert model.left_out["a:b"].startswith("no residual degree of freedom would be left")
    table, _ = model_anova(frame, model, "y")
    by = table.set_index("source")
    assert by.loc["Residual", "df"] == 6 and by.loc["a", "p_value"] < 1e-6


def test_a_small_unreplicated_two_level_design_keeps_its_f_test():
    """2 x 2, one trial each (too few effects for Lenth's median): main effects tested
    against the interaction's one degree of freedom, as before."""
    frame = pd.DataFrame(
        {"a": [0, 0, 1, 1], "b": ["x", "y", "x", "y"], "y": [0.5, 0.52, 0.6, 0.61]}
    )
    model = supported_model(frame, ["a", "b"], "y")
    assert not model.lenth_applies and model.interactions == []
    assert model.left_out["a:b"].startswith("no residual degree of freedom")
    table, _ = model_anova(frame, model, "y")
    assert set(table.source) == {"a", "b", "Residual"}


def test_missing_level_combinations_leave_the_pair_out():
    frame = pd.DataFrame(
        {
            "a": [1, 1, 2, 2, 1, 2] * 2,
            "b": ["u", "v", "u", "u", "u", "u"] * 2,
            "y": np.linspace(0.5, 0.6, 12),
        }
    )
    model = supported_model(frame, ["a", "b"], "y")
    assert model.interactions == []
    assert model.left_out == {"a:b": "only 3 of its 4 level combinations were run"}


# ------------------------------------------------------------------------------------
def fracfact_frame(factors: dict, resolution: int, effect) -> pd.DataFrame:
    points = design_points(factors, "fracfact", resolution=resolution)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(points)
    frame["y"] = [effect(p) + rng.normal(0, 0.01) for p in points]
    return frame


def test_resolution_iii_interactions_aliased_with_main_effects_are_left_out():
    factors = {name: [0, 1] for name in "ABCDE"}  # 2^(5-2): D = AB, E = AC
    frame = fracfact_frame(factors, 3, lambda p: 1 + 2 * p["A"])
    model = supported_model(frame, list(factors), "y", search={"kind": "fracfact"})
    assert model.left_out["A:B"] == "aliased with the main effect of D"
    assert model.left_out["A:C"] == "aliased with the main effect of E"
    # the two contrasts left are interaction chains: B:C = D:E and B:E = C:D
    chains = {frozenset(t.label.split(" = ")) for t in model.interactions}
    assert chains == {frozenset({"B:C", "D:E"}), frozenset({"B:E", "C:D"})}
    assert model.residual_df == 0 and model.two_level and model.pure_error_df == 0
    table, _ = model_anova(frame, model, "y")
    assert table.empty  # no F test without a residual degree of freedom
    # a main effect's contrast also estimates the interactions aliased with it
    labels = {t.name: t.label for t in model.terms}
    assert labels["D"] == "D = A:B" and labels["A"] == "A = B:D = C:E"
    coded = coded_effects(frame, model, "y")
    assert coded.set_index("source").loc["A = B:D = C:E", "effect"] == pytest.approx(2.0, abs=0.05)


def test_resolution_iv_alias_chain_is_named_after_the_pair_with_active_parents():
    factors = {name: [0, 1] for name in "ABCDEF"}  # 2^(6-2), resolution IV
    frame = fracfact_frame(factors, 4, lambda p: 2 * p["A"] + 1.5 * p["B"] + (p["A"] == p["B"]))
    model = supported_model(frame, list(factors), "y", search={"kind": "fracfact"})
    labels = [t.label for t in model.interactions]
    chain = next(label for label in labels if "A:B" in label.split(" = "))
    assert chain.startswith("A:B = ")  # heredity: A and B are active, the others are not
    assert not any("main effect" in why for why in model.left_out.values())
    coded = coded_effects(frame, model, "y").set_index("source")
    assert coded.loc[chain, "effect"] == pytest.approx(1.0, abs=0.05)  # like minus unlike
    result = lenth(coded["effect"])
    active = set(coded.index[coded["abs_effect"] > result.me])
    assert active == {"A", "B", chain}


def test_plackett_burman_gets_main_effects_only():
    rng = np.random.default_rng(1)
    factors = {name: [0, 1] for name in "ABCDE"}
    points = design_points(factors, "pb")
    frame = pd.DataFrame(points)
    frame = pd.concat([frame, frame], ignore_index=True)  # two seeds
    frame["y"] = 1 + frame["A"] + rng.normal(0, 0.01, len(frame))
    model = supported_model(frame, list(factors), "y", search={"kind": "pb"})
    assert model.interactions == []
    assert all("Plackett-Burman" in why for why in model.left_out.values())
    assert len(model.left_out) == 10


def test_unreplicated_fraction_in_the_report_gets_lenth_and_a_half_normal_plot(tmp_path):
    factors = FRACTION_FACTORS
    points = design_points(factors, "fracfact", resolution=3)
    rng = np.random.default_rng(4)
    rows = [
        trial_row(i, 0, 0.8 + 0.03 * (p["qubits"] == 8) + rng.normal(0, 0.001), **p)
        for i, p in enumerate(points)
    ]
    study = write_study(
        tmp_path / "frac", rows, factors, search={"kind": "fracfact", "resolution": 3}, seeds=[0]
    )
    files = build_report(study)
    names = {f.name for f in files}
    assert {"effects.csv", "half_normal.png", "interactions.csv"} <= names
    assert "anova.csv" not in names  # no residual degree of freedom: no F test
    md = (study / "report" / "report.md").read_text()
    assert "judged with Lenth's pseudo standard error instead" in md
    assert "aliased with the main effect of" in md
    effects = pd.read_csv(study / "report" / "effects.csv")
    assert effects.loc[0, "source"].startswith("qubits = ") and bool(effects.loc[0, "beyond_ME"])
    assert effects.loc[0, "effect"] == pytest.approx(0.03, abs=0.003)
    assert (~effects.loc[1:, "beyond_ME"]).all()


# ------------------------------------------------------------------------------------
# Montgomery, Design and Analysis of Experiments, Example 6.2 (filtration rate, an
# unreplicated 2^4; runs in standard order): the published effects and the text's
# worked Lenth analysis, PSE = 1.5 x 1.75 = 2.625, ME = 2.571 x 2.625 = 6.75,
# SME = 5.219 x 2.625 = 13.70.
FILTRATION = [45, 71, 48, 65, 68, 60, 80, 65, 43, 100, 45, 104, 75, 86, 70, 96]
FILTRATION_EFFECTS = {
    "A": 21.625,
    "B": 3.125,
    "C": 9.875,
    "D": 14.625,
    "A:C": -18.125,
    "A:D": 16.625,
}


def test_lenth_on_the_textbook_filtration_example():
    frame = pd.DataFrame(
        [
            {f: (i >> k) & 1 for k, f in enumerate("ABCD")} | {"y": y}
            for i, y in enumerate(FILTRATION)
        ]
    )
    every = [Term(c) for k in range(1, 5) for c in itertools.combinations("ABCD", k)]
    model = FactorModel(factors=list("ABCD"), terms=every, n=16, n_params=16, points=16)
    effects = coded_effects(frame, model, "y").set_index("source")["effect"]
    for name, value in FILTRATION_EFFECTS.items():
        assert effects[name] == pytest.approx(value, abs=1e-12)
    # an effect is the difference of the means at + and -: check one directly
    assert effects["A"] == pytest.approx(
        frame.loc[frame.A == 1, "y"].mean() - frame.loc[frame.A == 0, "y"].mean()
    )
    result = lenth(effects)
    assert result.m == 15 and result.df == 5
    assert result.pse == pytest.approx(2.625, abs=1e-12)
    assert result.me == pytest.approx(6.75, abs=0.005)
    assert result.sme == pytest.approx(13.70, abs=0.005)
    assert set(effects.index[effects.abs() > result.me]) == {"A", "C", "D", "A:C", "A:D"}


def test_lenth_from_its_definition_by_hand():
    # Box, Hunter & Hunter (2nd ed., p. 200) process development effects (as in unrepx's
    # pdEff). |c| sorted: 0 .25 .25 .25 .5 .75 .75 .75 1 1.25 2.25 4.5 5.5 8 24;
    # median .75 -> s0 = 1.125; below 2.5 s0 = 2.8125 are the 11 smallest, median .75
    # -> PSE = 1.125; d = 15 / 3 = 5.
    effects = [-8, 24, 1, -2.25, 0.75, -1.25, -0.75, -5.5, 0, 4.5, 0.5, -0.25, -0.25, -0.75, -0.25]
    result = lenth(effects)
    assert result.pse == pytest.approx(1.125)
    assert result.me == pytest.approx(2.5705818 * 1.125, rel=1e-6)  # t(0.975, 5)
    gamma = (1 + 0.95 ** (1 / 15)) / 2
    from scipy import stats

    assert result.sme == pytest.approx(stats.t.ppf(gamma, 5) * 1.125, rel=1e-12)
    assert np.isnan(lenth([1.0, 2.0]).pse)  # fewer than 3 effects
    assert np.isnan(lenth([0.0, 0.0, 0.0, 1.0]).pse)  # more than half exactly zero

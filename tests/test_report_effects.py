"""Main effects, ranking, ANOVA and binning on synthetic tables with known effects.

References are independent of the implementation: the generating effects, scipy's
t-interval, and the balanced-design sums of squares n_level * sum((mean_l - grand)^2).
The model selection and Lenth's method are tested in test_report_model.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator.report.effects import anova, effect_ranking, main_effects
from orchestrator.report.study import study_from_frame

EFFECTS = {
    "qubits": {4: -0.03, 8: 0.0, 12: 0.03},  # big
    "reuploads": {1: -0.006, 2: 0.0, 4: 0.006},  # medium
    "lr_decay": {0.99: 0.0, 1.0: 0.0},  # null
}
BASE, SIGMA, SEEDS = 0.85, 0.003, 4


def synthetic(effects=EFFECTS, *, interaction: float = 0.0, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    names = list(effects)
    for combo in itertools.product(*(effects[n] for n in names)):
        point = dict(zip(names, combo, strict=True))
        for s in range(SEEDS):
            y = BASE + sum(effects[n][point[n]] for n in names) + rng.normal(0, SIGMA)
            if interaction and point.get("qubits") == 12 and point.get("reuploads") == 4:
                y += interaction
            rows.append({**point, "seed": s, "status": "completed", "test_accuracy": y})
    return pd.DataFrame(rows)


def test_level_means_match_the_generating_effects():
    frame = synthetic()
    table = main_effects(frame, list(EFFECTS), "test_accuracy")
    assert len(table) == 3 + 3 + 2
    for name, levels in EFFECTS.items():
        others = sum(np.mean(list(EFFECTS[o].values())) for o in EFFECTS if o != name)
        for level, effect in levels.items():
            row = table[(table.factor == name) & (table.level == level)].iloc[0]
            assert row.n == len(frame) / len(levels)
            # level mean = base + own effect + mean of the other effects (balanced design)
            assert row["mean"] == pytest.approx(
                BASE + effect + others, abs=4 * SIGMA / np.sqrt(row.n)
            )


def test_interval_is_scipy_t_interval():
    frame = synthetic()
    table = main_effects(frame, ["qubits"], "test_accuracy", confidence=0.9)
    for row in table.itertuples():
        y = frame.loc[frame.qubits == row.level, "test_accuracy"]
        low, high = stats.t.interval(0.9, len(y) - 1, loc=y.mean(), scale=stats.sem(y))
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high), rel=1e-9)


def test_single_trial_level_has_no_interval():
    frame = pd.DataFrame({"a": [1, 2, 2], "test_accuracy": [0.5, 0.6, 0.7]})
    table = main_effects(frame, ["a"], "test_accuracy")
    assert np.isnan(table.loc[0, "ci_low"]) and table.loc[0, "mean"] == 0.5
    assert table.loc[1, "mean"] == pytest.approx(0.65)


def test_ranking_by_range():
    frame = synthetic()
    ranking = effect_ranking(main_effects(frame, list(EFFECTS), "test_accuracy"))
    assert list(ranking.factor) == ["qubits", "reuploads", "lr_decay"]
    assert ranking.loc[0, "range"] == pytest.approx(0.06, abs=0.004)
    assert ranking.loc[0, "best_level"] == 12 and ranking.loc[0, "worst_level"] == 4
    assert ranking["cumulative_share"].iloc[-1] == pytest.approx(1.0)


def test_anova_ranks_big_factor_first_and_matches_balanced_sums_of_squares():
    frame = synthetic()
    table, notes = anova(frame, list(EFFECTS), "test_accuracy")
    assert notes == []
    mains = table[table.term == "main effect"]
    assert list(mains.source) == ["qubits", "reuploads", "lr_decay"]
    assert set(table[table.term == "interaction"].source) == {
        "qubits:reuploads",
        "qubits:lr_decay",
        "reuploads:lr_decay",
    }
    assert table.source.iloc[-1] == "Residual"
    by = table.set_index("source")
    assert by.loc["qubits", "p_value"] < 1e-20
    assert by.loc["reuploads", "p_value"] < 1e-6
    assert by.loc["lr_decay", "p_value"] > 0.01
    grand = frame.test_accuracy.mean()
    total = ((frame.test_accuracy - grand) ** 2).sum()
    for name in EFFECTS:
        means = frame.groupby(name).test_accuracy.agg(["mean", "size"])
        ss = (means["size"] * (means["mean"] - grand) ** 2).sum()
        assert by.loc[name, "sum_sq"] == pytest.approx(ss, rel=1e-8)
        assert by.loc[name, "df"] == len(means) - 1
        assert by.loc[name, "eta_sq"] == pytest.approx(ss / total, rel=1e-8)
        ss_res = by.loc["Residual", "sum_sq"]
        assert by.loc[name, "partial_eta_sq"] == pytest.approx(ss / (ss + ss_res), rel=1e-8)
    # 72 trials - intercept - mains (2 + 2 + 1) - interactions (4 + 2 + 2)
    assert by.loc["Residual", "df"] == len(frame) - 1 - (2 + 2 + 1) - (4 + 2 + 2)
    assert table["eta_sq"].sum() == pytest.approx(1.0)


def test_anova_without_residual_degrees_of_freedom_says_why():
    frame = pd.DataFrame(
        {"a": [1, 2, 1, 2], "b": [1, 2, 3, 4], "test_accuracy": [0.5, 0.6, 0.7, 0.8]}
    )
    table, notes = anova(frame, ["a", "b"], "test_accuracy")
    assert table.empty
    assert notes == [
        "ANOVA needs at least one residual degree of freedom: 4 trials, 5 parameters "
        "(intercept + levels - 1 per factor)."
    ]


def test_anova_finds_the_planted_interaction():
    frame = synthetic(interaction=0.02)
    table, _ = anova(frame, list(EFFECTS), "test_accuracy")
    inter = table[table.term == "interaction"].reset_index(drop=True)
    assert inter.loc[0, "source"] == "qubits:reuploads" and inter.loc[0, "p_value"] < 1e-6
    assert (inter.p_value.iloc[1:] > 1e-3).all()


def test_accuracy_intervals_are_clipped_to_the_unit_interval():
    frame = pd.DataFrame({"a": [1, 1, 2, 2], "test_accuracy": [0.99, 1.0, 0.02, 0.2]})
    table = main_effects(frame, ["a"], "test_accuracy", bounds=(0.0, 1.0))
    raw = main_effects(frame, ["a"], "test_accuracy")
    assert raw.ci_high.iloc[0] > 1 and raw.ci_low.iloc[1] < 0  # the t-interval leaves [0, 1]
    assert table.ci_high.iloc[0] == 1.0 and table.ci_low.iloc[1] == 0.0
    assert table.ci_low.iloc[0] == raw.ci_low.iloc[0]  # the inner ends are untouched
    assert list(table["max"]) == [1.0, 0.2]


def test_continuous_factor_is_binned_into_quantiles():
    rng = np.random.default_rng(0)
    lr = 10 ** rng.uniform(-4, -1, 40)
    frame = pd.DataFrame(
        {
            "learning_rate": lr,
            "qubits": rng.choice([4, 8], 40),
            "status": "completed",
            "test_accuracy": 0.8 + 0.02 * np.log10(lr) + rng.normal(0, 0.002, 40),
        }
    )
    meta = {
        "factors": {"learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}, "qubits": [4, 8]}
    }
    study = study_from_frame(frame, meta)
    assert study.factors == ["learning_rate", "qubits"]
    assert len(study.binned["learning_rate"]) == 4
    assert any("was sampled from a range (0.0001..0.1, log scale)" in n for n in study.notes)
    lows = sorted(float(label.split("..")[0]) for label in study.binned["learning_rate"])
    assert lows[0] == pytest.approx(float(f"{lr.min():.3g}"))  # the observed minimum, not below it
    counts = study.analysed.learning_rate.value_counts()
    assert sorted(counts) == [10, 10, 10, 10]
    table = main_effects(study.analysed, study.factors, "test_accuracy")
    lr_means = table[table.factor == "learning_rate"]["mean"].to_numpy()
    assert np.all(np.diff(lr_means) > 0)  # bins in ascending order, metric rises with lr


def test_anova_accepts_names_that_are_not_identifiers():
    frame = synthetic()
    plain, _ = anova(frame, list(EFFECTS), "test_accuracy")
    odd = frame.rename(columns={"test_accuracy": "test acc (%)", "qubits": "n-qubits"})
    factors = ["n-qubits", "reuploads", "lr_decay"]
    table, notes = anova(odd, factors, "test acc (%)")
    assert notes == [] and list(table.source)[0] == "n-qubits"
    np.testing.assert_allclose(table.sum_sq, plain.sum_sq, rtol=1e-12)


def test_listed_levels_are_never_binned():
    """A grid factor with 7 listed learning rates keeps its 7 levels (paper_sst2_10q)."""
    rates = [0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.005]
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        [
            {
                "learning_rate": lr,
                "status": "completed",
                "test_accuracy": 0.79 + rng.normal(0, 0.01),
            }
            for lr in rates
            for _ in range(3)
        ]
    )
    study = study_from_frame(
        frame, {"factors": {"learning_rate": rates}, "search": {"kind": "grid"}}
    )
    assert study.binned == {} and not any("bins" in n for n in study.notes)
    table = main_effects(study.analysed, study.factors, "test_accuracy")
    assert list(table.level) == rates and (table.n == 3).all()
    # without study.json many distinct numeric values are taken for a sampled range
    guessed = study_from_frame(frame, {})
    assert "learning_rate" in guessed.binned
    assert any("no study.json says they are listed levels" in n for n in guessed.notes)

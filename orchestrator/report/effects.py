"""Screening statistics as pure functions of a trials frame (one row per completed trial).

Main effects (level means with t-intervals), their ranking by range, a main-effects
ANOVA with effect sizes (statsmodels ``ols`` + ``anova_lm(typ=2)``, sum-to-zero coding)
and two-factor interaction strengths. Functions return ``(table, notes)``: notes say in
words what could not be estimated and why.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "main_effects",
    "mean_interval",
    "effect_ranking",
    "anova",
    "interactions",
    "interaction_means",
    "level_order",
]


def level_order(values: pd.Series) -> list[Any]:
    """Observed levels in a readable order (numbers ascending, bins by lower edge)."""
    levels = list(values.dropna().unique())
    try:
        if all(isinstance(v, str) and ".." in v for v in levels):
            return sorted(levels, key=lambda v: float(v.split("..")[0]))
        return sorted(levels)
    except (TypeError, ValueError):
        return sorted(levels, key=str)


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean, sample sd and the half-width ``t_{(1+confidence)/2, n-1} * sd / sqrt(n)`` of
    the mean's two-sided t-interval; sd and half-width are NaN for n < 2 (all NaN for 0)."""
    y = np.asarray(values, dtype=float)
    n = len(y)
    mean = float(np.mean(y)) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    sd = float(np.std(y, ddof=1))
    return mean, sd, float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n))


def main_effects(
    frame: pd.DataFrame, factors: list[str], metric: str, *, confidence: float = 0.95
) -> pd.DataFrame:
    """Mean metric at each level of each factor with a two-sided t-interval of the mean.

    The interval is ``mean +- t_{(1+confidence)/2, n-1} * sd / sqrt(n)`` over the trials at
    that level (all seeds and all settings of the other factors); NaN when n < 2.
    Columns: factor, level, n, mean, sd, ci_low, ci_high.
    """
    rows = []
    for f in factors:
        for level in level_order(frame[f]):
            y = frame.loc[frame[f] == level, metric].astype(float).to_numpy()
            n = len(y)
            mean, sd, half = mean_interval(y, confidence)
            rows.append(
                {
                    "factor": f,
                    "level": level,
                    "n": n,
                    "mean": mean,
                    "sd": sd,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                }
            )
    return pd.DataFrame(rows, columns=["factor", "level", "n", "mean", "sd", "ci_low", "ci_high"])


def effect_ranking(effects: pd.DataFrame) -> pd.DataFrame:
    """Factors ranked by range = max level mean - min level mean (largest first).

    Columns: factor, range, best_level, worst_level, share (range / sum of ranges),
    cumulative_share.
    """
    rows = []
    for f, group in effects.groupby("factor", sort=False):
        group = group.dropna(subset=["mean"])
        if len(group) < 2:
            continue
        best, worst = group.loc[group["mean"].idxmax()], group.loc[group["mean"].idxmin()]
        rows.append(
            {
                "factor": f,
                "range": float(best["mean"] - worst["mean"]),
                "best_level": best["level"],
                "worst_level": worst["level"],
            }
        )
    out = pd.DataFrame(rows, columns=["factor", "range", "best_level", "worst_level"])
    out = out.sort_values("range", ascending=False, kind="stable").reset_index(drop=True)
    total = out["range"].sum()
    out["share"] = out["range"] / total if total > 0 else math.nan
    out["cumulative_share"] = out["share"].cumsum()
    return out


def anova(frame: pd.DataFrame, factors: list[str], metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Type-II ANOVA of ``metric ~ C(f1, Sum) + C(f2, Sum) + ...`` with effect sizes.

    Columns: source, sum_sq, df, mean_sq, F, p_value, eta_sq (SS / total SS),
    partial_eta_sq (SS / (SS + residual SS)); factors ordered by F (largest first),
    residual last. Empty with a note when the model cannot be estimated.
    """
    notes: list[str] = []
    columns = ["source", "sum_sq", "df", "mean_sq", "F", "p_value", "eta_sq", "partial_eta_sq"]
    empty = pd.DataFrame(columns=columns)
    if not factors:
        return empty, ["ANOVA needs at least one factor with two or more observed levels."]
    n = len(frame)
    n_params = 1 + sum(frame[f].nunique() - 1 for f in factors)
    if n - n_params < 1:
        return empty, [
            f"ANOVA needs at least one residual degree of freedom: {n} trials, "
            f"{n_params} parameters (intercept + levels - 1 per factor)."
        ]
    result, err = _fit_anova(frame, factors, metric)
    if result is None:
        return empty, [f"ANOVA could not be fitted: {err}."]
    out = _with_effect_sizes(result)
    expected_df = {f: frame[f].nunique() - 1 for f in factors}
    if any(row.df < expected_df[row.source] for row in out.iloc[:-1].itertuples()):
        notes.append(
            "Some factors are confounded in this unbalanced set of trials; their degrees of "
            "freedom are reduced (type-II sums of squares)."
        )
    if np.isclose(out["sum_sq"].iloc[-1], 0.0):
        notes.append("The residual sum of squares is zero: F and p are undefined.")
    return out, notes


def interactions(
    frame: pd.DataFrame, factors: list[str], metric: str, *, top: int = 3
) -> tuple[pd.DataFrame, list[str]]:
    """Two-factor interaction strength of every pair, strongest ``top`` first.

    With residual degrees of freedom left, the strength is the F of ``C(a):C(b)`` in
    ``metric ~ C(a) * C(b)`` (type II); otherwise the product of the two main-effect
    ranges is used and ``basis`` says so. Columns: a, b, basis, F, p_value, strength.
    """
    notes: list[str] = []
    rows = []
    ranges = {
        r.factor: r.range for r in effect_ranking(main_effects(frame, factors, metric)).itertuples()
    }
    for a, b in itertools.combinations(factors, 2):
        cells = frame.groupby([a, b]).size()
        n_params = len(cells)
        row = {"a": a, "b": b, "basis": "range product", "F": math.nan, "p_value": math.nan}
        if len(frame) - n_params >= 1 and len(cells) == frame[a].nunique() * frame[b].nunique():
            result, _ = _fit_anova(frame, [a, b], metric, interaction=True)
            if result is not None:
                key = f"{a}:{b}"
                if key in result.index and np.isfinite(result.loc[key, "F"]):
                    row.update(
                        basis="interaction F",
                        F=float(result.loc[key, "F"]),
                        p_value=float(result.loc[key, "PR(>F)"]),
                    )
        row["strength"] = (
            row["F"] if row["basis"] == "interaction F" else ranges.get(a, 0) * ranges.get(b, 0)
        )
        rows.append(row)
    out = pd.DataFrame(rows, columns=["a", "b", "basis", "F", "p_value", "strength"])
    if out.empty:
        notes.append("Interactions need at least two factors with two or more levels.")
        return out, notes
    # Pairs with an F come first (a real test), then range products.
    out["_rank"] = out["basis"].eq("interaction F")
    out = out.sort_values(["_rank", "strength"], ascending=[False, False], kind="stable")
    out = out.drop(columns="_rank").reset_index(drop=True)
    if (out["basis"] == "range product").any():
        notes.append(
            "Pairs marked 'range product' could not be tested (missing level combinations or "
            "no residual degrees of freedom); they are ranked by the product of main-effect ranges."
        )
    return out.head(top), notes


def interaction_means(frame: pd.DataFrame, a: str, b: str, metric: str) -> pd.DataFrame:
    """Mean metric for every observed (a, b) cell: columns a, b, n, mean."""
    grouped = frame.groupby([a, b])[metric].agg(["size", "mean"]).reset_index()
    return grouped.rename(columns={"size": "n"})


# ------------------------------------------------------------------------------------
def _fit_anova(
    frame: pd.DataFrame, factors: list[str], metric: str, *, interaction: bool = False
) -> tuple[pd.DataFrame | None, str | None]:
    """``anova_lm(typ=2)`` of ``y ~ C(x0, Sum) + C(x1, Sum) ...`` (``*`` when ``interaction``).

    Columns are renamed to x0, x1, ... so any factor or metric name works in the formula;
    the result's index uses the factor names again (``a:b`` for the interaction).
    """
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    data = pd.DataFrame({"y": frame[metric].astype(float).to_numpy()})
    for i, f in enumerate(factors):
        data[f"x{i}"] = frame[f].map(str).astype(object).to_numpy()  # categorical labels
    terms = [f"C(x{i}, Sum)" for i in range(len(factors))]
    rhs = " * ".join(terms) if interaction else " + ".join(terms)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ols(f"y ~ {rhs}", data=data).fit()
            result = sm.stats.anova_lm(model, typ=2)
    except (ValueError, np.linalg.LinAlgError) as err:
        return None, str(err)
    names = {term: f for term, f in zip(terms, factors, strict=True)}
    if interaction:
        names[":".join(terms)] = ":".join(factors)
    return result.rename(index=names), None


def _with_effect_sizes(table: pd.DataFrame) -> pd.DataFrame:
    ss_res = float(table.loc["Residual", "sum_sq"])
    ss_total = float(table["sum_sq"].sum())
    out = pd.DataFrame(
        {
            "source": table.index,
            "sum_sq": table["sum_sq"].to_numpy(float),
            "df": table["df"].to_numpy(float),
            "F": table["F"].to_numpy(float),
            "p_value": table["PR(>F)"].to_numpy(float),
        }
    )
    out.insert(3, "mean_sq", out["sum_sq"] / out["df"])
    out["eta_sq"] = out["sum_sq"] / ss_total if ss_total > 0 else math.nan
    denominator = out["sum_sq"] + ss_res
    out["partial_eta_sq"] = np.where(denominator > 0, out["sum_sq"] / denominator, math.nan)
    residual = out["source"] == "Residual"
    out.loc[residual, "partial_eta_sq"] = math.nan
    body = out[~residual].sort_values("F", ascending=False, kind="stable")
    return pd.concat([body, out[residual]], ignore_index=True)

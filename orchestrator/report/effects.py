"""Screening statistics as pure functions of a trials frame (one row per completed trial).

Main effects (level means and maxima with t-intervals), their ranking by range, cell
means of two factors, and the ANOVA of the model the design supports (statsmodels
``ols`` + ``anova_lm(typ=2)``, sum-to-zero coding; the model is chosen in
:mod:`orchestrator.report.factorial`). ``anova`` returns ``(table, notes)``: notes say in
words what could not be estimated and why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "main_effects",
    "mean_interval",
    "effect_ranking",
    "anova",
    "anova_notes",
    "interaction_means",
    "level_order",
    "metric_bounds",
    "clip_interval",
    "MAIN_EFFECT_COLUMNS",
]

MAIN_EFFECT_COLUMNS = ("factor", "level", "n", "max", "mean", "sd", "ci_low", "ci_high")


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
    frame: pd.DataFrame,
    factors: list[str],
    metric: str,
    *,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Mean and maximum metric at each level of each factor with a two-sided t-interval
    of the mean.

    The interval is ``mean +- t_{(1+confidence)/2, n-1} * sd / sqrt(n)`` over the trials at
    that level (all seeds and all settings of the other factors), clipped to ``bounds``
    (e.g. [0, 1] for an accuracy); NaN when n < 2. Columns: factor, level, n, max, mean,
    sd, ci_low, ci_high.
    """
    rows = []
    for f in factors:
        for level in level_order(frame[f]):
            y = frame.loc[frame[f] == level, metric].astype(float).to_numpy()
            mean, sd, half = mean_interval(y, confidence)
            low, high = clip_interval(mean - half, mean + half, bounds)
            rows.append(
                {
                    "factor": f,
                    "level": level,
                    "n": len(y),
                    "max": float(np.max(y)) if len(y) else math.nan,
                    "mean": mean,
                    "sd": sd,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows, columns=[*MAIN_EFFECT_COLUMNS])


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


def anova(
    frame: pd.DataFrame,
    factors: list[str],
    metric: str,
    *,
    search: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Type-II ANOVA of the model the trials support: main effects plus the estimable
    two-factor interactions (:func:`orchestrator.report.factorial.supported_model`).

    Columns: source, term, sum_sq, df, mean_sq, F, p_value, eta_sq, partial_eta_sq;
    terms ordered by F (largest first), residual last. Empty with a note when the model
    cannot be tested.
    """
    from orchestrator.report import factorial

    if not factors:
        return pd.DataFrame(columns=list(factorial.ANOVA_COLUMNS)), [
            "ANOVA needs at least one factor with two or more observed levels."
        ]
    model = factorial.supported_model(frame, factors, metric, search=search)
    table, notes = factorial.model_anova(frame, model, metric)
    return table, anova_notes(model) + notes


def anova_notes(model) -> list[str]:
    """What the reader must know about a model's F tests (none possible, confounding)."""
    if not model.terms:
        return [
            f"ANOVA needs at least one residual degree of freedom: {model.n} trials, "
            f"{model.n_params} parameters (intercept + levels - 1 per factor)."
        ]
    notes = list(model.notes)
    if model.residual_df < 1:
        notes.append(
            f"No F test: the model uses all {model.n} trials' degrees of freedom (an "
            "unreplicated two-level design); the effects are judged with Lenth's pseudo "
            "standard error instead."
        )
    return notes


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """The range a metric cannot leave: [0, 1] for accuracies, None for anything else."""
    return (0.0, 1.0) if "accuracy" in metric else None


def clip_interval(low, high, bounds: tuple[float, float] | None):
    """``(low, high)`` clipped to ``bounds`` (arrays or floats; NaN stays NaN)."""
    if bounds is None:
        return low, high
    return np.clip(low, *bounds), np.clip(high, *bounds)


def interaction_means(
    frame: pd.DataFrame,
    a: str,
    b: str,
    metric: str,
    *,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Mean metric and its t-interval (clipped to ``bounds``) for every observed (a, b)
    cell: columns a, b, n, mean, ci_low, ci_high."""
    rows = []
    for (level_a, level_b), group in frame.groupby([a, b], sort=False):
        mean, _, half = mean_interval(group[metric], confidence)
        low, high = clip_interval(mean - half, mean + half, bounds)
        rows.append(
            {a: level_a, b: level_b, "n": len(group), "mean": mean, "ci_low": low, "ci_high": high}
        )
    return pd.DataFrame(rows, columns=[a, b, "n", "mean", "ci_low", "ci_high"])

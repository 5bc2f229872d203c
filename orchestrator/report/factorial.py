"""The model a design supports, its ANOVA, and Lenth's method for unreplicated two-level designs.

    model = supported_model(frame, ["a", "b", "c"], "test_accuracy", search={"kind": "grid"})
    model.formula("test_accuracy")   # 'test_accuracy ~ a + b + c + a:b + a:c + b:c'
    table, notes = model_anova(frame, model, "test_accuracy")
    effects = coded_effects(frame, model, "test_accuracy")   # two-level designs only
    lenth(effects["effect"])         # Lenth(pse=..., me=..., sme=..., df=..., m=...)

The model holds every main effect and the two-factor interactions the trials can estimate:
every level combination observed, the contrast not aliased with a main effect (a
resolution III fraction) or with an interaction already in the model (resolution IV:
``a:b = c:d`` is one term), and residual degrees of freedom left for an F test. It is
hierarchical (effect heredity): an interaction enters only beside its two main effects,
and when degrees of freedom or an alias chain force a choice, interactions whose parent
main effects are active come first. Fits are statsmodels ``ols`` with sum-to-zero coding
and ``anova_lm(typ=2)``: each term is tested after every term that does not contain it.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.report.effects import level_order

__all__ = [
    "Term",
    "FactorModel",
    "Lenth",
    "supported_model",
    "model_anova",
    "coded_effects",
    "lenth",
    "half_normal_scores",
    "interaction_table",
    "ACTIVE_P",
    "LENTH_MIN_TRIALS",
    "ANOVA_COLUMNS",
]

ACTIVE_P = 0.05  # a main effect with p below this counts as active (effect heredity order)
# Lenth's method needs enough contrasts for its median: 7 (a 2^(7-4) or 2^3) at least;
# smaller unreplicated two-level designs keep a residual degree of freedom for F tests.
LENTH_MIN_TRIALS = 8
ANOVA_COLUMNS = (
    "source",
    "term",
    "sum_sq",
    "df",
    "mean_sq",
    "F",
    "p_value",
    "eta_sq",
    "partial_eta_sq",
)


@dataclass(frozen=True)
class Term:
    """A model term: a main effect ``(a,)`` or a two-factor interaction ``(a, b)`` (higher
    orders work in :func:`coded_effects`); ``aliases`` are the interactions with the same
    contrast (two-level fractions: ``d = a:b`` at resolution III, ``a:b = c:d`` at IV)."""

    factors: tuple[str, ...]
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return ":".join(self.factors)

    @property
    def label(self) -> str:
        return " = ".join((self.name, *self.aliases))


@dataclass
class FactorModel:
    """The terms fitted, the interactions left out (with the reason), and the counts."""

    factors: list[str]
    terms: list[Term] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # "a:b" -> why not in the model
    n: int = 0  # trials
    n_params: int = 0  # rank of the model matrix (intercept included)
    points: int = 0  # distinct design points (level combinations) among the trials
    two_level: bool = False  # every factor has exactly two observed levels
    notes: list[str] = field(default_factory=list)

    @property
    def residual_df(self) -> int:
        return self.n - self.n_params

    @property
    def pure_error_df(self) -> int:
        """Degrees of freedom from repeated design points (seeds): n - distinct points."""
        return self.n - self.points

    @property
    def lenth_applies(self) -> bool:
        """An unreplicated two-level design with at least 8 trials (7 effects): its effects
        are judged by Lenth's PSE, and the model may use every degree of freedom."""
        return self.two_level and self.pure_error_df == 0 and self.n >= LENTH_MIN_TRIALS

    @property
    def interactions(self) -> list[Term]:
        return [t for t in self.terms if len(t.factors) == 2]

    def formula(self, metric: str) -> str:
        return f"{metric} ~ " + " + ".join(t.label for t in self.terms)

    def describe(self, metric: str) -> str:
        """The model in one paragraph, for the report."""
        if not self.terms:
            return "No model could be fitted."
        inter = self.interactions
        kind = (
            f"main effects and {len(inter)} two-factor interaction{'s' if len(inter) != 1 else ''}"
            if inter
            else "main effects only"
        )
        error = (
            f"{self.residual_df} residual degrees of freedom"
            + (
                f", {self.pure_error_df} of them from repeated design points (seeds)"
                if self.pure_error_df
                else ", none from repeated design points (no seeds repeat a point)"
            )
            if self.residual_df > 0
            else "no residual degrees of freedom (a saturated model)"
        )
        return (
            f"Model ({kind}): {self.formula(metric)}. {self.n} trials at {self.points} design "
            f"points, {self.n_params} parameters, {error}."
        )


@dataclass(frozen=True)
class Lenth:
    """Lenth's (1989) pseudo standard error of ``m`` effects, its degrees of freedom
    ``m / 3``, and the margins of error: individual (``me``) and simultaneous (``sme``)."""

    pse: float
    me: float
    sme: float
    df: float
    m: int
    alpha: float = 0.05


# ------------------------------------------------------------------------------------
def supported_model(
    frame: pd.DataFrame,
    factors: list[str],
    metric: str,
    *,
    search: dict[str, Any] | None = None,
) -> FactorModel:
    """Main effects plus the two-factor interactions the trials support (module docstring).

    ``search`` is study.json's search block: a Plackett-Burman design (``kind: pb``) gets
    main effects only, since its interactions are partly aliased with main effects.
    Unreplicated two-level designs with at least 8 trials may use every degree of freedom
    (Lenth's method needs none left); every other design keeps one for the F tests. A
    model with no terms means even the main effects do not fit.
    """
    model = FactorModel(factors=list(factors), n=len(frame))
    if not factors or frame.empty:
        return model
    model.points = int(frame.groupby(factors, dropna=False).ngroups)
    model.two_level = all(frame[f].nunique() == 2 for f in factors)
    min_residual = 0 if model.lenth_applies else 1
    expected = 1 + sum(frame[f].nunique() - 1 for f in factors)
    model.n_params = expected
    if len(frame) - expected < min_residual:
        return model
    contrasts = [_sum_contrasts(frame[f]) for f in factors]
    matrix = np.column_stack([np.ones(len(frame)), *contrasts])
    rank = int(np.linalg.matrix_rank(matrix))
    model.terms = [Term((f,)) for f in factors]
    model.n_params = rank
    if rank < expected:
        model.notes.append(
            "Some factors are confounded in this unbalanced set of trials; their degrees of "
            "freedom are reduced (type-II sums of squares)."
        )
    kind = (search or {}).get("kind")
    coded = _two_level_columns(frame, factors) if model.two_level else {}
    for i, j in _heredity_order(frame, factors, metric):
        a, b = factors[i], factors[j]
        key = f"{a}:{b}"
        cells = frame.groupby([a, b]).ngroups
        full = frame[a].nunique() * frame[b].nunique()
        if kind == "pb":
            reason = "Plackett-Burman design: interactions are partly aliased with main effects"
        elif cells < full:
            reason = f"only {cells} of its {full} level combinations were run"
        else:
            column = np.column_stack([ca * cb for ca in contrasts[i].T for cb in contrasts[j].T])
            wider = np.hstack([matrix, column])
            gain = int(np.linalg.matrix_rank(wider)) - model.n_params
            reason = _why_not(model, coded, (a, b), gain, column.shape[1], min_residual)
            if reason is None:
                matrix = wider
                model.n_params += gain
                model.terms.append(Term((a, b)))
        if reason:
            model.left_out[key] = reason
    return model


def _why_not(
    model: FactorModel,
    coded: dict[str, np.ndarray],
    pair: tuple[str, str],
    gain: int,
    df: int,
    min_residual: int,
) -> str | None:
    """Why the interaction ``pair`` cannot join the model ("" when it joins as an alias of
    an interaction already in it, None when it joins as a term of its own)."""
    if gain == 0:
        alias = _alias_of(coded, model, pair)
        if alias is None:
            return "aliased with terms already in the model"
        index = model.terms.index(alias)  # the term's contrast also estimates this pair
        model.terms[index] = Term(alias.factors, (*alias.aliases, ":".join(pair)))
        if len(alias.factors) == 2:
            return ""
        return f"aliased with the main effect of {alias.factors[0]}"
    if gain < df:
        return f"only {gain} of its {df} degrees of freedom are estimable beside the other terms"
    if model.n - (model.n_params + gain) < min_residual:
        return (
            "no residual degree of freedom would be left for the F tests "
            f"({model.n} trials, {model.n_params} parameters without it)"
        )
    return None


def model_anova(
    frame: pd.DataFrame, model: FactorModel, metric: str
) -> tuple[pd.DataFrame, list[str]]:
    """Type-II ANOVA of the model with effect sizes.

    Columns: source, term (main effect | interaction), sum_sq, df, mean_sq, F, p_value,
    eta_sq (SS / total SS), partial_eta_sq (SS / (SS + residual SS)); terms ordered by F
    (largest first), residual last. Empty with a note when there is nothing to test.
    """
    columns = list(ANOVA_COLUMNS)
    empty = pd.DataFrame(columns=columns)
    if not model.terms or model.residual_df < 1:
        return empty, []
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    data = _coded_frame(frame, model.factors, metric)
    index = {f: i for i, f in enumerate(model.factors)}
    names, rhs = {}, []
    for term in model.terms:
        patsy_term = ":".join(f"C(x{index[f]}, Sum)" for f in term.factors)
        names[patsy_term] = term.label
        rhs.append(patsy_term)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = ols("y ~ " + " + ".join(rhs), data=data).fit()
            result = sm.stats.anova_lm(fit, typ=2)
    except (ValueError, np.linalg.LinAlgError) as err:
        return empty, [f"ANOVA could not be fitted: {err}."]
    out = _with_effect_sizes(result.rename(index=names))
    kinds = {
        t.label: ("interaction" if len(t.factors) == 2 else "main effect") for t in model.terms
    }
    out.insert(1, "term", out["source"].map(kinds).fillna(""))
    notes = []
    if np.isclose(out["sum_sq"].iloc[-1], 0.0):
        notes.append("The residual sum of squares is zero: F and p are undefined.")
    return out[columns], notes


def coded_effects(frame: pd.DataFrame, model: FactorModel, metric: str) -> pd.DataFrame:
    """Effects of a two-level model: twice the least-squares coefficient of each term on
    -1/+1 coding (low level = first in level order), which is ``mean(+) - mean(-)`` of its
    contrast in an orthogonal design.

    Columns: source, term, effect, abs_effect, low, high (the levels coded -1 and +1;
    for interactions "-" means the two factors at unlike levels).
    """
    import statsmodels.api as sm

    coded = _two_level_columns(frame, model.factors)
    x = np.column_stack([np.ones(len(frame))] + [_product(coded, t.factors) for t in model.terms])
    y = frame[metric].astype(float).to_numpy()
    fit = sm.OLS(y, x).fit()
    rows = []
    for term, coef in zip(model.terms, fit.params[1:], strict=True):
        low, high = (
            ("unlike", "like") if len(term.factors) == 2 else _levels(frame[term.factors[0]])
        )
        rows.append(
            {
                "source": term.label,
                "term": "interaction" if len(term.factors) == 2 else "main effect",
                "effect": 2.0 * float(coef),
                "abs_effect": abs(2.0 * float(coef)),
                "low": low,
                "high": high,
            }
        )
    return pd.DataFrame(rows, columns=["source", "term", "effect", "abs_effect", "low", "high"])


def lenth(effects, *, alpha: float = 0.05) -> Lenth:
    """Lenth's pseudo standard error (Technometrics 31, 1989, 469-473), from its definition.

    ``s0 = 1.5 * median |c_j|``; ``PSE = 1.5 * median{|c_j| : |c_j| < 2.5 s0}``; with
    ``d = m / 3`` degrees of freedom, ``ME = t_{1-alpha/2, d} * PSE`` and
    ``SME = t_{gamma, d} * PSE``, ``gamma = (1 + (1 - alpha)^(1/m)) / 2``.
    NaN when fewer than 3 effects or when no effect lies below ``2.5 s0`` (more than half
    of them exactly zero).
    """
    c = np.abs(np.asarray(effects, dtype=float))
    m = len(c)
    nan = Lenth(math.nan, math.nan, math.nan, m / 3, m, alpha)
    if m < 3:
        return nan
    s0 = 1.5 * float(np.median(c))
    small = c[c < 2.5 * s0]
    if len(small) == 0:
        return nan
    pse = 1.5 * float(np.median(small))
    d = m / 3
    gamma = (1 + (1 - alpha) ** (1 / m)) / 2
    return Lenth(
        pse=pse,
        me=float(stats.t.ppf(1 - alpha / 2, d)) * pse,
        sme=float(stats.t.ppf(gamma, d)) * pse,
        df=d,
        m=m,
        alpha=alpha,
    )


def half_normal_scores(m: int) -> np.ndarray:
    """Half-normal quantiles for the ``m`` ordered absolute effects (smallest first):
    ``Phi^{-1}(0.5 + 0.5 * (i - 0.5) / m)``, i = 1..m."""
    i = np.arange(1, m + 1)
    return stats.norm.ppf(0.5 + 0.5 * (i - 0.5) / m)


# ------------------------------------------------------------------------------------
def _coded_frame(frame: pd.DataFrame, factors: list[str], metric: str) -> pd.DataFrame:
    """``y`` and categorical labels ``x0, x1, ...`` so any factor or metric name works in a formula."""
    data = pd.DataFrame({"y": frame[metric].astype(float).to_numpy()})
    for i, f in enumerate(factors):
        data[f"x{i}"] = frame[f].map(str).astype(object).to_numpy()
    return data


def _sum_contrasts(values: pd.Series) -> np.ndarray:
    levels = sorted(values.unique(), key=str)
    out = np.zeros((len(values), len(levels) - 1))
    for k, level in enumerate(levels[:-1]):
        out[:, k] = (values == level).to_numpy(float)
    out[(values == levels[-1]).to_numpy(), :] = -1.0
    return out


def _levels(values: pd.Series) -> tuple[Any, Any]:
    low, high = level_order(values)
    return low, high


def _two_level_columns(frame: pd.DataFrame, factors: list[str]) -> dict[str, np.ndarray]:
    """-1/+1 coding of each two-level factor (its first level in level order is -1)."""
    out = {}
    for f in factors:
        low, _ = _levels(frame[f])
        out[f] = np.where(frame[f].to_numpy() == low, -1.0, 1.0)
    return out


def _product(coded: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    column = np.ones(len(next(iter(coded.values()))))
    for name in names:
        column = column * coded[name]
    return column


def _alias_of(
    coded: dict[str, np.ndarray], model: FactorModel, pair: tuple[str, str]
) -> Term | None:
    """The term of the model whose -1/+1 column equals +-(a*b)'s (two-level designs)."""
    if not coded:
        return None
    target = _product(coded, pair)
    for term in model.terms:
        column = _product(coded, term.factors)
        if np.array_equal(column, target) or np.array_equal(column, -target):
            return term
    return None


def _heredity_order(frame: pd.DataFrame, factors: list[str], metric: str) -> list[tuple[int, int]]:
    """Pairs of factor indices, those with both parent main effects active first, then one,
    then none; ties by the product of the parents' F (main-effects fit) or level-mean ranges."""
    strength, active = _main_effect_strength(frame, factors, metric)
    pairs = list(itertools.combinations(range(len(factors)), 2))

    def key(pair: tuple[int, int]) -> tuple[int, float]:
        i, j = pair
        return (-(active[i] + active[j]), -(strength[i] * strength[j]))

    return sorted(pairs, key=key)


def _main_effect_strength(
    frame: pd.DataFrame, factors: list[str], metric: str
) -> tuple[list[float], list[int]]:
    """F and activity (p < ACTIVE_P) of each factor in the main-effects fit; level-mean
    ranges (and nothing active) when that fit has no residual degree of freedom."""
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    ranges = [float(np.ptp(frame.groupby(f)[metric].mean().to_numpy(float))) for f in factors]
    rhs = " + ".join(f"C(x{i}, Sum)" for i in range(len(factors)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = ols(f"y ~ {rhs}", data=_coded_frame(frame, factors, metric)).fit()
            if fit.df_resid < 1:
                return ranges, [0] * len(factors)
            table = sm.stats.anova_lm(fit, typ=2)
    except (ValueError, np.linalg.LinAlgError):
        return ranges, [0] * len(factors)
    f_values = [float(np.nan_to_num(table["F"].iloc[i])) for i in range(len(factors))]
    active = [int(table["PR(>F)"].iloc[i] < ACTIVE_P) for i in range(len(factors))]
    return f_values, active


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
    with np.errstate(invalid="ignore", divide="ignore"):
        out["partial_eta_sq"] = np.where(denominator > 0, out["sum_sq"] / denominator, math.nan)
    residual = out["source"] == "Residual"
    out.loc[residual, "partial_eta_sq"] = math.nan
    body = out[~residual].sort_values("F", ascending=False, kind="stable")
    return pd.concat([body, out[residual]], ignore_index=True)


def interaction_table(
    model: FactorModel, anova_table: pd.DataFrame, effects: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every pair of factors: in the model (with its F and p, or its effect on two-level
    coding) or left out (with the reason). Columns: interaction, in_model, F, p_value,
    effect, note; model terms first, strongest first."""
    columns = ["interaction", "in_model", "F", "p_value", "effect", "note"]
    by_source = anova_table.set_index("source") if len(anova_table) else pd.DataFrame()
    by_effect = effects.set_index("source") if effects is not None and len(effects) else None
    rows = []
    for term in model.interactions:
        row = {"interaction": term.label, "in_model": True, "note": ""}
        if term.label in by_source.index:
            row.update(
                F=by_source.loc[term.label, "F"], p_value=by_source.loc[term.label, "p_value"]
            )
        if by_effect is not None and term.label in by_effect.index:
            row["effect"] = by_effect.loc[term.label, "effect"]
        if term.aliases:
            row["note"] = "aliased: its contrast estimates the sum of these interactions"
        rows.append(row)
    for key, reason in model.left_out.items():
        rows.append({"interaction": key, "in_model": False, "note": reason})
    out = pd.DataFrame(rows, columns=columns)
    strength = out["F"].fillna(out["effect"].abs()).fillna(-1.0)
    order = np.lexsort((-strength.to_numpy(float), ~out["in_model"].to_numpy(bool)))
    return out.iloc[order].reset_index(drop=True)

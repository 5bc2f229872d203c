"""The factor-analysis sections of a report: main effects, and the model the design
supports with its ANOVA (or Lenth's method) and interaction plots.

    sections = [main_effects_section(study, 0.95), anova_section(study, 0.95)]
"""

from __future__ import annotations

import itertools
import math

from scipy import stats

from orchestrator.report import effects, factorial, figures
from orchestrator.report.effects import metric_bounds
from orchestrator.report.render import FigureFile, Section, Table
from orchestrator.report.study import StudyData

__all__ = ["main_effects_section", "anova_section"]


def main_effects_section(study: StudyData, confidence: float) -> Section:
    """Level means and maxima with t-intervals, their ranking, the figures."""
    section = Section(
        "Main effects",
        text=[
            f"Mean {study.metric} at each level of each factor, and the best trial there (max, "
            f"the statistic the paper reports). The interval is a {confidence:.0%} t-interval "
            "of the mean over all completed trials at that level (every seed and every "
            "setting of the other factors)"
            + (", clipped to [0, 1]" if metric_bounds(study.metric) else "")
            + ": it says how precisely the level mean is known, not how much one run varies. "
            "In unbalanced or incomplete designs a level mean also carries the effects of "
            "the other factors."
        ],
    )
    if study.analysed.empty or not study.factors:
        section.notes.append(
            "No main effects: "
            + (
                "no completed trials."
                if study.analysed.empty
                else "no factor has two or more observed levels."
            )
        )
        return section
    bounds = metric_bounds(study.metric)
    table = effects.main_effects(
        study.analysed, study.factors, study.metric, confidence=confidence, bounds=bounds
    )
    ranking = effects.effect_ranking(table)
    if (table["n"] < 2).any():
        section.notes.append("Levels with a single trial have no interval (n < 2).")
    section.tables.append(Table("Level means", table, "main_effects.csv"))
    section.tables.append(
        Table("Effects ranked by range (max - min level mean)", ranking, "effect_ranking.csv")
    )
    section.figures.append(
        FigureFile(
            f"Main effects: level means with {confidence:.0%} t-intervals, one y-scale for "
            f"all panels. {figures.TRUNCATED_NOTE}",
            "main_effects",
            figures.to_png(figures.main_effects_figure(table, study.metric, bounds)),
        )
    )
    if len(ranking):
        section.figures.append(
            FigureFile(
                "Pareto chart of effect ranges",
                "pareto",
                figures.to_png(figures.pareto_figure(ranking, study.metric)),
            )
        )
    return section


def anova_section(study: StudyData, confidence: float) -> Section:
    """The model the design supports, its ANOVA or Lenth's method, the interactions."""
    section = Section(
        "Model and ANOVA",
        text=[
            "The model holds every main effect and the two-factor interactions the design "
            "supports: every level combination of the pair was run, its contrast is not "
            "aliased with a main effect (it is then named beside that effect: d = a:b), an "
            "interaction aliased with one already in the model is reported with it (a:b = "
            "c:d), and residual degrees of freedom remain "
            "for the F tests (an unreplicated two-level design may use them all: Lenth's "
            "method below needs none). The model keeps effect heredity: an interaction "
            "enters only beside its two main effects, and where an alias chain or the "
            "degrees of freedom force a choice, interactions whose main effects are active "
            "(p < 0.05 in a main-effects fit) come first. Fitted by least squares "
            "(statsmodels ols, sum-to-zero coding) with type-II sums of squares (anova_lm "
            "typ=2): each term is tested after every term that does not contain it, against "
            "the residual of this model. eta_sq = SS / total SS; partial_eta_sq = SS / (SS "
            "+ residual SS)."
        ],
    )
    if study.analysed.empty:
        section.notes.append("ANOVA needs completed trials; there are none.")
        return section
    if not study.factors:
        section.notes.append("ANOVA needs at least one factor with two or more observed levels.")
        return section
    data, metric = study.analysed, study.metric
    search = study.meta.get("search") if isinstance(study.meta.get("search"), dict) else {}
    model = factorial.supported_model(data, study.factors, metric, search=search)
    section.notes += effects.anova_notes(model)
    if not model.terms:
        return section
    section.text.append(model.describe(metric))
    table, notes = factorial.model_anova(data, model, metric)
    section.notes += notes
    if len(table):
        section.tables.append(Table("ANOVA (type II) of the model", table, "anova.csv"))
    coded = None
    if model.lenth_applies:
        coded = _lenth_part(section, data, model, metric)
    pairs = factorial.interaction_table(model, table, coded)
    if len(study.factors) < 2:
        section.notes.append("Interactions need at least two factors with two or more levels.")
    if len(pairs):
        section.tables.append(Table("Two-factor interactions", pairs, "interactions.csv"))
    _interaction_plots(section, study, model, pairs, search, confidence)
    return section


def _lenth_part(section: Section, data, model, metric: str):
    """Effects of an unreplicated two-level design judged by Lenth's PSE (table + plot)."""
    coded = factorial.coded_effects(data, model, metric)
    result = factorial.lenth(coded["effect"])
    if not math.isfinite(result.pse):
        section.notes.append(
            f"Lenth's pseudo standard error is undefined for these {result.m} effects (fewer "
            "than 3, or more than half of them exactly zero)."
        )
        section.tables.append(Table("Effects (two-level coding)", coded, "effects.csv"))
        return coded
    coded["lenth_t"] = coded["effect"] / result.pse
    coded["p_value"] = 2 * stats.t.sf(coded["lenth_t"].abs(), result.df)
    coded["beyond_ME"] = coded["abs_effect"] > result.me
    coded["beyond_SME"] = coded["abs_effect"] > result.sme
    coded = coded.sort_values("abs_effect", ascending=False, kind="stable").reset_index(drop=True)
    section.text.append(
        f"No seed repeats a design point, so there is no pure error. The {result.m} effects "
        "(twice the coefficient on -1/+1 coding: mean at the high level minus mean at the "
        "low level) are judged with Lenth's pseudo standard error (1989): s0 = 1.5 x "
        "median |effect|, PSE = 1.5 x median of the |effects| below 2.5 s0 = "
        f"{result.pse:.4g}, with {result.df:.3g} degrees of freedom (m/3). Margin of error "
        f"ME = t(0.975, {result.df:.3g}) x PSE = {result.me:.4g}; simultaneous margin "
        f"SME = {result.sme:.4g} (all {result.m} effects at once). Effects beyond ME are "
        "likely active, beyond SME convincingly so; p_value is Lenth's t-approximation."
    )
    section.tables.append(Table("Effects judged by Lenth's PSE", coded, "effects.csv"))
    section.figures.append(
        FigureFile(
            "Half-normal plot of the effects; dashed: ME, dotted: SME (Lenth)",
            "half_normal",
            figures.to_png(figures.half_normal_figure(coded, result.me, result.sme, metric)),
        )
    )
    return coded


def _interaction_plots(
    section: Section, study: StudyData, model, pairs, search: dict, confidence: float
) -> None:
    """One figure (shared y-scale, t-intervals) of the strongest interactions in the model;
    without any, of the pairs with the largest main-effect ranges, marked as hints."""
    data, metric = study.analysed, study.metric
    by_label = {t.label: t for t in model.interactions}
    terms = [by_label[label] for label in pairs.loc[pairs["in_model"], "interaction"]][:3]
    chosen = [t.factors for t in terms]
    names = ", ".join(
        " x ".join(t.factors) + (f" (= {', '.join(t.aliases)})" if t.aliases else "") for t in terms
    )
    hint = False
    if not chosen:
        ranges = {
            r.factor: r.range
            for r in effects.effect_ranking(
                effects.main_effects(data, study.factors, metric)
            ).itertuples()
        }
        complete = [
            (a, b)
            for a, b in itertools.combinations(study.factors, 2)
            if data.groupby([a, b]).ngroups == data[a].nunique() * data[b].nunique()
        ]
        complete.sort(key=lambda p: -(ranges.get(p[0], 0) * ranges.get(p[1], 0)))
        chosen, hint = complete[:3], True
        names = ", ".join(f"{a} x {b}" for a, b in chosen)
    if not chosen:
        return
    if hint:
        section.notes.append(
            "No two-factor interaction is in the model; the interaction plots show the pairs "
            "with the largest main-effect ranges as hints, untested"
            + (
                " (in a fractional design they are aliased with other effects: see qsweep "
                "design for the alias structure)."
                if search.get("kind") in ("fracfact", "pb")
                else "."
            )
        )
    section.figures.append(
        FigureFile(
            f"Interaction plots ({names}): cell means with {confidence:.0%} t-intervals, one "
            f"y-scale for all panels. {figures.TRUNCATED_NOTE}",
            "interactions",
            figures.to_png(
                figures.interactions_figure(data, chosen, metric, metric_bounds(metric))
            ),
        )
    )

"""Screening-study reports: ``build_report(study_dir)`` writes HTML, Markdown, PNGs and CSVs.

    from orchestrator.report import build_report
    files = build_report(Path("results/quickstart"), metric="test_accuracy")

Sections: design (planned vs present), main effects (level means and maxima with
t-intervals, Pareto of ranges), the model the design supports with its ANOVA (or Lenth's
method for unreplicated two-level designs) and interaction plots, the paper's views
(maximum and mean accuracy per qubit count and comparison group, model comparison
against classical heads), energy (QPU vs GPU) and gate noise. Every section says what it
could not estimate and why instead of failing.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from scipy import stats

from model.errors import QsweepError
from orchestrator.design import aliasing
from orchestrator.report import effects, factorial, figures, groups, views
from orchestrator.report.effects import metric_bounds
from orchestrator.report.render import FigureFile, Section, Table, write_report
from orchestrator.report.study import StudyData, load_studies, load_study, study_from_frame

__all__ = [
    "build_report",
    "build_combined_report",
    "build_sections",
    "load_study",
    "load_studies",
    "study_from_frame",
    "StudyData",
]

CONFIDENCE = 0.95


def build_report(
    study_dir: Path,
    *,
    metric: str = "test_accuracy",
    out_dir: Path | None = None,
    mlflow_uri: str | None = None,
) -> list[Path]:
    """Analyse a study directory (or its MLflow runs) and write the report files."""
    study = load_study(Path(study_dir), metric=metric, mlflow_uri=mlflow_uri)
    out = Path(out_dir) if out_dir else Path(study_dir) / "report"
    subtitle = (
        f"Metric: {metric}. Source: {study.source}. " + (study.meta.get("description") or "")
    ).strip()
    return write_report(out, f"qsweep report: {study.name}", subtitle, build_sections(study))


def build_combined_report(
    study_dirs: list[Path], *, metric: str = "test_accuracy", out_dir: Path
) -> list[Path]:
    """One report over several studies: their trials side by side in the paper's views
    (best per qubit count, model comparison), energy and noise. Main effects and ANOVA
    stay per study (their factors differ from study to study)."""
    study = load_studies([Path(d) for d in study_dirs], metric=metric)
    subtitle = f"Metric: {metric}. Sources: {study.source}. {study.meta['description']}"
    design = _studies_section(study)
    sections = [design, _paper_section(study), _energy_section(study), _noise_section(study)]
    return write_report(Path(out_dir), f"qsweep report: {study.name}", subtitle, sections)


def _studies_section(study: StudyData) -> Section:
    import pandas as pd

    # the notes on settings held fixed concern the factor analysis, which a combined
    # report leaves to the per-study reports
    notes = [n for n in study.notes if "the factor analysis uses" not in n]
    section = Section("Studies", notes=notes)
    rows = []
    for name, group in study.table.groupby("study", sort=False):
        done = group[group["status"] == "completed"]
        heads = (
            ", ".join(sorted(map(str, group["head"].dropna().unique()))) if "head" in group else ""
        )
        rows.append({"study": name, "trials": len(group), "completed": len(done), "heads": heads})
    table = pd.DataFrame(rows)
    settings = groups.study_settings(study.table)
    if len(settings.columns) > 1:
        table = table.merge(settings, on="study", how="left")
    section.text.append(
        "The trials of these studies side by side, with every setting that differs between "
        "them (compared only on the heads it applies to: a logistic regression has no "
        "epochs; '-' where it applies to no trial of the study). Accuracies are compared per "
        "head family in the views below, not per study. Main effects and ANOVA are per "
        "study (qsweep report STUDY_DIR): the studies vary different factors."
    )
    section.tables.append(Table("Studies", table, "studies.csv"))
    return section


def build_sections(study: StudyData) -> list[Section]:
    return [
        _design_section(study),
        _main_effects_section(study),
        _anova_section(study),
        _paper_section(study),
        _energy_section(study),
        _noise_section(study),
    ]


# ------------------------------------------------------------------------------------
def _design_section(study: StudyData) -> Section:
    summary, failed = views.status_summary(study)
    search = study.meta.get("search") or {}
    section = Section("Design", notes=list(study.notes))
    section.text.append(
        f"Search: {', '.join(f'{k}={v}' for k, v in search.items()) or 'unknown (no study.json)'}. "
        f"Optimised metric during the run: {study.meta.get('metric', '-')}; analysed here: {study.metric}."
    )
    counts = [{"quantity": k, "value": str(v)} for k, v in summary.items()]
    section.tables.append(
        Table("Trials", _frame(counts, ["quantity", "value"]), "trials_summary.csv")
    )
    section.tables.append(Table("Factors", views.design_summary(study), "design.csv"))
    if len(failed):
        section.tables.append(
            Table("Failed, stopped or unfinished trials", failed, "failed_trials.csv")
        )
        n_stopped = int((study.table["status"] == "stopped").sum())
        if n_stopped:
            section.notes.append(
                f"{n_stopped} trials were stopped early by the scheduler; like failed trials they "
                "are left out of every estimate below (their metrics come from fewer epochs)."
            )
    if "data.split_seed" in (study.meta.get("factors") or {}):
        section.text.append(
            "The study sweeps data.split_seed: each seed draws another few-shot training and "
            "validation set, so the intervals below include resampling of the training data, "
            "not only the model seeds."
        )
    incomplete = views.incomplete_points(study)
    if len(incomplete):
        section.tables.append(
            Table(
                "Points with fewer completed seeds than planned",
                incomplete,
                "incomplete_points.csv",
            )
        )
    if search.get("kind") == "fracfact" and isinstance(study.meta.get("factors"), dict):
        try:
            lines = aliasing(study.meta["factors"], int(search.get("resolution") or 3))
        except QsweepError as err:
            section.notes.append(f"The alias structure could not be rebuilt from study.json: {err}")
        else:
            section.text.append(
                "Alias structure of the fractional design: " + "; ".join(lines) + "."
            )
    if study.completed.empty:
        section.notes.append(
            f"No completed trial has a {study.metric} value: nothing below can be estimated."
        )
    return section


def _main_effects_section(study: StudyData) -> Section:
    section = Section(
        "Main effects",
        text=[
            f"Mean {study.metric} at each level of each factor, and the best trial there (max, "
            f"the statistic the paper reports). The interval is a {CONFIDENCE:.0%} t-interval "
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
        study.analysed, study.factors, study.metric, confidence=CONFIDENCE, bounds=bounds
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
            f"Main effects: level means with {CONFIDENCE:.0%} t-intervals, one y-scale for "
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


def _anova_section(study: StudyData) -> Section:
    section = Section(
        "Model and ANOVA",
        text=[
            "The model holds every main effect and the two-factor interactions the design "
            "supports: every level combination of the pair was run, its contrast is not "
            "aliased with a main effect, an interaction aliased with one already in the "
            "model is reported with it (a:b = c:d), and residual degrees of freedom remain "
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
    _interaction_plots(section, study, model, pairs)
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


def _interaction_plots(section: Section, study: StudyData, model, pairs) -> None:
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
                if study.meta.get("search", {}).get("kind") in ("fracfact", "pb")
                else "."
            )
        )
    section.figures.append(
        FigureFile(
            f"Interaction plots ({names}): cell means with {CONFIDENCE:.0%} t-intervals, one "
            f"y-scale for all panels. {figures.TRUNCATED_NOTE}",
            "interactions",
            figures.to_png(
                figures.interactions_figure(data, chosen, metric, metric_bounds(metric))
            ),
        )
    )


def _paper_section(study: StudyData) -> Section:
    section = Section("Paper views: accuracy per qubit count and model comparison")
    data, metric = study.completed, study.metric
    if data.empty:
        section.notes.append("No completed trials.")
        return section
    bounds = metric_bounds(metric)
    section.text.append(
        "The paper reports the maximum test accuracy over seeds and settings; qsweep also "
        f"gives the mean with its {CONFIDENCE:.0%} t-interval"
        + (" (clipped to [0, 1])" if bounds else "")
        + ". Both are shown side by side and labelled: set 'max' beside the paper's figures, "
        "'mean [95% CI]' says how much of it a single run can expect."
    )
    quantum = views.quantum_rows(data)
    if "qubits" in data and views.raw(quantum, "qubits").nunique() > 1:
        best = views.best_by_qubits(data, metric, bounds=bounds)
        section.text.append(
            "Per qubit count, quantum trials are compared only within their group: head "
            "family (single sQE, multi sQE with E encoders, MLP encoder), encoding (the "
            "paper's, or a remedy: amplitude offset and/or ZZ readout)"
            + (", epochs" if "epochs" in best else "")
            + (", encoder" if views.ENCODER in best else "")
            + ". Each group has its own line; 'varies' lists the settings that take several "
            "values among a point's trials, 'studies' where they come from."
        )
        section.tables.append(
            Table(
                f"Best {metric} per qubit count and group (quantum heads)",
                best,
                "best_by_qubits.csv",
                display=_display(best, "best"),
            )
        )
        section.figures.append(
            FigureFile(
                f"{metric} per qubit count and group (the paper's Figure 8): left the maximum "
                "over seeds and settings with every trial as a grey dot, right the mean with "
                f"its {CONFIDENCE:.0%} t-interval",
                "best_by_qubits",
                figures.to_png(
                    figures.best_by_qubits_figure(
                        views.raw(quantum, "qubits").astype(int), quantum[metric], best, metric
                    )
                ),
            )
        )
    else:
        section.notes.append(
            "No per-qubit view: "
            + (
                "there are no completed quantum-head trials."
                if quantum.empty
                else "qubits does not vary among the quantum trials."
            )
        )
    table, notes = views.model_comparison(data, metric, bounds=bounds)
    section.text.append(
        f"Model comparison (the paper's Table II): maximum and mean {metric} per head family "
        "and encoding (quantum families per qubit count), the parameter count of the best "
        "trial, and the difference of the maximum to the best classical head."
        + (
            " With several encoders, families are compared per encoder against that encoder's "
            "best classical head (best_classical)."
            if views.encoder_levels(data)
            else ""
        )
    )
    section.notes += notes
    section.tables.append(
        Table("Model comparison", table, "model_comparison.csv", display=_display(table, "max"))
    )
    return section


def _display(frame, max_column: str):
    """The table as shown: encoder names instead of paths, the maximum labelled as the
    paper's statistic and the mean with its interval in one labelled column (the CSV keeps
    the plain columns)."""
    from orchestrator.report.render import number_text

    out = frame.copy()
    if views.ENCODER in out:
        out[views.ENCODER] = out[views.ENCODER].map(groups.encoder_name)
        out = out.rename(columns={views.ENCODER: "encoder"})
    if "group" in out and "family" in out:
        out = out.drop(columns=[c for c in ("family", "encoding", "epochs") if c in out])
        out.insert(0, "group", out.pop("group"))
    interval = [
        f"{number_text(m)} [{number_text(lo)}, {number_text(hi)}]"
        if math.isfinite(lo) and math.isfinite(hi)
        else number_text(m)
        for m, lo, hi in zip(out["mean"], out["ci_low"], out["ci_high"], strict=True)
    ]
    position = out.columns.get_loc("mean")
    out = out.drop(columns=["mean", "ci_low", "ci_high"])
    out.insert(position, f"mean [{CONFIDENCE:.0%} CI]", interval)
    return out.rename(columns={max_column: "max (the paper's statistic)"})


def _energy_section(study: StudyData) -> Section:
    section = Section("Energy: QPU vs GPU inference")
    table, crossover, notes = views.energy_curve(study)
    section.text += notes
    if table.empty:
        return section
    section.text.append(
        "Crossover (GPU simulation costs at least as much as the QPU): "
        + "; ".join(
            (f"{circuit}: " if len(crossover) > 1 else "")
            + (f"{q} qubits" if q is not None else "none in the range shown")
            for circuit, q in crossover.items()
        )
        + "."
    )
    quantum = views.quantum_rows(study.completed)
    observed = (
        sorted(views.raw(quantum, "qubits").astype(int).unique().tolist())
        if "qubits" in quantum
        else []
    )
    q = table["qubits"].astype(int)
    marks = {c for c in crossover.values() if c is not None}
    shown = table[q.isin(observed) | (q % 10 == 0) | q.isin(marks)]
    section.tables.append(
        Table(
            "Energy per inference (J); study qubit counts, every 10th and the crossover shown, "
            "all in the CSV",
            table,
            "energy.csv",
            display=shown,
        )
    )
    section.figures.append(
        FigureFile(
            "Energy per inference by qubit count (log scale); dashed vertical: crossover; grey: "
            "qubit counts in this study",
            "energy",
            figures.to_png(figures.energy_figure(table, crossover, observed)),
        )
    )
    return section


def _noise_section(study: StudyData) -> Section:
    section = Section("Gate noise")
    table = views.noise_by_qubits(study.completed, study.metric)
    if table.empty:
        section.notes.append(
            "No noise contrast: the completed trials are all noiseless or all noisy "
            "(noise_p1 / noise_p2)."
        )
        return section
    section.tables.append(Table(f"{study.metric} with and without gate noise", table, "noise.csv"))
    section.figures.append(
        FigureFile(
            f"{study.metric} by qubit count with and without depolarizing gate noise",
            "noise",
            figures.to_png(figures.noise_figure(table, study.metric)),
        )
    )
    return section


def _frame(rows: list[dict], columns: list[str]):
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)

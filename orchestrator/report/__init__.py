"""Screening-study reports: ``build_report(study_dir)`` writes HTML, Markdown, PNGs and CSVs.

    from orchestrator.report import build_report
    files = build_report(Path("results/quickstart"), metric="test_accuracy")

Sections: design (planned vs present), main effects (t-intervals, Pareto of ranges),
ANOVA with effect sizes and interaction plots, the paper's views (best accuracy per qubit
count, model comparison against classical heads), energy (QPU vs GPU) and gate noise.
Every section says what it could not estimate and why instead of failing.
"""

from __future__ import annotations

from pathlib import Path

from model.errors import QsweepError
from orchestrator.design import aliasing
from orchestrator.report import effects, figures, views
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
        rows.append(
            {
                "study": name,
                "trials": len(group),
                "completed": len(done),
                "heads": heads,
                f"mean {study.metric}": float(done[study.metric].mean())
                if len(done)
                else float("nan"),
            }
        )
    section.text.append(
        "The trials of these studies side by side. Main effects and ANOVA are per study "
        "(qsweep report STUDY_DIR): the studies vary different factors."
    )
    section.tables.append(Table("Studies", pd.DataFrame(rows), "studies.csv"))
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
            f"Mean {study.metric} at each level of each factor. The interval is a "
            f"{CONFIDENCE:.0%} t-interval of the mean over all completed trials at that level "
            "(every seed and every setting of the other factors): it says how precisely the "
            "level mean is known, not how much one run varies. In unbalanced or incomplete "
            "designs a level mean also carries the effects of the other factors."
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
    table = effects.main_effects(study.analysed, study.factors, study.metric, confidence=CONFIDENCE)
    ranking = effects.effect_ranking(table)
    if (table["n"] < 2).any():
        section.notes.append("Levels with a single trial have no interval (n < 2).")
    section.tables.append(Table("Level means", table, "main_effects.csv"))
    section.tables.append(
        Table("Effects ranked by range (max - min level mean)", ranking, "effect_ranking.csv")
    )
    section.figures.append(
        FigureFile(
            "Main effects: level means with 95% t-intervals",
            "main_effects",
            figures.to_png(figures.main_effects_figure(table, study.metric)),
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
        "ANOVA",
        text=[
            "Main-effects model metric ~ C(f1, Sum) + C(f2, Sum) + ... fitted by least squares "
            "(statsmodels ols), type-II sums of squares (anova_lm typ=2). eta_sq = SS / total "
            "SS; partial_eta_sq = SS / (SS + residual SS)."
        ],
    )
    if study.analysed.empty:
        section.notes.append("ANOVA needs completed trials; there are none.")
        return section
    table, notes = effects.anova(study.analysed, study.factors, study.metric)
    section.notes += notes
    if len(table):
        section.tables.append(Table("ANOVA (type II)", table, "anova.csv"))
    pairs, notes = effects.interactions(study.analysed, study.factors, study.metric)
    section.notes += notes
    if len(pairs):
        if study.meta.get("search", {}).get("kind") in ("fracfact", "pb"):
            section.notes.append(
                "In a fractional design two-factor interactions are aliased with other effects "
                "(see qsweep design for the alias structure); read these plots as hints."
            )
        section.tables.append(Table("Strongest two-factor interactions", pairs, "interactions.csv"))
        for row in pairs.itertuples():
            section.figures.append(
                FigureFile(
                    f"Interaction plot {row.a} x {row.b}",
                    f"interaction_{row.a}_{row.b}",
                    figures.to_png(
                        figures.interaction_figure(study.analysed, row.a, row.b, study.metric)
                    ),
                )
            )
    return section


def _paper_section(study: StudyData) -> Section:
    section = Section("Paper views: accuracy per qubit count and model comparison")
    data, metric = study.completed, study.metric
    if data.empty:
        section.notes.append("No completed trials.")
        return section
    quantum = views.quantum_rows(data)
    if "qubits" in data and views.raw(quantum, "qubits").nunique() > 1:
        best = views.best_by_qubits(data, metric)
        section.tables.append(
            Table(f"Best {metric} per qubit count (quantum heads)", best, "best_by_qubits.csv")
        )
        section.figures.append(
            FigureFile(
                f"Best {metric} per qubit count; grey dots are all other quantum trials "
                "(the paper's Figure 8)",
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
    table, notes = views.model_comparison(data, metric)
    section.text.append(
        f"Maximum {metric} per head family (quantum families per qubit count) with the parameter "
        "count of that best trial, and the difference to the best classical head (the paper's Table II)."
        + (
            " With several encoders, families are compared per encoder against that encoder's "
            "best classical head (best_classical)."
            if views.encoder_levels(data)
            else ""
        )
    )
    section.notes += notes
    section.tables.append(Table("Model comparison", table, "model_comparison.csv"))
    return section


def _energy_section(study: StudyData) -> Section:
    section = Section("Energy: QPU vs GPU inference")
    table, crossover, notes = views.energy_curve(study)
    section.text += notes
    if table.empty:
        return section
    section.text.append(
        f"Crossover (GPU simulation costs at least as much as the QPU): "
        f"{crossover if crossover is not None else 'none in the range shown'} qubits."
    )
    quantum = views.quantum_rows(study.completed)
    observed = (
        sorted(views.raw(quantum, "qubits").astype(int).unique().tolist())
        if "qubits" in quantum
        else []
    )
    q = table["qubits"].astype(int)
    shown = table[q.isin(observed) | (q % 10 == 0) | (q == (crossover or -1))]
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
            "Energy per inference by qubit count (log scale); dashed: crossover; grey: "
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

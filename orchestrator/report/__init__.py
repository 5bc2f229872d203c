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

import math
from pathlib import Path

from model.errors import QsweepError
from orchestrator.design import aliasing
from orchestrator.report import analysis, figures, groups, views
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
    table = shown = pd.DataFrame(rows)
    settings = groups.study_settings(study.table)
    if len(settings.columns) > 1:
        named = groups.study_settings(study.table, encoder_names=True)
        table = table.merge(settings, on="study", how="left")
        shown = shown.merge(named, on="study", how="left")
    section.text.append(
        "The trials of these studies side by side, with every setting that differs between "
        "them (compared only on the heads it applies to: a logistic regression has no "
        "epochs; '-' where it applies to no trial of the study). Accuracies are compared per "
        "head family in the views below, not per study. Main effects and ANOVA are per "
        "study (qsweep report STUDY_DIR): the studies vary different factors."
    )
    section.tables.append(Table("Studies", table, "studies.csv", display=shown))
    return section


def build_sections(study: StudyData) -> list[Section]:
    return [
        _design_section(study),
        analysis.main_effects_section(study, CONFIDENCE),
        analysis.anova_section(study, CONFIDENCE),
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
            + (", final linear layer" if "final_linear" in best else "")
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
        parts = ("family", "encoding", "final_linear", "epochs")  # all in the group label
        out = out.drop(columns=[c for c in parts if c in out])
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

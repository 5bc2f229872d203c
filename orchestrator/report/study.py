"""Load a study for reporting: the trials table, study.json and the factors to analyse.

from orchestrator.report.study import load_study
study = load_study(Path("results/quickstart"), metric="test_accuracy")
study.completed  # rows with status completed and a metric value
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from model.config import TrialConfig
from model.errors import DataError
from orchestrator.results import read_study_json, read_trials, study_name, trials_path
from orchestrator.spec import DATA_FACTORS

__all__ = [
    "StudyData",
    "load_study",
    "load_studies",
    "study_dirs_under",
    "study_name",
    "study_from_frame",
    "CONFIG_FIELDS",
    "MAX_DISCRETE_LEVELS",
]

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrialConfig))
# Not factors even when they vary: replicates and run-time settings.
_NOT_FACTORS = {"seed", "device", "eval_batch_size"}
# Factors sampled from a range (Optuna, LHS) are binned into quantiles; without study.json,
# so is a numeric column with more distinct values than this. Listed levels never are.
MAX_DISCRETE_LEVELS = 6
QUANTILE_BINS = 4


@dataclass
class StudyData:
    """A study as the report sees it.

    ``table`` has every trial row; ``completed`` the completed rows with a metric value;
    ``analysed`` those of them the factor analysis uses (all, or one head family when
    ``head`` is not a factor), where a binned factor's column holds quantile-bin labels
    and its raw values stay in ``<factor>__raw``.
    """

    name: str
    metric: str
    table: pd.DataFrame
    completed: pd.DataFrame  # every completed trial with a metric value (paper views)
    analysed: pd.DataFrame  # the completed trials the factor analysis uses (level labels)
    meta: dict[str, Any]
    factors: list[str]  # analysed factors (>= 2 observed levels)
    planned_levels: dict[str, list[Any]]  # from study.json (list or [low, high])
    single_level: list[str] = field(default_factory=list)  # factors with one observed level
    binned: dict[str, list[str]] = field(default_factory=dict)  # factor -> bin labels (ordered)
    notes: list[str] = field(default_factory=list)  # what the reader must know
    source: str = ""


def load_study(
    study_dir: Path, *, metric: str = "test_accuracy", mlflow_uri: str | None = None
) -> StudyData:
    """Read ``study_dir/trials.parquet`` (or the study's MLflow runs) and ``study.json``."""
    study_dir = Path(study_dir)
    meta = read_study_json(study_dir) or {}
    name = study_name(study_dir, meta)
    if mlflow_uri:
        from orchestrator.tracking import load_trial_runs  # the only MLflow module

        table = load_trial_runs(mlflow_uri, name)
        source = f"MLflow runs of study {name!r} at {mlflow_uri}"
    else:
        table = read_trials(study_dir)
        source = str(trials_path(study_dir))
    return study_from_frame(table, meta, metric=metric, name=name, source=source)


def study_dirs_under(parent: Path) -> list[Path]:
    """The study directories (with a trials table) directly under ``parent``, sorted."""
    return sorted(d for d in Path(parent).iterdir() if d.is_dir() and trials_path(d).exists())


def load_studies(study_dirs: list[Path], *, metric: str = "test_accuracy") -> StudyData:
    """Several studies as one, for the views that compare across them (Figure 8, Table II).

    Rows keep their study in ``study``; trial ids become ``study/trial_id``. The factor
    analysis of the combined table has one factor, ``study``.
    """
    frames, names, missing = [], [], []
    for d in map(Path, study_dirs):
        if not trials_path(d).exists():
            missing.append(str(d))
            continue
        meta = read_study_json(d) or {}
        name = study_name(d, meta)
        frame = read_trials(d).copy()
        frame["study"] = name
        frame["trial_id"] = name + "/" + frame["trial_id"].astype(str)
        frames.append(frame)
        names.append(name)
    if missing:
        raise DataError(
            f"no trials table ({trials_path(Path(missing[0])).name}) in {', '.join(missing)}; "
            "each directory given to a combined report must be a study directory written by "
            "qsweep run."
        )
    if len(set(names)) < len(names):
        raise DataError(f"the studies to combine must have different names; got {names}.")
    table = pd.concat(frames, ignore_index=True, sort=False)
    meta = {
        "name": " + ".join(names),
        "factors": {"study": names},
        "n_trials_planned": None,
        "description": f"Combined report of {len(names)} studies: {', '.join(names)}.",
    }
    source = ", ".join(str(trials_path(Path(d))) for d in study_dirs)
    return study_from_frame(table, meta, metric=metric, name=meta["name"], source=source)


def study_from_frame(
    table: pd.DataFrame,
    meta: dict[str, Any],
    *,
    metric: str = "test_accuracy",
    name: str = "study",
    source: str = "",
) -> StudyData:
    """Decide the factors, bin continuous ones and select the completed trials."""
    if metric not in table.columns:
        numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        raise DataError(
            f"metric column {metric!r} is not in the trials table ({source or 'given frame'}); "
            f"numeric columns present: {', '.join(numeric) or 'none'}."
        )
    notes: list[str] = []
    table = table.copy()
    if "status" not in table.columns:
        table["status"] = "completed"
        notes.append("The table has no status column; every row is treated as completed.")
    ok = (table["status"] == "completed") & table[metric].notna()
    completed = table[ok].copy()
    completed[metric] = completed[metric].astype(float)

    planned = meta.get("factors") if isinstance(meta.get("factors"), dict) else None
    if planned:
        names = [f for f in planned if f in table.columns]
        for f in planned:
            if f not in table.columns:
                notes.append(
                    f"Factor {f!r} of study.json has no column in the trials table; skipped."
                )
        planned_levels = {
            f: ([v["low"], v["high"]] if isinstance(v, dict) else list(v))
            for f, v in planned.items()
        }
    else:
        names = [
            c
            for c in (*CONFIG_FIELDS, *DATA_FACTORS)
            if c in table.columns and c not in _NOT_FACTORS and table[c].nunique(dropna=True) > 1
        ]
        planned_levels = {}
        notes.append(
            "study.json has no factors; the factors are the TrialConfig and data columns that vary across "
            f"trials: {', '.join(names) or 'none'}."
        )

    analysed = completed.copy()
    # Factor effects compare trials that differ only in factors: a setting that is not a
    # factor but varies (baseline heads, a noisy side-experiment) is held at its most
    # common value; the paper views below still use every completed trial.
    for column in CONFIG_FIELDS:
        if column in names or column in _NOT_FACTORS or column not in analysed.columns:
            continue
        counts = analysed[column].value_counts(dropna=False)
        if len(counts) < 2:
            continue
        keep = counts.index[0]
        analysed = analysed[analysed[column] == keep].copy()
        notes.append(
            f"{column} is not a factor but varies among the completed trials "
            f"({', '.join(f'{v}: {n}' for v, n in counts.items())}); the factor analysis uses "
            f"the {len(analysed)} trials with {column} = {keep}, the paper views use all of them."
        )

    factors, single, binned = [], [], {}
    for f in names:
        column = analysed[f]
        levels = column.dropna().unique()
        if len(levels) < 2:
            single.append(f)
            continue
        factors.append(f)
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        sampled = isinstance(planned, dict) and isinstance(planned.get(f), dict)
        guessed = planned is None and numeric and len(levels) > MAX_DISCRETE_LEVELS
        if numeric and (sampled or guessed):
            labels = _quantile_bins(column.astype(float))
            analysed[f + "__raw"] = column
            analysed[f] = labels
            binned[f] = list(dict.fromkeys(sorted(labels.dropna().unique(), key=_bin_start)))
            why = (
                f"was sampled from a range ({_range_text(planned[f])})"
                if sampled
                else f"has {len(levels)} distinct values and no study.json says they are "
                "listed levels"
            )
            notes.append(
                f"Factor {f!r} {why}: for main effects and ANOVA its {len(levels)} distinct "
                f"values are binned into {len(binned[f])} quantile bins "
                f"({', '.join(binned[f])}). Only factors sampled from ranges are binned; "
                "listed levels are analysed level by level."
            )
        else:
            analysed[f] = column.astype(object)
    if single:
        notes.append(
            "Factors with a single observed level among completed trials (no effect can be "
            f"estimated): {', '.join(single)}."
        )
    return StudyData(
        name=name,
        metric=metric,
        table=table,
        completed=completed,
        analysed=analysed,
        meta=meta,
        factors=factors,
        planned_levels=planned_levels,
        single_level=single,
        binned=binned,
        notes=notes,
        source=source,
    )


def _quantile_bins(values: pd.Series) -> pd.Series:
    """Quantile bins labelled by the observed ``min..max`` of each bin (qcut's own edges are
    rounded and extended below the minimum: 0.0005 came out as "-0.0005")."""
    bins = pd.qcut(values, q=min(QUANTILE_BINS, values.nunique()), duplicates="drop")
    grouped = values.groupby(bins, observed=True)
    low, high = grouped.transform("min"), grouped.transform("max")
    labels = [f"{a:.3g}..{b:.3g}" for a, b in zip(low, high, strict=True)]
    return pd.Series(labels, index=values.index, dtype=object)


def _range_text(spec: dict[str, Any]) -> str:
    return f"{spec.get('low')}..{spec.get('high')}" + (", log scale" if spec.get("log") else "")


def _bin_start(label: str) -> float:
    return float(label.split("..")[0])

"""Reading a study's runs back from MLflow (the report's ``--mlflow-uri`` source)."""

from __future__ import annotations

from typing import Any

from model.types import FINAL_TAGS
from orchestrator.tracking.store import _METRIC_TYPES, FINAL_METRICS, _all_runs, _client

__all__ = ["experiment_id", "load_trial_runs"]


def experiment_id(tracking_uri: str, study: str) -> str | None:
    """The id of the study's experiment in the store; None when it has none."""
    experiment = _client(tracking_uri).get_experiment_by_name(study)
    return experiment.experiment_id if experiment is not None else None


def load_trial_runs(tracking_uri: str, study: str):
    """One row per trial run (columns named as in trials.parquet; best effort)."""
    import pandas as pd

    from model.config import TrialConfig
    from orchestrator.results import DATA_COLUMNS, normalise_row

    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return pd.DataFrame([], columns=list(normalise_row({}, study=study)))
    defaults = TrialConfig().to_dict()
    rows = []
    for run in _all_runs(client, experiment.experiment_id):
        tags = run.data.tags
        if "qsweep.trial_id" not in tags:
            continue
        row: dict[str, Any] = {
            "trial_id": tags["qsweep.trial_id"],
            "point_id": tags.get("qsweep.point_id"),
            "seed": int(tags["qsweep.seed"]) if tags.get("qsweep.seed", "").isdigit() else None,
            "status": tags.get("qsweep.status"),
            "error": tags.get("qsweep.error"),
            **{key: tags.get(f"qsweep.{key}") for key in FINAL_TAGS},  # device, engine
            "started_at": tags.get("qsweep.started_at"),
            "finished_at": tags.get("qsweep.finished_at"),
        }
        for key in FINAL_METRICS:
            if key in run.data.metrics:
                value = run.data.metrics[key]
                row[key] = int(value) if _METRIC_TYPES[key] is int else value
        for key, text in run.data.params.items():
            if key in defaults and key != "seed":
                row[key] = _typed(text, defaults[key])
            elif key in DATA_COLUMNS:  # the trial's data setting
                row[key] = _typed(text, DATA_COLUMNS[key]())
        rows.append(normalise_row(row, study=study))
    return pd.DataFrame(rows, columns=list(normalise_row({}, study=study)))


def _typed(text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return text == "True"
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        return None
    return text

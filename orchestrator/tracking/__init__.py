"""MLflow for studies: the ONLY package that imports mlflow.

One experiment per study (name = study name, description = the study's). One study run
(the parent; run name = study name, tag ``qsweep.kind=study``) holds the spec, the
running counts, the best trial and the report; one child run per trial (run name = trial
id) holds the trial's config as params, per-epoch curves under ``epoch/<name>`` (step =
epoch), final metrics under their plain names (``val_accuracy`` is the best epoch's, as
in trials.parquet), a description, ``qsweep.*`` tags, the embeddings as dataset input and
the trained model. Everything is logged from the driver.

- :mod:`.store`: tracking URIs, the client, the experiment, run queries;
- :mod:`.runs`: :class:`TrialLogger`, the synchronous operations on runs;
- :mod:`.writer`: :class:`StudyTracker`, what the driver uses: the same operations on a
  background thread, batched, never blocking Ray Tune's event loop;
- :mod:`.bulk`: finished runs written many at a time into a SQL store;
- :mod:`.models`: trained models (logged, registered, found, loaded);
- :mod:`.queries`: a study's runs read back as rows.
"""

from __future__ import annotations

from orchestrator.tracking.models import find_trial_model, load_model, log_trial_model
from orchestrator.tracking.queries import experiment_id, load_trial_runs
from orchestrator.tracking.runs import (
    TrialLogger,
    dataset_entity,
    log_study_artifacts,
    trial_description,
)
from orchestrator.tracking.store import (
    FINAL_METRICS,
    best_row,
    check_tracking_uri,
    code_version,
    default_tracking_uri,
)

__all__ = [
    "default_tracking_uri",
    "check_tracking_uri",
    "code_version",
    "TrialLogger",
    "log_study_artifacts",
    "load_trial_runs",
    "find_trial_model",
    "experiment_id",
    "load_model",
    "log_trial_model",
    "trial_description",
    "dataset_entity",
    "best_row",
    "FINAL_METRICS",
]

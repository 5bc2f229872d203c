"""MLflow logging for studies: the ONLY module that imports mlflow.

One experiment per study (name = study name), one run per trial (run name = trial id)
with the trial's config as params, per-epoch curves under ``epoch/<name>`` (step =
epoch), final metrics under their plain names (``val_accuracy`` is the best epoch's, as
in trials.parquet, so the runs table shows the same numbers) and ``qsweep.*`` tags. Everything is logged from the driver with an ``MlflowClient``.

    uri = default_tracking_uri(Path("results/quickstart"))   # sqlite:///.../mlflow.db
    check_tracking_uri(uri)                                 # ServiceError when unreachable
    logger = TrialLogger(uri, "quickstart")
    logger.start("p000_s0", point_id="p000", seed=0, params=config_dict)
    logger.log_epoch("p000_s0", {"val_accuracy": 0.7}, step=1)
    logger.finish("p000_s0", row)                           # a trials.parquet row
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from model.errors import ServiceError
from model.types import FINAL_METRICS as TRIAL_METRICS

__all__ = [
    "default_tracking_uri",
    "check_tracking_uri",
    "code_version",
    "TrialLogger",
    "log_study_artifacts",
    "load_trial_runs",
    "FINAL_METRICS",
]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# A trial's final metrics (model.types.FINAL_METRICS) plus the driver's attempt count.
_METRIC_TYPES: dict[str, type] = {**TRIAL_METRICS, "attempts": int}
FINAL_METRICS = tuple(_METRIC_TYPES)
_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "failed": "FAILED"}
_TAG_MAX = 4000


def default_tracking_uri(results_dir: Path) -> str:
    """``sqlite:///<absolute results dir>/mlflow.db`` (the embedded default store)."""
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def check_tracking_uri(uri: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast (before any trial runs) when the tracking store cannot be reached."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status != 200:
                    raise ServiceError(
                        f"MLflow server {uri} answered {response.status} on /health."
                    )
        except (urllib.error.URLError, OSError) as err:
            raise ServiceError(
                f"MLflow tracking server {uri} is unreachable ({getattr(err, 'reason', err)}). "
                "Start it (mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000), "
                "fix --mlflow-uri, or leave --mlflow-uri out to log into <results>/mlflow.db."
            ) from None
        return
    if uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ServiceError(
                f"MLflow store {uri}: directory {parent} does not exist or is not writable."
            )
        return
    if uri.startswith(("file:", "/", "postgresql", "mysql", "databricks")):
        return
    raise ServiceError(
        f"--mlflow-uri {uri!r} is not a tracking URI; allowed: http(s)://HOST:PORT, sqlite:///PATH, file:PATH."
    )


def code_version() -> str:
    """Git sha of the qsweep checkout if available, else the package version."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from orchestrator.results import qsweep_version

    return qsweep_version()


def _client(uri: str):
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, study: str) -> str:
    experiment = client.get_experiment_by_name(study)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    artifacts = None
    uri = client.tracking_uri if hasattr(client, "tracking_uri") else ""
    if uri.startswith("sqlite:///"):  # keep artifacts beside the db, not in ./mlruns of the cwd
        artifacts = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(study, artifact_location=artifacts)
    except Exception:  # noqa: BLE001 - created concurrently by another driver
        experiment = client.get_experiment_by_name(study)
        if experiment is None:
            raise
        return experiment.experiment_id


def _all_runs(client, experiment_id: str, filter_string: str = "") -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


EPOCH_PREFIX = "epoch/"  # per-epoch curves; plain names hold the trial's final values


# ------------------------------------------------------------------------------------
class TrialLogger:
    """Driver-side MLflow logging of a study's trials (one run per trial id)."""

    def __init__(self, tracking_uri: str, study: str) -> None:
        self.uri = tracking_uri
        self.study = study
        self.version = code_version()
        try:
            self.client = _client(tracking_uri)
            self.experiment_id = _experiment_id(self.client, study)
        except Exception as err:  # noqa: BLE001 - any backend failure
            raise ServiceError(
                f"MLflow store {tracking_uri} refused the study {study!r}: {err}"
            ) from None
        self.runs: dict[str, str] = {}  # trial_id -> run_id

    def _existing(self, trial_id: str) -> list:
        return _all_runs(self.client, self.experiment_id, f"tags.`qsweep.trial_id` = '{trial_id}'")

    def start(
        self,
        trial_id: str,
        *,
        point_id: str,
        seed: int,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> str:
        """Create the trial's run; an unfinished run of the same trial id (earlier attempt) is replaced."""
        for old in self._existing(trial_id):
            self.client.delete_run(old.info.run_id)
        from mlflow.entities import Param

        tags = {
            "qsweep.study": self.study,
            "qsweep.trial_id": trial_id,
            "qsweep.point_id": point_id,
            "qsweep.seed": str(seed),
            "qsweep.status": "running",
            "qsweep.code_version": self.version,
            **(tags or {}),
        }
        run = self.client.create_run(self.experiment_id, run_name=trial_id, tags=tags)
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self.runs[trial_id] = run_id
        return run_id

    def log_epoch(self, trial_id: str, metrics: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        run_id = self.runs.get(trial_id)
        if run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [
            Metric(f"{EPOCH_PREFIX}{k}", float(v), now, int(step))
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
        ]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def finish(self, trial_id: str, row: dict[str, Any]) -> None:
        """Final metrics, status and error of a trial (``row`` as in trials.parquet)."""
        from mlflow.entities import Metric, RunTag

        run_id = self.runs.pop(trial_id, None)
        if run_id is None:
            params = {k: row[k] for k in _config_names() if k in row and row[k] is not None}
            params["seed"] = row.get("seed")
            run_id = self.start(
                trial_id,
                point_id=row.get("point_id") or "",
                seed=row.get("seed") or 0,
                params=params,
            )
            self.runs.pop(trial_id, None)
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(row[k]), now, 0)
            for k in FINAL_METRICS
            if isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
        ]
        tags = [RunTag("qsweep.status", str(row["status"]))]
        for key in ("started_at", "finished_at", "device"):
            if row.get(key):
                tags.append(RunTag(f"qsweep.{key}", str(row[key])))
        if row.get("error"):
            tags.append(RunTag("qsweep.error", str(row["error"])[:_TAG_MAX]))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(run_id, status=_STATUS.get(row["status"], "FINISHED"))

    def abandon(self, trial_id: str) -> None:
        """A trial cut short by a graceful stop: run KILLED (replaced when --resume reruns it)."""
        run_id = self.runs.pop(trial_id, None)
        if run_id is not None:
            self.client.set_tag(run_id, "qsweep.status", "interrupted")
            self.client.set_terminated(run_id, status="KILLED")

    def reconcile(self, rows: list[dict[str, Any]]) -> int:
        """Log table rows that have no terminated run (driver killed between table and MLflow)."""
        terminated = {
            r.data.tags.get("qsweep.trial_id")
            for r in _all_runs(self.client, self.experiment_id)
            if r.info.status in ("FINISHED", "FAILED") and r.data.tags.get("qsweep.trial_id")
        }
        n = 0
        for row in rows:
            if row["trial_id"] not in terminated:
                self.finish(row["trial_id"], row)
                n += 1
        return n


def _config_names() -> list[str]:
    import dataclasses

    from model.config import TrialConfig

    return [f.name for f in dataclasses.fields(TrialConfig)]


# ------------------------------------------------------------------------------------
def log_study_artifacts(
    tracking_uri: str,
    study: str,
    files: list[Path],
    *,
    run_name: str = "report",
    tags: dict | None = None,
) -> str:
    """Attach files to a study-level run (tag ``qsweep.kind=report``), created once and reused."""
    client = _client(tracking_uri)
    experiment_id = _experiment_id(client, study)
    existing = _all_runs(
        client,
        experiment_id,
        f"tags.`qsweep.kind` = 'report' and attributes.run_name = '{run_name}'",
    )
    if existing:
        run_id = existing[0].info.run_id
        if existing[0].info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
    else:
        base = {
            "qsweep.kind": "report",
            "qsweep.study": study,
            "qsweep.code_version": code_version(),
        }
        run_id = client.create_run(experiment_id, run_name=run_name, tags=base).info.run_id
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))
    for path in files:
        path = Path(path)
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=path.name)
        else:
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def load_trial_runs(tracking_uri: str, study: str):
    """One row per trial run (columns named as in trials.parquet; best effort)."""
    import pandas as pd

    from model.config import TrialConfig
    from orchestrator.results import normalise_row

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
            "device": tags.get("qsweep.device"),
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

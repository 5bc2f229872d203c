"""The MLflow store of a study: tracking URIs, the client, the experiment, run queries and
small helpers shared by the rest of ``orchestrator.tracking``."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
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
    "best_row",
    "FINAL_METRICS",
]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's client prints "View run ... at" and "View experiment at" (and fetches the run
# for it) every time a run on a server ends: two lines per trial; qsweep prints its own.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

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
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def store_init_lock(uri: str):
    """An exclusive file lock beside a SQLite store while it is opened: MLflow creates and
    migrates the database on first use, and two drivers doing that at once (the shards of
    a job array) fail with "duplicate column". Other stores: no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(uri[len("sqlite:///") :])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.init-lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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
EPOCH_FLUSH_S = 2.0  # per-epoch metrics reach MLflow at most this late while a trial runs
_BATCH_METRICS = 1000  # MLflow's limit of metrics per log_batch


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"source": "demo"}}`` -> ``{"data.source": "demo"}``; lists and factor
    ranges (``factors.lr = {low, high, log}``) stay whole."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict) and value and prefix != "factors.":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The row with the best ``metric`` (max or min); None when no row has a number."""
    scored = [r for r in rows if _is_number(r.get(metric))]
    if not scored:
        return None
    key = (lambda r: r[metric]) if mode == "max" else (lambda r: -r[metric])
    return max(scored, key=key)


def _study_run(
    client, experiment_id: str, study: str, version: str, *, reopen: bool = True
) -> tuple[str, bool]:
    """The study's parent run id (created when missing; set RUNNING when ``reopen``) and
    whether it was created."""
    found = _all_runs(
        client, experiment_id, f"tags.`qsweep.kind` = 'study' and tags.`qsweep.study` = '{study}'"
    )
    if found:
        run = sorted(found, key=lambda r: r.info.start_time)[0]
        if reopen and run.info.status != "RUNNING":
            client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, False
    tags = {"qsweep.kind": "study", "qsweep.study": study, "qsweep.code_version": version}
    run_id = client.create_run(experiment_id, run_name=study, tags=tags).info.run_id
    # drivers of a job array's shards may create it at the same moment: all keep the oldest
    found = _all_runs(
        client, experiment_id, f"tags.`qsweep.kind` = 'study' and tags.`qsweep.study` = '{study}'"
    )
    first = sorted(found, key=lambda r: (r.info.start_time, r.info.run_id))[0].info.run_id
    if first != run_id:
        client.delete_run(run_id)
        return _study_run(client, experiment_id, study, version, reopen=reopen)
    return run_id, True


def _config_names() -> list[str]:
    import dataclasses

    from model.config import TrialConfig

    return [f.name for f in dataclasses.fields(TrialConfig)]

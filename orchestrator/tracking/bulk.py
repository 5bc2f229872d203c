"""Finished runs written many at a time into a SQL tracking store (SQLite, PostgreSQL).

MLflow's client API writes one database transaction per call (``create_run``,
``log_batch``, ``log_inputs``, ``set_terminated``): about 5-15 ms each on SQLite here, so
4-7 calls per trial cap a study at a few dozen trials per second. For a SQL store the
writer instead inserts whole finished runs -- the run, its tags, params, metric history,
latest metrics and dataset input -- with one ``executemany`` per table for a batch of
runs, in one transaction, into the tables MLflow itself migrates (its SQLAlchemy models,
``mlflow.store.tracking.dbmodels.models``). ``tests/test_tracking_bulk.py`` checks that
runs written this way read back through ``MlflowClient`` exactly like runs logged call
by call; should a future MLflow change the schema, :func:`write_finished_runs` raises and
the writer falls back to the client API (and says so once).

    runs = [FinishedRun(run_name="p000_s0", start_ms=..., end_ms=..., status="FINISHED",
                        tags={...}, params={...}, metrics=[("val_accuracy", 0.8, ts, 0), ...])]
    ids = write_finished_runs(client, experiment_id, runs, dataset=(name, digest))
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FinishedRun", "bulk_store", "write_finished_runs"]

_PARAM_MAX = 6000  # MLflow's limits on a param and a tag value
_TAG_MAX = 8000


@dataclass
class FinishedRun:
    """Everything of one run, ready to insert. ``metrics``: ``(key, value, timestamp_ms, step)``."""

    run_name: str
    start_ms: int
    end_ms: int
    status: str  # FINISHED | FAILED | KILLED
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def bulk_store(client) -> Any | None:
    """The client's SqlAlchemyStore when its tracking store is a SQL database, else None
    (an HTTP server, a file store: the writer uses the client API there)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except Exception:  # noqa: BLE001 - an MLflow without these internals: no bulk path
        return None
    return store if isinstance(store, SqlAlchemyStore) else None


def _metric_rows(run_id: str, metrics) -> tuple[list[dict], list[dict]]:
    """``metrics`` rows and the ``latest_metrics`` rows MLflow derives from them (per key,
    the entry with the largest (step, timestamp, value), as ``_update_latest_metrics``)."""
    rows, latest = [], {}
    for key, value, timestamp, step in metrics:
        value = float(value)
        is_nan = math.isnan(value)
        stored = 0.0 if is_nan else value
        row = dict(key=key, value=stored, timestamp=int(timestamp), step=int(step),
                   is_nan=is_nan, run_uuid=run_id)  # fmt: skip
        rows.append(row)
        order = (row["step"], row["timestamp"], stored)
        if key not in latest or order >= latest[key][0]:
            latest[key] = (order, row)
    return rows, [dict(r) for _, r in latest.values()]


def write_finished_runs(
    client, experiment_id: str, runs: list[FinishedRun], *, dataset: tuple[str, str] | None = None
) -> list[str]:
    """Insert ``runs`` (already finished) into the client's SQL store in one transaction;
    returns their run ids. ``dataset`` = (name, digest) of a dataset already logged in
    the experiment (the study run's input): each run gets it as a training input.

    Raises when the store is not a SQL store or its schema is not the one expected.
    """
    from mlflow.store.tracking.dbmodels.models import (
        SqlDataset,
        SqlInput,
        SqlInputTag,
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from mlflow.utils.uri import append_to_uri_path
    from sqlalchemy import insert

    store = bulk_store(client)
    if store is None:
        raise TypeError("not a SQL tracking store")
    if not runs:
        return []
    experiment = store.get_experiment(experiment_id)
    run_rows, tag_rows, param_rows, metric_rows, latest_rows = [], [], [], [], []
    input_rows, input_tag_rows = [], []
    with store.ManagedSessionMaker(read_only=False) as session:
        dataset_uuid = None
        if dataset is not None:
            found = (
                session.query(SqlDataset)
                .filter(SqlDataset.experiment_id == int(experiment_id))
                .filter(SqlDataset.name == dataset[0], SqlDataset.digest == dataset[1])
                .first()
            )
            dataset_uuid = found.dataset_uuid if found is not None else None
        for run in runs:
            rid = run.run_id
            run_rows.append(
                dict(
                    run_uuid=rid, name=run.run_name, source_type="UNKNOWN", source_name="",
                    entry_point_name="", user_id=run.tags.get("mlflow.user", "unknown"),
                    status=run.status, start_time=int(run.start_ms), end_time=int(run.end_ms),
                    deleted_time=None, source_version="", lifecycle_stage="active",
                    artifact_uri=append_to_uri_path(experiment.artifact_location, rid, "artifacts"),
                    experiment_id=int(experiment_id),
                )
            )  # fmt: skip
            tags = {"mlflow.runName": run.run_name, **run.tags}
            tag_rows += [
                dict(key=k, value=str(v)[:_TAG_MAX], run_uuid=rid) for k, v in tags.items()
            ]
            param_rows += [
                dict(key=k, value=str(v)[:_PARAM_MAX], run_uuid=rid) for k, v in run.params.items()
            ]
            rows, latest = _metric_rows(rid, run.metrics)
            metric_rows += rows
            latest_rows += latest
            if dataset_uuid is not None:
                input_uuid = uuid.uuid4().hex
                input_rows.append(
                    dict(input_uuid=input_uuid, source_type="DATASET", source_id=dataset_uuid,
                         destination_type="RUN", destination_id=rid, step=0)
                )  # fmt: skip
                input_tag_rows.append(
                    dict(input_uuid=input_uuid, name="mlflow.data.context", value="training")
                )
        for model, rows in (
            (SqlRun, run_rows), (SqlTag, tag_rows), (SqlParam, param_rows),
            (SqlMetric, metric_rows), (SqlLatestMetric, latest_rows),
            (SqlInput, input_rows), (SqlInputTag, input_tag_rows),
        ):  # fmt: skip
            if rows:
                session.execute(insert(model.__table__), rows)
    return [run.run_id for run in runs]

"""Runs written in bulk into the SQL store read back through MlflowClient exactly like runs
logged call by call (the schema check of orchestrator.tracking.bulk)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.types import EmbeddedSplits
from orchestrator.tracking import TrialLogger, dataset_entity, default_tracking_uri
from orchestrator.tracking.bulk import FinishedRun, bulk_store, write_finished_runs

TAGS = {"qsweep.study": "s", "qsweep.trial_id": "X", "qsweep.status": "completed",
        "mlflow.parentRunId": "", "mlflow.note.content": "**X**: quantum head"}  # fmt: skip
PARAMS = {"qubits": "10", "learning_rate": "0.0025", "head": "quantum"}
METRICS = [("val_accuracy", 0.8125, 1000, 0), ("n_params", 352.0, 1000, 0),
           ("test_accuracy", float("nan"), 1000, 0)]  # fmt: skip
EPOCHS = [
    (f"epoch/{k}", 0.5 + 0.01 * e, 900 + e, e) for e in range(1, 6) for k in ("val_accuracy", "lr")
]


def _data():
    x = np.ones((4, 3), dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    return EmbeddedSplits(x, y, x, y, x, y, encoder="enc", source="synthetic")


def _by_api(logger: TrialLogger, trial: str) -> str:
    from mlflow.entities import Metric, Param

    client = logger.client
    run = client.create_run(logger.experiment_id, run_name=trial, start_time=500,
                            tags={**TAGS, "qsweep.trial_id": trial,
                                  "mlflow.parentRunId": logger.parent_run_id})  # fmt: skip
    rid = run.info.run_id
    client.log_batch(rid, params=[Param(k, v) for k, v in PARAMS.items()],
                     metrics=[Metric(*m) for m in METRICS + EPOCHS])  # fmt: skip
    from orchestrator.tracking.runs import _log_dataset

    _log_dataset(client, rid, logger.dataset)
    client.set_terminated(rid, status="FINISHED", end_time=2000)
    return rid


def _snapshot(client, rid: str) -> dict:
    run = client.get_run(rid)
    history = {k: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(rid, k)]
               for k in ("epoch/val_accuracy", "epoch/lr", "val_accuracy")}  # fmt: skip
    inputs = [(d.dataset.name, d.dataset.digest, [(t.key, t.value) for t in d.tags])
              for d in run.inputs.dataset_inputs]  # fmt: skip
    assert run.data.tags["mlflow.runName"] == run.info.run_name == run.data.tags["qsweep.trial_id"]
    tags = {
        k: v for k, v in run.data.tags.items() if k not in ("qsweep.trial_id", "mlflow.runName")
    }
    metrics = {k: ("nan" if math.isnan(v) else v) for k, v in run.data.metrics.items()}
    return dict(status=run.info.status, start=run.info.start_time, end=run.info.end_time,
                lifecycle=run.info.lifecycle_stage, user=run.info.user_id,
                artifact_tail=run.info.artifact_uri.rsplit("/", 1)[-1],
                params=run.data.params, metrics=metrics, tags=tags, history=history,
                inputs=inputs)  # fmt: skip


def test_bulk_runs_read_back_like_runs_logged_call_by_call(tmp_path):
    uri = default_tracking_uri(tmp_path)
    logger = TrialLogger(uri, "s")
    logger.open_study({"name": "s"}, planned=3)
    data = _data()
    logger.log_dataset(data, {"source": "synthetic", "protocol": "paper"})
    assert bulk_store(logger.client) is not None
    api_id = _by_api(logger, "p000_s0")
    runs = [
        FinishedRun(trial, 500, 2000, "FINISHED",
                    tags={**TAGS, "qsweep.trial_id": trial, "mlflow.parentRunId": logger.parent_run_id},
                    params=PARAMS, metrics=METRICS + EPOCHS)
        for trial in ("p001_s0", "p002_s0")
    ]  # fmt: skip
    entity = dataset_entity(data, {"source": "synthetic", "protocol": "paper"})
    ids = write_finished_runs(logger.client, logger.experiment_id, runs,
                              dataset=(entity.name, entity.digest))  # fmt: skip
    assert len(ids) == 2
    reference = _snapshot(logger.client, api_id)
    assert reference["inputs"] and reference["history"]["epoch/lr"]  # the comparison is not empty
    for rid in ids:
        assert _snapshot(logger.client, rid) == reference
    # found by the queries the driver, predict and the UI use
    found = logger.client.search_runs(
        [logger.experiment_id],
        "tags.`qsweep.trial_id` = 'p002_s0'",
        order_by=["metrics.val_accuracy DESC"],
    )
    assert [r.info.run_id for r in found] == [ids[1]]
    children = logger.client.search_runs(
        [logger.experiment_id], f"tags.`mlflow.parentRunId` = '{logger.parent_run_id}'"
    )
    assert len(children) == 3


def test_bulk_write_refuses_a_store_that_is_not_sql():
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri="http://127.0.0.1:9")  # a server: the client API path
    assert bulk_store(client) is None
    with pytest.raises(TypeError):
        write_finished_runs(client, "0", [FinishedRun("x", 1, 2, "FINISHED")])

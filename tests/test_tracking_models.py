"""The study's parent run and each trial's logged model, on an embedded sqlite store (no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.heads.factory import restore_head
from model.training import fit
from orchestrator.tracking import TrialLogger, default_tracking_uri, trial_description
from tests.sweep_fakes import tiny_data

SPEC = {
    "name": "tiny",
    "description": "two tiny heads",
    "factors": {
        "head": ["quantum", "logreg"],
        "learning_rate": {"low": 0.001, "high": 0.1, "log": True},
    },
    "fixed": {"epochs": 2},
    "data": {"source": "demo", "protocol": "paper", "split_seed": 3, "encoder": "fake"},
}


def row_of(trial_id: str, config: TrialConfig, result) -> dict:
    return {**config.to_dict(), **result.summary(), "trial_id": trial_id, "status": "completed"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study run with a quantum trial and a logistic-regression trial, models logged."""
    tmp = tmp_path_factory.mktemp("tiny")
    uri = default_tracking_uri(tmp)
    spec_file = tmp / "tiny.yaml"
    spec_file.write_text("name: tiny\n")
    data = tiny_data(16, 4)
    logger = TrialLogger(uri, "tiny")
    parent = logger.open_study(SPEC, spec_file=spec_file, planned=3)
    logger.log_dataset(data, SPEC["data"])
    trials = {
        "q": TrialConfig(head="quantum", qubits=2, epochs=2, batch_size=4),
        "lr": TrialConfig(head="logreg"),
    }
    results, rows = {}, []
    for trial_id, config in trials.items():
        logger.start(
            trial_id, point_id=trial_id, seed=0, params=config.to_dict(), tags={"pack_id": "k1"}
        )
        results[trial_id] = fit(config, data)
        rows.append(row_of(trial_id, config, results[trial_id]))
        logger.finish(trial_id, rows[-1], state=results[trial_id].state)
        logger.update_study(rows, planned=3, metric="val_accuracy", mode="max")
    logger.close_study()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([logger.experiment_id])}
    return dict(uri=uri, client=client, parent=parent, runs=runs, data=data, trials=trials,
                results=results, logger=logger)  # fmt: skip


def test_trials_are_children_of_the_study_run(study):
    runs, parent = study["runs"], study["parent"]
    assert sorted(runs) == ["lr", "q", "tiny"]
    study_run = runs["tiny"]
    assert study_run.info.run_id == parent and study_run.info.status == "FINISHED"
    assert study_run.data.tags["qsweep.kind"] == "study"
    assert study_run.data.tags["mlflow.note.content"] == "two tiny heads"
    assert study_run.data.params["data.split_seed"] == "3"
    assert study_run.data.params["factors.learning_rate"].startswith("{'low': 0.001")
    assert study_run.data.metrics["trials_planned"] == 3
    assert (
        study_run.data.metrics["trials_done"] == 2 and study_run.data.metrics["trials_failed"] == 0
    )
    best = max(study["results"].items(), key=lambda kv: kv[1].val_accuracy)  # ties: the first
    assert study_run.data.tags["qsweep.best_trial"] == best[0]
    assert study_run.data.metrics["best/val_accuracy"] == pytest.approx(best[1].val_accuracy)
    artifacts = [a.path for a in study["client"].list_artifacts(parent, "spec")]
    assert artifacts == ["spec/tiny.yaml"]
    experiment = study["client"].get_experiment(study["logger"].experiment_id)
    assert experiment.tags["mlflow.note.content"] == "two tiny heads"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # runs table
    for name in ("q", "lr"):
        run = runs[name]
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["pack_id"] == "k1"  # caller's tags
        assert run.info.status == "FINISHED"


def test_embeddings_are_the_dataset_input_of_every_run(study):
    for run in study["runs"].values():
        (given,) = run.inputs.dataset_inputs
        assert given.dataset.name == "demo-paper-embeddings"
        assert len(given.dataset.digest) == 16
        source = json.loads(given.dataset.source)
        assert source["split_seed"] == 3 and source["encoder"] == "fake"
        assert json.loads(given.dataset.profile) == {"train": 16, "val": 16, "test": 16, "dim": 4}
        assert {t.key: t.value for t in given.tags}["mlflow.data.context"] == "training"


def test_description_names_head_qubits_settings_and_best_epoch(study):
    note = study["runs"]["q"].data.tags["mlflow.note.content"]
    result = study["results"]["q"]
    assert "quantum head, 2 qubits" in note
    assert "learning_rate=0.001" in note and "epochs=2" in note
    assert f"best epoch {result.best_epoch} of 2" in note
    failed = trial_description(
        {"trial_id": "x", "head": "mlp", "status": "failed", "error": "boom"}
    )
    assert "mlp head" in failed and "failed: boom" in failed


def test_logged_quantum_model_predicts_like_the_trained_head(study):
    import mlflow.pytorch

    run = study["runs"]["q"]
    model = mlflow.pytorch.load_model(run.data.tags["qsweep.model_uri"])
    config, result, x = study["trials"]["q"], study["results"]["q"], study["data"].x_test
    expected = restore_head(config, 4, result.state)
    with torch.no_grad():
        got, want = model(torch.from_numpy(x)), expected(torch.from_numpy(x))
    assert torch.allclose(got, want)
    accuracy = float((got.argmax(1).numpy() == study["data"].y_test).mean())
    assert accuracy == pytest.approx(result.test_accuracy)  # the trial's own evaluation
    client = study["client"]
    qasm = client.download_artifacts(run.info.run_id, "circuit/pqc.qasm")
    assert open(qasm).read().startswith("OPENQASM 2.0;")
    z = json.load(open(client.download_artifacts(run.info.run_id, "circuit/expval.json")))["z"]
    assert len(z) == 2 and all(-1 <= v <= 1 for v in z)


def test_logged_sklearn_model_is_the_fitted_pipeline(study):
    import mlflow.sklearn

    run = study["runs"]["lr"]
    model = mlflow.sklearn.load_model(run.data.tags["qsweep.model_uri"])
    data, result = study["data"], study["results"]["lr"]
    assert np.mean(model.predict(data.x_test) == data.y_test) == pytest.approx(result.test_accuracy)
    assert model.predict_proba(data.x_test).shape == (16, 2)


def test_models_are_versions_of_the_study_model(study):
    versions = study["client"].search_model_versions("name = 'tiny'")
    assert sorted(v.tags["qsweep.trial_id"] for v in versions) == ["lr", "q"]
    assert {v.run_id for v in versions} == {study["runs"][n].info.run_id for n in ("q", "lr")}


def test_resumed_study_reuses_its_run(study):
    logger = TrialLogger(study["uri"], "tiny")
    assert logger.open_study(SPEC, planned=3) == study["parent"]
    assert study["client"].get_run(study["parent"]).info.status == "RUNNING"
    logger.close_study(interrupted=True)
    assert study["client"].get_run(study["parent"]).info.status == "KILLED"


def test_trial_result_state_stays_out_of_plain_data():
    result = fit(TrialConfig(head="mlp", epochs=1, hidden=0), tiny_data(8, 4))
    assert set(result.state) == {
        k
        for k, _ in restore_head(TrialConfig(head="mlp", hidden=0), 4, result.state)
        .state_dict()
        .items()
    }
    assert "state" not in result.to_dict() and "state" not in result.summary()
    assert all(t.device.type == "cpu" for t in result.state.values())


def test_a_packed_quantum_member_restores_as_its_own_head():
    from model.training import fit_packed

    data = tiny_data(16, 4)
    configs = [
        TrialConfig(head="quantum", qubits=2, epochs=3, batch_size=4, learning_rate=lr, seed=s)
        for lr, s in ((0.05, 0), (0.01, 1))
    ]
    for config, result in zip(configs, fit_packed(configs, data), strict=True):
        head = restore_head(config, 4, result.state)  # (B, d) -> (B, 2), one member
        with torch.no_grad():
            predicted = head(torch.from_numpy(data.x_test)).argmax(1).numpy()
        assert (predicted == data.y_test).mean() == pytest.approx(result.test_accuracy)
        assert sum(v.numel() for v in result.state.values()) == result.n_params

"""orchestrator.tracking on an embedded sqlite store (no server, no Ray)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from model.config import TrialConfig
from model.errors import ServiceError
from orchestrator.cli import main
from orchestrator.tracking import (
    TrialLogger,
    check_tracking_uri,
    default_tracking_uri,
    load_trial_runs,
    log_study_artifacts,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_uri_is_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri(Path("results/s")) == f"sqlite:///{tmp_path}/results/s/mlflow.db"


def test_unreachable_server_fails_before_any_trial(tmp_path, capsys):
    space = tmp_path / "s.yaml"
    space.write_text(
        "name: s\ndata: {source: demo, encoder: minilm, n_per_class: 20}\n"
        "fixed: {epochs: 1}\nfactors: {qubits: [9]}\n"
    )
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    code = main(["run", str(space), "--results", str(tmp_path / "r"), "--mlflow-uri", uri])
    assert code == 2
    err = capsys.readouterr().err
    assert uri in err and "unreachable" in err
    assert not (tmp_path / "r" / "s" / "trials.parquet").exists()
    assert time.monotonic() - start < 60  # did not wait for Ray or data (loose sanity bound)
    with pytest.raises(ServiceError, match="not a tracking URI"):
        check_tracking_uri("ftp://x")


def test_logger_roundtrip_replace_and_reconcile(tmp_path):
    uri = default_tracking_uri(tmp_path)
    logger = TrialLogger(uri, "study")
    params = TrialConfig(qubits=5).to_dict()
    logger.start("p000_s0", point_id="p000", seed=0, params=params)
    logger.log_epoch("p000_s0", {"epoch": 1, "val_accuracy": 0.6, "lr": 0.01}, step=1)
    # a restarted trial (e.g. after a driver crash) replaces its unfinished run
    logger.start("p000_s0", point_id="p000", seed=0, params=params)
    row = {k: v for k, v in params.items() if k != "seed"}
    row.update(
        trial_id="p000_s0",
        point_id="p000",
        seed=0,
        status="completed",
        val_accuracy=0.7,
        test_accuracy=0.65,
        n_params=11,
    )
    logger.finish("p000_s0", row)
    failed = dict(
        row,
        trial_id="p001_s0",
        point_id="p001",
        status="failed",
        error="RuntimeError: x",
        val_accuracy=None,
    )
    # a row in the table without a run (driver killed between table and MLflow) is reconciled
    assert TrialLogger(uri, "study").reconcile([row, failed]) == 1
    df = load_trial_runs(uri, "study").set_index("trial_id")
    assert sorted(df.index) == ["p000_s0", "p001_s0"]
    assert (
        df.loc["p000_s0", "val_accuracy"] == pytest.approx(0.7) and df.loc["p000_s0", "qubits"] == 5
    )
    assert (
        df.loc["p001_s0", "status"] == "failed" and df.loc["p001_s0", "error"] == "RuntimeError: x"
    )
    assert df.loc["p000_s0", "final_linear"] is True or df.loc["p000_s0", "final_linear"] == True  # noqa: E712
    # artifacts land beside the db, not in the working directory
    assert not Path("mlruns").exists() or Path("mlruns").resolve().parent != tmp_path


def test_log_study_artifacts_go_to_the_study_run(tmp_path):
    uri = default_tracking_uri(tmp_path)
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    first = log_study_artifacts(uri, "study", [report], tags={"qsweep.n_trials": 3})
    second = log_study_artifacts(uri, "study", [report])
    assert first == second
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(first)
    assert run.data.tags["qsweep.kind"] == "study" and run.data.tags["qsweep.n_trials"] == "3"
    assert run.info.run_name == "study" and run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(first)] == ["report.md"]
    # a study run opened by a driver is the one the report goes to, under report/
    logger = TrialLogger(uri, "study")
    assert logger.open_study({"name": "study"}) == first
    assert client.get_run(first).info.status == "RUNNING"
    log_study_artifacts(uri, "study", [report], artifact_path="report")
    assert client.get_run(first).info.status == "RUNNING"  # the driver still owns it
    assert [a.path for a in client.list_artifacts(first, "report")] == ["report/report.md"]
    assert (tmp_path / "mlartifacts").is_dir()
    assert load_trial_runs(uri, "study").empty  # the study run is not a trial
    assert load_trial_runs(uri, "no_such_study").empty


def test_ui_finds_the_store_and_builds_the_mlflow_command(tmp_path, capsys):
    from orchestrator.commands.ui import _find_store, ui_command

    assert main(["ui", str(tmp_path / "empty")]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    study = tmp_path / "results" / "s"
    study.mkdir(parents=True)
    (study / "mlflow.db").write_bytes(b"")
    assert _find_store(study) == study / "mlflow.db"
    assert _find_store(tmp_path / "results") == study / "mlflow.db"  # newest study under a root
    cmd = ui_command(study / "mlflow.db", "127.0.0.1", 5123)
    assert Path(cmd[0]).name == "mlflow" and cmd[1] == "ui"
    assert cmd[cmd.index("--backend-store-uri") + 1] == default_tracking_uri(study)
    assert cmd[cmd.index("--registry-store-uri") + 1] == default_tracking_uri(study)
    assert cmd[cmd.index("--port") + 1] == "5123"


def test_epoch_metrics_are_batched_and_none_is_lost(tmp_path, monkeypatch):
    """800 epochs of 2 members cost a few log_batch calls, and every value arrives when the
    trial ends (also for a member abandoned by a graceful stop)."""
    from orchestrator.tracking import runs as tracking_runs

    uri = default_tracking_uri(tmp_path)
    logger = TrialLogger(uri, "study")
    params = TrialConfig(qubits=5).to_dict()
    for t in ("p000_s0", "p000_s1"):
        logger.start(t, point_id="p000", seed=0, params=params)
    calls = []
    real = logger.client.log_batch
    monkeypatch.setattr(
        logger.client, "log_batch", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    monkeypatch.setattr(tracking_runs, "EPOCH_FLUSH_S", 3600.0)
    for epoch in range(1, 801):
        for t in ("p000_s0", "p000_s1"):
            logger.log_epoch(
                t, {"epoch": epoch, "val_accuracy": epoch / 1000, "lr": 0.01}, step=epoch
            )
    assert calls == []  # nothing sent yet: all waits for the flush
    row = {
        "trial_id": "p000_s0",
        "point_id": "p000",
        "seed": 0,
        "status": "completed",
        "val_accuracy": 0.8,
    }
    run_0, run_1 = logger.runs["p000_s0"], logger.runs["p000_s1"]
    logger.finish("p000_s0", row)
    logger.abandon("p000_s1")
    assert len(calls) <= 6  # 1,600 metrics per run in batches of 1,000, + the final metrics
    for run_id in (run_0, run_1):
        history = logger.client.get_metric_history(run_id, "epoch/val_accuracy")
        assert sorted(m.step for m in history) == list(range(1, 801))
        assert max(m.value for m in history) == pytest.approx(0.8)

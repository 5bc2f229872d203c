"""A real MLflow tracking server over HTTP: a study's runs arrive, artifacts upload."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import require_or_skip
from tests.services import free_port, stop_group, wait_healthy
from tests.test_sweep_cli import QSWEEP, ROOT, env, write_space

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    require_or_skip(Path(exe).exists(), "mlflow executable not found")
    work = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "server",
            "--backend-store-uri",
            f"sqlite:///{work / 'server.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],  # fmt: skip
        cwd=work,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    wait_healthy(uri, proc, timeout_s=120)
    yield uri
    stop_group(proc, timeout_s=20)


def test_study_runs_arrive_over_http(mlflow_server, tmp_path):
    space = write_space(tmp_path / "http.yaml", "over_http", [4], epochs=2)
    results = tmp_path / "over_http"
    done = subprocess.run(
        [
            *QSWEEP,
            "run",
            str(space),
            "--results",
            str(results.parent),
            "--mlflow-uri",
            mlflow_server,
        ],
        cwd=ROOT,
        env=env(0.01),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (results / "mlflow.db").exists()  # nothing logged locally
    table = pq.read_table(results / "trials.parquet").to_pylist()

    from orchestrator.tracking import load_trial_runs, log_study_artifacts

    runs = load_trial_runs(mlflow_server, "over_http").set_index("trial_id")
    assert sorted(runs.index) == sorted(r["trial_id"] for r in table)
    for r in table:
        assert runs.loc[r["trial_id"], "val_accuracy"] == pytest.approx(r["val_accuracy"])
        assert runs.loc[r["trial_id"], "learning_rate"] == pytest.approx(r["learning_rate"])

    note = tmp_path / "summary.csv"
    note.write_text("a,b\n1,2\n")
    run_id = log_study_artifacts(mlflow_server, "over_http", [note])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)  # the study's run: its spec and now the file
    assert client.get_run(run_id).data.tags["qsweep.kind"] == "study"
    assert [a.path for a in client.list_artifacts(run_id)] == ["spec", "summary.csv"]
    assert [a.path for a in client.list_artifacts(run_id, "spec")] == ["spec/http.yaml"]

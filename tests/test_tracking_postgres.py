"""A PostgreSQL-backed ``mlflow server`` (what an operator runs for many drivers), for real.

The test starts its own PostgreSQL cluster (Debian ``postgresql``) on a free port, an
``mlflow server`` on it with artifacts in a shared directory, and two studies logging
through it at the same time. All runs land once; none is left RUNNING; models and the
study files reach the shared directory. Both servers are stopped by PID.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import require_or_skip
from tests.services import free_port, stop_group, wait_healthy
from tests.test_sweep_cli import QSWEEP, ROOT, env, write_space

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def wait_until(check, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} not ready after {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def postgres():
    initdb, server = pg_bin("initdb"), pg_bin("postgres")
    require_or_skip(
        bool(initdb and server), "PostgreSQL is not installed (apt-get install postgresql)"
    )
    try:
        import psycopg  # noqa: F401  (the PostgreSQL driver SQLAlchemy uses for postgresql://)
    except ImportError:
        require_or_skip(False, "psycopg is not installed (pip install -e '.[dev]')")
    # Not under pytest's tmp_path: the postgres user must be able to reach the directory.
    data = Path(tempfile.mkdtemp(prefix="qsweep-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    subprocess.run(
        as_postgres([initdb, "-D", str(data), "-U", "qsweep", "--auth=trust", "-E", "UTF8"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    log = open(data / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        as_postgres([server, "-D", str(data), "-p", str(port), "-k", str(data),
                     "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    pid_file = data / "postmaster.pid"
    wait_until(
        lambda: proc.poll() is not None
        or (pid_file.exists() and len(pid_file.read_text().splitlines()) >= 8
            and "ready" in pid_file.read_text()),
        "PostgreSQL",
    )  # fmt: skip
    if proc.poll() is not None:
        pytest.fail(
            f"postgres exited with {proc.returncode}: {(data / 'server.log').read_text()[-2000:]}"
        )
    pid = int(pid_file.read_text().splitlines()[0])
    createdb = pg_bin("createdb")
    subprocess.run(
        as_postgres([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "qsweep", "mlflow"]),
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    yield f"postgresql://qsweep@127.0.0.1:{port}/mlflow"
    os.kill(pid, signal.SIGINT)  # fast shutdown, by the postmaster's own PID
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
    log.close()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_mlflow_server(postgres, tmp_path_factory):
    work = tmp_path_factory.mktemp("pg-mlflow")
    shared = work / "shared" / "mlartifacts"
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    port = free_port()
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", postgres, "--artifacts-destination", str(shared),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        cwd=work, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    wait_healthy(uri, proc, timeout_s=180, log=work / "server.log")
    yield uri, shared
    stop_group(proc, timeout_s=30)


def test_two_studies_log_concurrently_through_postgres(pg_mlflow_server, tmp_path):
    uri, shared = pg_mlflow_server
    drivers = {}
    for name in ("pg_a", "pg_b"):
        space = write_space(tmp_path / f"{name}.yaml", name, [2, 3], epochs=3)
        drivers[name] = subprocess.Popen(
            [*QSWEEP, "run", str(space), "--results", str(tmp_path), "--mlflow-uri", uri],
            cwd=ROOT, env={**env(0.05), "QSWEEP_FAKE_STATE": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    for name, proc in drivers.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}: {out[-3000:]}"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for name in drivers:
        table = pq.read_table(tmp_path / name / "trials.parquet").to_pylist()
        assert len(table) == 4 and all(r["status"] == "completed" for r in table)
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        (parent,) = [r for r in runs if r.data.tags.get("qsweep.kind") == "study"]
        trials = [r for r in runs if r is not parent]
        ids = [r.data.tags["qsweep.trial_id"] for r in trials]
        assert sorted(ids) == sorted(r["trial_id"] for r in table)  # all landed, none twice
        assert {r.info.status for r in runs} == {"FINISHED"}  # none left RUNNING
        assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
        assert parent.data.metrics["trials_done"] == 4
        for run in trials:  # each model is in the shared artifact directory
            model_id = run.data.tags["qsweep.model_uri"].rsplit("/", 1)[-1]
            assert list(shared.rglob(f"{model_id}/artifacts/MLmodel")), model_id
        assert list(shared.rglob(f"{parent.info.run_id}/artifacts/spec/{name}.yaml"))

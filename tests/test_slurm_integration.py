"""A real single-node Slurm (munged + slurmctld + slurmd started here, stopped by PID):
the quickstart study submitted with `qsweep slurm submit` runs as a Ray cluster job and
leaves a results table and MLflow runs; cancel, an unknown partition and a broken
activate command give the states and messages users should see.

Needs root and ``apt-get install -y --no-install-recommends slurmctld slurmd
slurm-client munge``; skipped without them (fails in CI, QSWEEP_REQUIRE_INTEGRATION=1).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.slurm import SlurmClient
from tests.conftest import require_or_skip
from tests.slurm_env import SingleNodeSlurm, can_run

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"
QSWEEP = Path(sys.executable).parent / "qsweep"
ACTIVATE = f"source {Path(sys.executable).parent / 'activate'}"
JOB_TIMEOUT = 240.0  # seconds for the quickstart job (about 75 s here)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    ok, why = can_run()
    require_or_skip(ok, why)
    # A random first job id spreads the per-job Ray ports across test sessions.
    cluster = SingleNodeSlurm.start(
        tmp_path_factory.mktemp("slurm"), first_job_id=random.randint(1000, 90000)
    )
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # for SlurmClient in this process
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()


def qsweep(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (SLURM_CONF and the offline variables are inherited)."""
    return subprocess.run(
        [str(QSWEEP), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def job_id_of(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    first = proc.stdout.splitlines()[0]  # "submitted job 123 (study ...)"
    assert first.startswith("submitted job "), proc.stdout
    return first.split()[2]


def _rows(path: Path) -> list[dict]:
    """The rows of the study of ``path`` (trials.parquet) so far, its journal included."""
    from model.errors import DataError
    from orchestrator.results import read_trials

    try:
        return read_trials(path.parent).to_dict("records")
    except (OSError, ValueError, DataError):  # not written yet
        return []


def test_quickstart_study_runs_as_a_slurm_job_and_survives_a_requeue(slurm, tmp_path: Path) -> None:
    """The real quickstart under Slurm, interrupted after its first trial as a time
    limit would (USR1 to the batch shell), requeued and resumed to the end."""
    require_or_skip(QUICKSTART.exists(), f"{QUICKSTART} not written yet")
    results = tmp_path / "results"
    proc = qsweep(
        "slurm", "submit", str(QUICKSTART), "--nodes", "1", "--cpus-per-node", "2",
        "--results", str(results), "--activate", ACTIVATE,
    )  # fmt: skip
    job_id = job_id_of(proc)
    study = results / "quickstart"
    table_path = study / "trials.parquet"
    log = study / "slurm" / f"slurm-{job_id}.out"
    assert (study / "slurm" / "job.sbatch").is_file()
    client = SlurmClient()

    # Interrupt once the first trial is in the table.
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (before := _rows(table_path)):
        info = client.job(job_id)
        assert not info.finished, log.read_text() if log.exists() else info
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    deadline = time.monotonic() + 60
    while (info := client.show(job_id)).restarts == 0 or info.state != "PENDING":
        assert not info.finished, log.read_text()
        assert time.monotonic() < deadline, f"job not requeued: {info}"
        time.sleep(0.3)

    info = client.wait(job_id, timeout=JOB_TIMEOUT, poll=1.0)
    output = log.read_text() if log.exists() else "(no output file)"
    assert info.state == "COMPLETED" and info.restarts == 1, output
    assert Path(info.stdout_path) == log
    assert "driver exited with status 75" in output and "requeueing job" in output
    # A broken step can still show COMPLETED: check what the job produced.
    assert output.rstrip().endswith(f"study finished; results in {study}")

    table = _rows(table_path)
    assert len(table) == 4, table  # quickstart: 2 qubit counts x 2 learning rates
    assert {row["status"] for row in table} == {"completed"}, table
    assert all(0.0 <= row["val_accuracy"] <= 1.0 for row in table)
    assert len({row["trial_id"] for row in table}) == len(table)  # none repeated
    after = {row["trial_id"]: row for row in table}
    for row in before:  # trials finished before the requeue were not run again
        assert after[row["trial_id"]]["finished_at"] == row["finished_at"]
        assert after[row["trial_id"]]["val_accuracy"] == row["val_accuracy"]

    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name("quickstart")
    assert experiment is not None, "the job created no MLflow experiment 'quickstart'"
    runs = mlflow.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("qsweep.kind") == "study"]
    assert parent.info.status == "FINISHED"  # KILLED at the requeue, reopened and finished
    runs = [r for r in runs if r is not parent]
    trial_ids = [r.data.tags.get("qsweep.trial_id") for r in runs]
    assert sorted(trial_ids) == sorted(after), trial_ids  # one run per trial
    for run in runs:
        row = after[run.data.tags["qsweep.trial_id"]]
        assert run.info.status == "FINISHED"
        # The table's (best-epoch) value is among the values the job logged to MLflow.
        history = mlflow.get_metric_history(run.info.run_id, "val_accuracy")
        assert any(m.value == pytest.approx(row["val_accuracy"]) for m in history), history

    status = qsweep("slurm", "status", job_id)
    assert status.returncode == 0 and f"job {job_id}: COMPLETED" in status.stdout
    assert "requeued: 1 time(s)" in status.stdout
    logs = qsweep("slurm", "logs", job_id)
    assert logs.returncode == 0 and "study finished" in logs.stdout


def _wait_state(job_id: str, wanted: str, timeout: float = 30.0) -> str:
    client = SlurmClient()
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = client.job(job_id).state
        if state == wanted:
            return state
        time.sleep(0.5)
    return state


def test_cancel_a_running_job(slurm, tmp_path: Path) -> None:
    study = tmp_path / "long.yaml"
    study.write_text("name: long\n")
    # The activate command blocks: a job that runs until cancelled.
    proc = qsweep(
        "slurm", "submit", str(study), "--results", str(tmp_path / "results"),
        "--activate", "sleep 600",
    )  # fmt: skip
    job_id = job_id_of(proc)
    assert _wait_state(job_id, "RUNNING") == "RUNNING"
    cancel = qsweep("slurm", "cancel", job_id)
    assert cancel.returncode == 0, cancel.stderr
    assert _wait_state(job_id, "CANCELLED") == "CANCELLED"
    status = qsweep("slurm", "status", job_id)
    assert f"job {job_id}: CANCELLED" in status.stdout


def test_unknown_partition_is_rejected_with_slurms_reason(slurm, tmp_path: Path) -> None:
    study = tmp_path / "p.yaml"
    study.write_text("name: p\n")
    proc = qsweep(
        "slurm", "submit", str(study), "--results", str(tmp_path / "results"),
        "--partition", "nosuchpartition",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout
    assert "invalid partition" in proc.stderr.lower()
    assert "debug*" in proc.stderr  # the partitions that do exist
    assert "Traceback" not in proc.stderr


def test_job_that_dies_early_reports_its_output(slurm, tmp_path: Path) -> None:
    study = tmp_path / "broken.yaml"
    study.write_text("name: broken\n")
    proc = qsweep(
        "slurm", "submit", str(study), "--results", str(tmp_path / "results"),
        "--activate", "source /nonexistent/venv/bin/activate", "--wait",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "FAILED" in proc.stderr
    assert "the activate command failed: source /nonexistent/venv/bin/activate" in proc.stderr


FAKE_DRIVER = """#!/bin/bash
# Stands in for `qsweep run`: the first run stops on USR1 with 75, a rerun finishes.
echo "restart=${SLURM_RESTART_COUNT:-0} args=$*" >> "$(dirname "$0")/runs.txt"
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then exit 0; fi
trap 'echo "got USR1" >> "$(dirname "$0")/runs.txt"; exit 75' USR1
while true; do sleep 0.2; done
"""


def test_time_limit_signal_requeues_and_the_rerun_resumes(slurm, tmp_path: Path) -> None:
    """scancel --signal=USR1 --batch is what --signal=B:USR1@120 delivers before the limit.

    The driver is a stand-in (its own stop/resume is tested with the driver); this checks
    the Slurm side: the trap forwards USR1, the job requeues itself and reruns --resume.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qsweep").write_text(FAKE_DRIVER)
    (bin_dir / "qsweep").chmod(0o755)
    study = tmp_path / "rq.yaml"
    study.write_text("name: rq\n")
    activate = f"{ACTIVATE} && export PATH={bin_dir}:$PATH"
    proc = qsweep(
        "slurm", "submit", str(study), "--results", str(tmp_path / "results"),
        "--activate", activate,
    )  # fmt: skip
    job_id = job_id_of(proc)
    runs = bin_dir / "runs.txt"
    deadline = time.monotonic() + 60
    while not (runs.exists() and "restart=0" in runs.read_text()):
        assert time.monotonic() < deadline, "the driver never started"
        time.sleep(0.3)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)

    client = SlurmClient()
    deadline = time.monotonic() + 60
    # RUNNING -> (REQUEUED, COMPLETING) -> PENDING with Restarts=1
    while (info := client.show(job_id)).restarts == 0 or info.state != "PENDING":
        assert not info.finished, Path(info.stdout_path).read_text()
        assert time.monotonic() < deadline, f"job not requeued: {info}"
        time.sleep(0.3)
    info = client.wait(job_id, timeout=60, poll=0.5)
    log = Path(info.stdout_path).read_text()
    assert info.state == "COMPLETED" and info.restarts == 1, log
    lines = runs.read_text().splitlines()
    assert lines[0].startswith("restart=0") and lines[1] == "got USR1", lines
    assert lines[2].startswith("restart=1") and "--resume" in lines[2].split(), lines
    assert "requeueing job" in log and "study finished" in log
    status = qsweep("slurm", "status", job_id)
    assert "requeued: 1 time(s)" in status.stdout


FAKE_MLFLOW_DRIVER = """#!{python}
# Stands in for `qsweep run`: logs one run to the URI the job passes with --mlflow-uri.
import sys
from mlflow.tracking import MlflowClient

uri = sys.argv[sys.argv.index("--mlflow-uri") + 1]
client = MlflowClient(tracking_uri=uri)
run = client.create_run(client.create_experiment("srv"), run_name="probe")
client.log_metric(run.info.run_id, "x", 42.0)
client.set_terminated(run.info.run_id)
print("logged to", uri)
"""


def test_start_mlflow_server_serves_the_study_sqlite_store(slurm, tmp_path: Path) -> None:
    import socket

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qsweep").write_text(FAKE_MLFLOW_DRIVER.format(python=sys.executable))
    (bin_dir / "qsweep").chmod(0o755)
    spec = tmp_path / "srv.yaml"
    spec.write_text("name: srv\n")
    proc = qsweep(
        "slurm", "submit", str(spec), "--results", str(tmp_path / "results"),
        "--start-mlflow-server", "--activate", f"{ACTIVATE} && export PATH={bin_dir}:$PATH",
    )  # fmt: skip
    job_id = job_id_of(proc)
    info = SlurmClient().wait(job_id, timeout=150, poll=1.0)
    study = tmp_path / "results" / "srv"
    output = Path(info.stdout_path).read_text()
    assert info.state == "COMPLETED", output
    # The server listens on the head's address, on a port chosen free at start-up.
    served = re.search(r"MLflow tracking server at http://([\d.]+):(\d+)", output)
    assert served, output
    host, port = served.group(1), int(served.group(2))
    assert f"logged to http://{host}:{port}" in output
    assert (study / "slurm" / f"mlflow-server-{job_id}.log").is_file()
    with socket.socket() as s:  # the server was stopped with the job
        assert s.connect_ex((host, port)) != 0

    from mlflow.tracking import MlflowClient

    store = MlflowClient(tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    experiment = store.get_experiment_by_name("srv")
    assert experiment is not None, output
    (run,) = store.search_runs([experiment.experiment_id])
    assert run.data.metrics["x"] == 42.0 and run.info.status == "FINISHED"


ARRAY_STUDY = """name: arrayed
description: a 2-shard job array of fake trials
data: {source: demo, encoder: minilm}
fixed: {epochs: 4, qubits: 4}
factors:
  learning_rate: [0.001, 0.002, 0.003, 0.004]
seeds: [0, 1]
max_concurrent: 1
pack_size: 2
"""


def test_job_array_shards_share_one_study_and_a_requeued_shard_resumes_alone(
    slurm, tmp_path: Path
) -> None:
    """`qsweep slurm submit --array 2`: two array tasks, each its own Ray cluster and driver
    on its shard; shard 1 is interrupted (USR1) after its first trial, requeues and resumes
    only itself; the study's readers and MLflow see one study of 8 trials."""
    from orchestrator.results import read_trials, shard_dir

    space = tmp_path / "arrayed.yaml"
    space.write_text(ARRAY_STUDY)
    results = tmp_path / "results"
    env = {
        **os.environ,
        "QSWEEP_FIT": "tests.sweep_fakes:fake_fit",
        "QSWEEP_TEST_DATA": "tests.sweep_fakes:tiny_data",
        "QSWEEP_FAKE_EPOCH_S": "1.0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [str(QSWEEP), "slurm", "submit", str(space), "--array", "2", "--shared",
         "--cpus-per-node", "1", "--results", str(results), "--activate", ACTIVATE],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    job_id = job_id_of(proc)
    assert "an array of 2 shards" in proc.stdout
    study = results / "arrayed"
    client = SlurmClient()
    shard1 = shard_dir(study, (1, 2))
    deadline = time.monotonic() + JOB_TIMEOUT
    while not _rows(shard1 / "trials.parquet"):
        assert time.monotonic() < deadline, "shard 1 finished no trial in time"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job_id}_1"], check=True)
    infos = {t: client.wait(f"{job_id}_{t}", timeout=JOB_TIMEOUT, poll=1.0) for t in (0, 1)}
    logs = {t: Path(i.stdout_path).read_text() for t, i in infos.items()}
    for t, info in infos.items():
        assert info.state == "COMPLETED", logs[t]
        assert f"--shard {t}/2" in logs[t] or f"--shard {t}/2" in " ".join(logs[t].split())
    assert infos[1].restarts == 1 and f"requeueing job {job_id}_1" in logs[1]
    assert infos[0].restarts == 0 and "requeueing" not in logs[0]  # shard 0 ran once

    df = read_trials(study)
    assert len(df) == 8 and df.trial_id.is_unique and (df.status == "completed").all()
    for t in (0, 1):  # each shard's rows in its own table
        own = read_trials(shard_dir(study, (t, 2)))
        assert {int(p[1:]) % 2 for p in own.point_id} == {t} and len(own) == 4

    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("arrayed").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("qsweep.kind") == "study"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_done"] == 8
    trial_ids = sorted(r.data.tags["qsweep.trial_id"] for r in runs if r is not parent)
    assert trial_ids == sorted(df.trial_id)  # one run per trial, none repeated

    status = subprocess.run([str(QSWEEP), "slurm", "status", job_id], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"job array {job_id}: 2 task(s)" in status.stdout
    assert "8 trials finished in all shards (8 completed)" in status.stdout

"""A real two-node Slurm (tests/slurm_netns.py: a network namespace, hostname and slurmd
per node) running `qsweep slurm submit --nodes 2`: the Ray head on node1, a worker on
node2, trials on both; then the faults: two jobs on the same nodes at once (ports),
USR1 (requeue, resume, no trial repeated) and node 2 lost mid-study (Ray retries its
trials on node1, every trial has one completed row and one finished MLflow run).

Trials use the fake fit (QSWEEP_FIT, QSWEEP_TEST_DATA, passed to every node through the
job's environment); Slurm, Ray, MLflow and the job script are real. The figures (time to
recover, requeue time, ports) are printed: run with ``-s`` to see them. Needs root, ip
netns and the Slurm packages; skipped without them unless QSWEEP_REQUIRE_INTEGRATION=1.
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
import yaml

from orchestrator.slurm import SlurmClient
from tests.conftest import require_or_skip
from tests.slurm_netns import MultiNodeSlurm, can_run_multinode
from tests.test_sweep_cli import write_space

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.multinode]

ROOT = Path(__file__).resolve().parents[1]
QSWEEP = Path(sys.executable).parent / "qsweep"
ACTIVATE = f"source {Path(sys.executable).parent / 'activate'}"
JOB_TIMEOUT = 420.0  # seconds for one study job on the loaded 2-core test machine


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    ok, why = can_run_multinode()
    require_or_skip(ok, why)
    slurm = MultiNodeSlurm.start(
        tmp_path_factory.mktemp("slurm2"), nodes=2, first_job_id=random.randint(1000, 90000)
    )
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ.update(SLURM_CONF=str(slurm.conf), PATH=slurm.env["PATH"])
    try:
        yield slurm
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        slurm.stop()


def write_study(path: Path, name: str, qubits: list[int], epochs: int = 4) -> Path:
    """The sweep tests' study, 4 trials at once, one Ray trial per trial (no packing), so
    that trials spread over the nodes."""
    doc = yaml.safe_load(write_space(path, name, qubits, epochs).read_text())
    path.write_text(yaml.safe_dump({**doc, "max_concurrent": 4, "pack_size": 1}))
    return path


def submit(study: Path, results: Path, *extra: str, epoch_s: float = 2.0) -> str:
    """`qsweep slurm submit --nodes 2` with the fake fit; returns the job id."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "QSWEEP_FIT": "tests.sweep_fakes:fake_fit",
        "QSWEEP_TEST_DATA": "tests.sweep_fakes:tiny_data",
        "QSWEEP_FAKE_EPOCH_S": str(epoch_s),
    }
    proc = subprocess.run(
        [str(QSWEEP), "slurm", "submit", str(study), "--nodes", "2", "--results", str(results),
         "--activate", ACTIVATE, *extra],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout.split()[2]  # "submitted job 123 (study ...)"


def rows(study_dir: Path) -> list[dict]:
    """The study's rows so far (trials.parquet with its journal), as readers see them."""
    from model.errors import DataError
    from orchestrator.results import read_trials

    try:
        return read_trials(study_dir).to_dict("records")
    except (OSError, ValueError, DataError):  # not written yet
        return []


def output(study_dir: Path, job_id: str) -> str:
    path = study_dir / "slurm" / f"slurm-{job_id}.out"
    return path.read_text(errors="replace") if path.exists() else "(no output yet)"


def wait_until(condition, what: str, study_dir: Path, job_id: str, timeout: float = JOB_TIMEOUT):
    deadline = time.monotonic() + timeout
    client = SlurmClient()
    while not (value := condition()):
        info = client.job(job_id)
        assert not info.finished, f"job {job_id} {info.state} before {what}:\n" + output(
            study_dir, job_id
        )
        assert time.monotonic() < deadline, f"no {what} in time:\n" + output(study_dir, job_id)
        time.sleep(0.5)
    return value


def check_complete(study_dir: Path, n: int) -> list[dict]:
    """n trials, each with exactly one completed row and one finished MLflow run."""
    table = rows(study_dir)
    ids = [r["trial_id"] for r in table]
    assert len(ids) == n and len(set(ids)) == n, ids
    assert {r["status"] for r in table} == {"completed"}, table
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name(study_dir.name)
    runs = mlflow.search_runs([experiment.experiment_id], max_results=1000)
    (study,) = [r for r in runs if r.data.tags.get("qsweep.kind") == "study"]  # the parent
    trials = [r for r in runs if r.data.tags.get("qsweep.kind") != "study"]
    run_ids = sorted(r.data.tags.get("qsweep.trial_id") for r in trials)
    assert run_ids == sorted(ids), run_ids
    assert {r.data.tags.get("mlflow.parentRunId") for r in trials} == {study.info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    return table


def ports_of(log: str) -> tuple[int, int]:
    found = re.search(r"Ray GCS (\d+), Ray client \S+, MLflow (\d+)", log)
    assert found, log
    return int(found.group(1)), int(found.group(2))


def test_two_concurrent_jobs_on_the_same_nodes_get_their_own_ports(cluster, tmp_path):
    """Two --shared jobs with one CPU per node each run on node1+node2 at once."""
    jobs = {}
    for name in ("left", "right"):
        study = write_study(tmp_path / f"{name}.yaml", name, [4, 5], epochs=3)
        job = submit(study, tmp_path / "results", "--shared", "--cpus-per-node", "1",
                     "--start-mlflow-server", epoch_s=1.0)  # fmt: skip
        jobs[name] = (job, tmp_path / "results" / name)
    client = SlurmClient()
    both_running = False
    deadline = time.monotonic() + JOB_TIMEOUT
    while not both_running:
        states = {name: client.job(job) for name, (job, _) in jobs.items()}
        both_running = all(info.state == "RUNNING" for info in states.values())
        assert not any(i.finished for i in states.values()), states
        assert time.monotonic() < deadline, states
        time.sleep(0.5)
    for job, study_dir in jobs.values():
        info = client.wait(job, timeout=JOB_TIMEOUT, poll=1.0)
        assert info.state == "COMPLETED", output(study_dir, job)
        assert "Ray cluster ready: 2 node(s) (node1, node2)" in output(study_dir, job)
        check_complete(study_dir, 4)
    (left_job, left_dir), (right_job, right_dir) = jobs["left"], jobs["right"]
    left, right = ports_of(output(left_dir, left_job)), ports_of(output(right_dir, right_job))
    print(f"\nconcurrent jobs {left_job} and {right_job} on node1+node2: "
          f"Ray GCS ports {left[0]} / {right[0]}, MLflow ports {left[1]} / {right[1]}")  # fmt: skip
    assert left[0] != right[0] and left[1] != right[1]
    nodes = {r["node"] for d in (left_dir, right_dir) for r in rows(d)}
    assert nodes <= {"node1", "node2"}


def test_usr1_requeues_the_two_node_study_and_no_trial_repeats(cluster, tmp_path):
    study_dir = tmp_path / "results" / "preempt"
    study = write_study(tmp_path / "preempt.yaml", "preempt", [4, 5, 6, 7])
    job = submit(study, tmp_path / "results")
    before = wait_until(lambda: rows(study_dir), "first finished trial", study_dir, job)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    signalled = time.monotonic()
    client = SlurmClient()
    deadline = signalled + 120
    while not ((info := client.show(job)).restarts == 1 and info.state == "RUNNING"):
        assert not info.finished, output(study_dir, job)
        assert time.monotonic() < deadline, f"job not requeued and restarted: {info}"
        time.sleep(0.3)
    running_again = time.monotonic() - signalled
    wait_until(
        lambda: output(study_dir, job).count("Ray cluster ready: 2 node(s)") == 2,
        "two-node cluster after the requeue", study_dir, job,
    )  # fmt: skip
    ready_again = time.monotonic() - signalled
    info = client.wait(job, timeout=JOB_TIMEOUT, poll=1.0)
    log = output(study_dir, job)
    assert info.state == "COMPLETED" and info.restarts == 1, log
    assert "driver exited with status 75" in log and "requeueing job" in log
    table = check_complete(study_dir, 8)
    after = {r["trial_id"]: r for r in table}
    for row in before:  # finished before the requeue: not run again
        assert after[row["trial_id"]]["finished_at"] == row["finished_at"]
    print(f"\nUSR1 to job {job}: running again after {running_again:.0f} s (Slurm holds a "
          f"requeued job until the credential expires, cred_expire=10 s), two-node Ray "
          f"cluster ready after {ready_again:.0f} s; {len(before)} trial(s) done before, "
          f"none repeated")  # fmt: skip
    status = subprocess.run([str(QSWEEP), "slurm", "status", job], capture_output=True,
                            text=True)  # fmt: skip
    assert "requeued: 1 time(s)" in status.stdout


def test_two_node_study_survives_losing_node_2(cluster, tmp_path):
    """Runs last in this module: node2 stays dead afterwards."""
    study_dir = tmp_path / "results" / "lost"
    study = write_study(tmp_path / "lost.yaml", "lost", [4, 5, 6, 7, 8, 9])
    job = submit(study, tmp_path / "results", "--start-mlflow-server")
    uri = wait_until(
        lambda: (m := re.search(r"MLflow tracking server at (http://\S+)", output(study_dir, job)))
        and m.group(1),
        "MLflow server", study_dir, job,
    )  # fmt: skip
    # The server on the head is reached from the worker node by address.
    probe = subprocess.run(
        ["nsenter", f"--net=/run/netns/{cluster.namespaces['node2']}", sys.executable, "-c",
         f"import urllib.request; print(urllib.request.urlopen('{uri}/health').read().decode())"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0 and "OK" in probe.stdout, probe.stderr
    wait_until(lambda: any(r["node"] == "node2" for r in rows(study_dir)),
               "trial finished on node2", study_dir, job)  # fmt: skip
    killed = cluster.kill_node("node2")
    t_kill = time.monotonic()
    done_at_kill = len(rows(study_dir))
    assert killed["slurmd"] and killed["raylet"], killed
    # The driver names the Ray trials it lost; Ray retries them on node1.
    lost = wait_until(
        lambda: re.findall(r"lost trial (\S+) \(", output(study_dir, job)),
        "lost trial", study_dir, job,
    )  # fmt: skip
    status = subprocess.run([str(QSWEEP), "slurm", "status", job], capture_output=True,
                            text=True)  # fmt: skip
    assert re.search(r"trials:  \[lost\] \d+/12 done.*running", status.stdout), status.stdout
    wait_until(lambda: set(lost) <= {r["trial_id"] for r in rows(study_dir)},
               "retried trials", study_dir, job)  # fmt: skip
    recovered = time.monotonic() - t_kill
    info = SlurmClient().wait(job, timeout=JOB_TIMEOUT, poll=1.0)
    finished = time.monotonic() - t_kill
    log = output(study_dir, job)
    assert info.state == "COMPLETED", log
    table = check_complete(study_dir, 12)
    assert {r["node"] for r in table} == {"node1", "node2"}
    assert {r["node"] for r in table if r["trial_id"] in lost} == {"node1"}
    print(f"\nnode2 lost (slurmd {killed['slurmd']}, raylet {killed['raylet']}) with "
          f"{done_at_kill}/12 trials done: {len(lost)} lost trial(s) {', '.join(lost)} "
          f"completed on node1 {recovered:.0f} s after the loss, study complete "
          f"{finished:.0f} s after it")  # fmt: skip

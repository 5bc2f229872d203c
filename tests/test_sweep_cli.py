"""``qsweep run`` as a real process: SIGKILL + --resume, graceful SIGTERM/SIGUSR1 (exit 75),
two studies side by side. Trials use the fake fit and tiny data through the test hooks
QSWEEP_FIT / QSWEEP_TEST_DATA; everything else (Ray, MLflow sqlite, Parquet) is real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from model.config import TrialConfig
from tests.sweep_fakes import expected_val

ROOT = Path(__file__).resolve().parents[1]
QSWEEP = [sys.executable, "-m", "orchestrator.cli"]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def write_space(path: Path, name: str, qubits: list[int], epochs: int = 4) -> Path:
    doc = {
        "name": name,
        "data": {"source": "demo", "encoder": "minilm"},
        "fixed": {"epochs": epochs},
        "factors": {"qubits": qubits, "learning_rate": [0.001, 0.002]},
        "max_concurrent": 2,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def env(epoch_s: float) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        QSWEEP_FIT="tests.sweep_fakes:fake_fit",
        QSWEEP_TEST_DATA="tests.sweep_fakes:tiny_data",
        QSWEEP_FAKE_EPOCH_S=str(epoch_s),
        RAY_AUTH_MODE="disabled",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return out


def start(space: Path, results: Path, *extra: str, epoch_s: float = 0.3) -> subprocess.Popen:
    return subprocess.Popen(
        [*QSWEEP, "run", str(space), "--results", str(results.parent), *extra],
        cwd=ROOT,
        env=env(epoch_s),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: Ray's processes can be cleaned up by pgid
    )


def rows(results: Path) -> list[dict]:
    """The study's rows so far (trials.parquet with its journal), as readers see them."""
    from orchestrator.results import has_table, read_trials

    return read_trials(results).to_dict("records") if has_table(results) else []


def wait_for_rows(proc: subprocess.Popen, results: Path, n: int, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(rows(results)) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"driver exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {n} rows in {results} after {timeout} s")


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def check_complete(results: Path, name: str, n: int) -> None:
    table = rows(results)
    ids = [r["trial_id"] for r in table]
    assert len(ids) == len(set(ids)) == n
    for r in table:
        assert r["status"] == "completed"
        cfg = TrialConfig(
            qubits=r["qubits"], learning_rate=r["learning_rate"], epochs=r["epochs"], seed=r["seed"]
        )
        assert r["val_accuracy"] == pytest.approx(expected_val(cfg))
    from orchestrator.tracking import default_tracking_uri, load_trial_runs

    runs = load_trial_runs(default_tracking_uri(results), name)
    assert sorted(runs.trial_id) == sorted(ids)  # one run per trial: no duplicates, none missing
    assert (runs.status == "completed").all()


def test_sigkill_then_resume_runs_each_trial_once(tmp_path):
    space = write_space(tmp_path / "kill.yaml", "kill", [4, 5, 6])
    results = tmp_path / "kill"
    proc = start(space, results)
    try:
        wait_for_rows(proc, results, 1)
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies without any cleanup
        proc.wait(timeout=30)
    finally:
        kill_group(proc)  # and its local Ray with it, as on a reboot
    before = {r["trial_id"]: r for r in rows(results)}
    assert 1 <= len(before) < 6

    refused = subprocess.run(
        [*QSWEEP, "run", str(space), "--results", str(results.parent)],
        cwd=ROOT,
        env=env(0.01),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "--resume" in refused.stderr

    done = subprocess.run(
        [*QSWEEP, "run", str(space), "--results", str(results.parent), "--resume"],
        cwd=ROOT,
        env=env(0.05),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check_complete(results, "kill", 6)
    after = {r["trial_id"]: r for r in rows(results)}
    for tid, r in before.items():  # finished trials were not run again
        assert after[tid]["finished_at"] == r["finished_at"]


def test_sigterm_stops_gracefully_with_75_and_resumes(tmp_path):
    space = write_space(tmp_path / "term.yaml", "term", [4, 5, 6, 7])
    results = tmp_path / "term"
    proc = start(space, results, epoch_s=0.5)
    try:
        wait_for_rows(proc, results, 1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    assert proc.returncode == 75, err[-3000:]
    assert "interrupted; rerun with --resume" in err
    partial = rows(results)
    assert 1 <= len(partial) < 8 and all(r["status"] == "completed" for r in partial)
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import default_tracking_uri

    client = MlflowClient(default_tracking_uri(results))
    runs = client.search_runs([client.get_experiment_by_name("term").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("qsweep.kind") == "study"]
    assert parent.info.status == "KILLED"  # the interrupted study's run: --resume reopens it
    runs = [r for r in runs if r is not parent]
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}  # cut-short trials: KILLED
    assert sum(r.info.status == "FINISHED" for r in runs) == len(partial)

    done = subprocess.run(
        [*QSWEEP, "run", str(space), "--results", str(results.parent), "--resume"],
        cwd=ROOT,
        env=env(0.05),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    check_complete(results, "term", 8)


def test_sigusr1_and_two_studies_side_by_side(tmp_path):
    a_space = write_space(tmp_path / "a.yaml", "alpha", [4, 5, 6, 7])
    b_space = write_space(tmp_path / "b.yaml", "beta", [4], epochs=2)
    a_dir, b_dir = tmp_path / "alpha", tmp_path / "beta"  # <root>/<study>
    a = start(a_space, a_dir, "--max-concurrent", "1", epoch_s=0.5)
    b = start(b_space, b_dir, "--max-concurrent", "1", epoch_s=0.05)
    try:
        wait_for_rows(a, a_dir, 1)
        a.send_signal(signal.SIGUSR1)
        _, a_err = a.communicate(timeout=120)
        _, b_err = b.communicate(timeout=300)
    finally:
        kill_group(a)
        kill_group(b)
    assert a.returncode == 75 and "interrupted; rerun with --resume" in a_err, a_err[-3000:]
    assert len(rows(a_dir)) < 8
    assert b.returncode == 0, b_err[-3000:]
    check_complete(b_dir, "beta", 2)
    assert "[beta]" in b_err and "2/2 done" in b_err  # the progress line a person follows
    # each study has its own store: no alpha runs in beta's db
    from orchestrator.tracking import default_tracking_uri, load_trial_runs

    assert load_trial_runs(default_tracking_uri(b_dir), "alpha").empty


def test_2000_trials_killed_twice_resume_without_loss_or_duplicates(tmp_path):
    """SIGKILL (driver and its Ray) twice in a 2,000-trial study, --resume each time: every
    trial ends with exactly one row and one finished MLflow run."""
    doc = {
        "name": "many",
        "data": {"source": "demo", "encoder": "minilm"},
        "fixed": {"epochs": 1, "qubits": 4},
        "factors": {"learning_rate": [round(1e-5 * (i + 1), 8) for i in range(1000)]},
        "seeds": [0, 1],
        "max_concurrent": 2,
        "mlflow": {"register": "none"},
    }
    space = tmp_path / "many.yaml"
    space.write_text(yaml.safe_dump(doc))
    results = tmp_path / "many"
    for kill_at in (400, 1200):
        proc = start(space, results, *(["--resume"] if kill_at > 400 else []), epoch_s=0.0)
        try:
            wait_for_rows(proc, results, kill_at, timeout=900)
        finally:
            kill_group(proc)  # the driver and its local Ray, without any cleanup
            proc.wait(timeout=60)
        assert kill_at <= len(rows(results)) < 2000
    done = subprocess.run(
        [*QSWEEP, "run", str(space), "--results", str(results.parent), "--resume"],
        cwd=ROOT, env=env(0.0), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    check_complete(results, "many", 2000)


def test_a_local_run_keeps_ray_token_auth_and_does_not_warn(tmp_path):
    """No --address: Ray's token authentication stays on (a token in ~/.ray) and its
    'Token authentication is enabled' warning is not printed on every run."""
    space = write_space(tmp_path / "auth.yaml", "auth", [3])
    run_env = {k: v for k, v in env(0.05).items() if k != "RAY_AUTH_MODE"}
    run_env["HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [*QSWEEP, "run", str(space), "--results", str(tmp_path / "r")], cwd=ROOT, env=run_env,
        capture_output=True, text=True, timeout=600, start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Token authentication" not in done.stderr, done.stderr[-3000:]
    assert (tmp_path / "home" / ".ray" / "auth_token").is_file()
    check_complete(tmp_path / "r" / "auth", "auth", 2)

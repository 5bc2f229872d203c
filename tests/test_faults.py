"""Faults a long study meets, each with one clear outcome and nothing lost (issue rows: an
MLflow outage, a full disk). The real CLI in a subprocess with the fake fit, a real
``mlflow server`` stopped and restarted on its port, a real tmpfs filled mid-study."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_or_skip
from tests.services import free_port, stop_group, wait_healthy
from tests.test_sweep_cli import QSWEEP, ROOT, check_complete, env, rows, write_space

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _server(work: Path, port: int) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    require_or_skip(Path(exe).exists(), "mlflow executable not found")
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", f"sqlite:///{work / 'server.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=work, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    wait_healthy(uri, proc, timeout_s=180)
    return proc, uri


def _study(tmp_path: Path, name: str) -> tuple[Path, Path]:
    space = write_space(tmp_path / f"{name}.yaml", name, [4, 5, 6, 7], epochs=10)
    return space, tmp_path / name


def _run(space, results, *extra, epoch_s=0.5, extra_env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [*QSWEEP, "run", str(space), "--results", str(results.parent), "--pack-size", "1",
         *extra],
        cwd=ROOT, env={**env(epoch_s), **(extra_env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _wait_rows(proc, results, n, timeout=300.0) -> None:
    deadline = time.monotonic() + timeout
    while len(rows(results)) < n:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"no {n} rows after {timeout} s"
        time.sleep(0.3)


def _runs(uri: str, name: str):
    from orchestrator.tracking import load_trial_runs

    return load_trial_runs(uri, name)


def test_mlflow_outage_training_goes_on_and_runs_catch_up(tmp_path):
    """The server dies after 2 rows and comes back ~20 s later on the same port: the study
    goes on, says once that it buffers and once that MLflow is back, retrains nothing, and
    every trial ends with one finished run."""
    work = tmp_path / "server"
    work.mkdir()
    port = free_port()
    server, uri = _server(work, port)
    space, results = _study(tmp_path, "outage")
    proc = _run(space, results, "--mlflow-uri", uri)
    try:
        _wait_rows(proc, results, 2)
        stop_group(server, timeout_s=0)  # SIGKILL: the server is gone at once
        time.sleep(20)
        server, _ = _server(work, port)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            stop_group(proc, timeout_s=0)
    try:
        assert proc.returncode == 0, err[-3000:]
        assert err.count("is unreachable") == 1 and "reachable again" in err, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert "View run" not in out  # MLflow's per-run lines stay off
        table = rows(results)
        assert all(r["attempts"] == 1 for r in table)  # a logging failure retrains nothing
        assert all(r["wall_time_s"] < 60 for r in table)  # 10 epochs x 0.5 s, not the outage
        check_complete_over(uri, results, "outage", 8)
    finally:
        stop_group(server, timeout_s=10)


def check_complete_over(uri: str, results: Path, name: str, n: int) -> None:
    table = rows(results)
    ids = sorted(r["trial_id"] for r in table)
    assert len(ids) == len(set(ids)) == n and all(r["status"] == "completed" for r in table)
    runs = _runs(uri, name)
    assert sorted(runs.trial_id) == ids  # one run per trial: none lost, none duplicated
    assert (runs.status == "completed").all()


def test_mlflow_away_past_the_limit_stops_cleanly_and_resume_reconciles(tmp_path):
    work = tmp_path / "server"
    work.mkdir()
    port = free_port()
    server, uri = _server(work, port)
    space, results = _study(tmp_path, "away")
    proc = _run(space, results, "--mlflow-uri", uri, extra_env={"QSWEEP_MLFLOW_OUTAGE_S": "8"})
    try:
        _wait_rows(proc, results, 1)
        stop_group(server, timeout_s=0)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            stop_group(proc, timeout_s=0)
    assert proc.returncode == 75, err[-3000:]
    assert "has been unreachable for" in err and "--resume" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    before = {r["trial_id"]: r for r in rows(results)}
    assert 1 <= len(before) < 8
    server, _ = _server(work, port)
    try:
        done = subprocess.run(
            [*QSWEEP, "run", str(space), "--results", str(results.parent), "--resume",
             "--mlflow-uri", uri],
            cwd=ROOT, env=env(0.05), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        check_complete_over(uri, results, "away", 8)
        after = {r["trial_id"]: r for r in rows(results)}
        for tid, r in before.items():  # kept, not retrained
            assert after[tid]["finished_at"] == r["finished_at"]
    finally:
        stop_group(server, timeout_s=10)


def test_full_disk_stops_with_one_line_and_resume_completes(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                             capture_output=True, text=True)  # fmt: skip
    require_or_skip(mounted.returncode == 0, f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        space, _ = _study(tmp_path, "full")
        results = mount / "full"
        proc = _run(space, results)
        fill = mount / "fill"
        try:
            _wait_rows(proc, results, 2)
            subprocess.run(["dd", "if=/dev/zero", f"of={fill}", "bs=1M"], capture_output=True)
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                stop_group(proc, timeout_s=0)
        assert proc.returncode == 75, err[-3000:]
        lines = [x for x in err.splitlines() if x.startswith("qsweep run: stopped:")]
        assert len(lines) == 1 and "the disk is full at" in lines[0] and "--resume" in lines[0]
        assert "Traceback" not in err, err[-3000:]
        before = rows(results)
        assert len(before) >= 2
        fill.unlink()
        done = subprocess.run(
            [*QSWEEP, "run", str(space), "--results", str(mount), "--resume"],
            cwd=ROOT, env=env(0.05), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        check_complete(results, "full", 8)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)

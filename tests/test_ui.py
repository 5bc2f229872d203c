"""``qsweep ui`` owns its MLflow server: a busy port is an error, the URL is printed once
the server answers, and SIGTERM stops the whole server (a real ``mlflow ui``)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.commands.ui import _group_alive, port_in_use
from tests.services import free_port, stop_group
from tests.test_sweep_cli import QSWEEP, ROOT


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A study directory whose mlflow.db holds the study's experiment and parent run."""
    from orchestrator.tracking import TrialLogger, default_tracking_uri

    study = tmp_path / "s"
    study.mkdir()
    TrialLogger(default_tracking_uri(study), "s").open_study({"name": "s"})
    return study


def test_a_busy_port_is_an_error_before_anything_starts(store, capsys):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        assert main(["ui", str(store), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port 0" in err
    assert "http://" not in err  # no URL for a server that is not there
    assert not port_in_use("127.0.0.1", port)  # closed again


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # field 4 of stat: the parent's pid
                out.append(int(entry.name))
    return out


@pytest.mark.integration
@pytest.mark.slow
def test_url_after_health_busy_second_ui_and_sigterm_stops_the_server(store, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*QSWEEP, "ui", str(store), "--port", "0"], cwd=tmp_path, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "qsweep ui: study http" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        text = log.read_text()
        port = int(re.search(r"using free port (\d+)", text).group(1))
        # printed only once the server answers: /health at once, no retry
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200
        assert re.search(rf"study http://127.0.0.1:{port}/#/experiments/\d+/runs", text)

        second = subprocess.run(
            [*QSWEEP, "ui", str(store), "--port", str(port)], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2 and "already in use" in second.stderr, second.stderr

        (server,) = _children(proc.pid)  # the mlflow command, leader of its own group
        assert os.getpgid(server) == server != os.getpgid(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)  # to qsweep ui's PID only, as a service manager does
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert not _group_alive(server), "the MLflow server outlived qsweep ui"
        assert not port_in_use("127.0.0.1", port)
    finally:
        stop_group(proc, timeout_s=5)


def test_free_port_helper_is_free():  # the tests' own helper agrees with qsweep ui's check
    assert not port_in_use("127.0.0.1", free_port())

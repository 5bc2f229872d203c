"""Helpers for tests that start real services (MLflow servers, PostgreSQL, ``qsweep ui``):
a free port, waiting for ``/health``, stopping a process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(
    url: str, proc: subprocess.Popen, *, timeout_s: float = 120.0, log: Path | None = None
) -> None:
    """Poll ``url/health`` until it answers 200; fail when ``proc`` exits or time runs out."""
    tail = lambda: log.read_text()[-3000:] if log and log.exists() else ""  # noqa: E731
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:3]} exited with {proc.returncode}: {tail()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    stop_group(proc, timeout_s=0)
    pytest.fail(f"{url} not healthy after {timeout_s:.0f} s: {tail()}")


def stop_group(proc: subprocess.Popen, *, timeout_s: float = 30.0) -> None:
    """SIGTERM the process group ``proc`` leads (started with start_new_session), SIGKILL
    it when it has not exited after ``timeout_s``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM if timeout_s > 0 else signal.SIGKILL)
    try:
        proc.wait(timeout=max(timeout_s, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

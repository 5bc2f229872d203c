"""``qsweep ui [RESULTS_DIR]``: browse a study's MLflow store (``mlflow ui``).

qsweep ui results/quickstart --port 5000     # prints http://127.0.0.1:5000/#/experiments/<id>/runs

The study's experiment holds one parent run named after the study; expand it to see
the trial runs (each with its model, circuit and dataset).

The MLflow server runs in its own process group, owned by this command: the URL is
printed once the server answers ``/health``; SIGINT, SIGTERM and SIGHUP stop the whole
group (SIGTERM first, SIGKILL after ``STOP_S``), and so does any exit of this command. A
busy port is an error before anything starts; ``--port 0`` picks a free one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["register", "run", "ui_command", "port_in_use"]

HEALTH_TIMEOUT_S = 300.0  # mlflow ui answers after about 16-22 s on 2 cores, more under load
STOP_S = 15.0  # SIGTERM to SIGKILL


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ui",
        help="start the MLflow UI on a study's store (results/<study>/mlflow.db)",
        description="Start `mlflow ui` on the embedded store of a study directory; print its "
        "URL once it answers; stop it with Ctrl+C or SIGTERM.",
    )
    p.add_argument(
        "results_dir",
        nargs="?",
        default="results",
        help="study directory holding mlflow.db (default: results; the newest study in it is used)",
    )
    p.add_argument("--port", type=int, default=5000, help="port (default 5000; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.set_defaults(func=run)


def _find_store(results_dir: Path) -> Path:
    from model.errors import ConfigError

    direct = results_dir / "mlflow.db"
    if direct.is_file():
        return direct
    nested = sorted(results_dir.glob("*/mlflow.db"), key=lambda p: p.stat().st_mtime, reverse=True)
    if nested:
        return nested[0]
    raise ConfigError(
        f"no MLflow store in {results_dir} (looked for {direct} and {results_dir}/*/mlflow.db); "
        "run a study first (qsweep run SPACE.yaml) or pass its results directory."
    )


def ui_command(store: Path, host: str, port: int) -> list[str]:
    from orchestrator.tracking import default_tracking_uri

    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    uri = default_tracking_uri(store.parent)
    return [
        mlflow,
        "ui",
        "--backend-store-uri",
        uri,
        "--registry-store-uri",  # named, so mlflow prints no "Registry store URI not provided"
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]


def experiment_url(store: Path, root: str) -> str | None:
    """``ROOT/#/experiments/ID/runs`` (the study's runs) for the study whose store is
    ``store``; None if it has none."""
    from orchestrator.results import study_name
    from orchestrator.tracking import default_tracking_uri, experiment_id

    found = experiment_id(default_tracking_uri(store.parent), study_name(store.parent))
    return f"{root}/#/experiments/{found}/runs" if found else None


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on ``host:port`` (a bind with SO_REUSEADDR fails, as a
    server's would; connections in TIME_WAIT do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _probe_host(host: str) -> str:
    """Where to ask for /health: the loopback for a server on every interface."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class _Stop(Exception):
    """A signal asked qsweep ui to stop."""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after STOP_S; reap the
    leader. Signals to this process are ignored meanwhile, so a second Ctrl+C cannot
    leave the server half stopped."""
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {s: signal.signal(s, signal.SIG_IGN) for s in stops}
    try:
        for sig, wait_s in ((signal.SIGTERM, STOP_S), (signal.SIGKILL, 10.0)):
            if not _group_alive(proc.pid):
                break
            os.killpg(proc.pid, sig)
            deadline = time.monotonic() + wait_s
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                proc.poll()  # reaps the leader once it has exited
                time.sleep(0.1)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def run(args: argparse.Namespace) -> int:
    from model.errors import ConfigError, ServiceError

    if not 0 <= args.port < 65536:
        raise ConfigError(
            f"--port {args.port} is not a TCP port; allowed: 1..65535, or 0 (any free port)."
        )
    store = _find_store(Path(args.results_dir))
    port = args.port
    if port == 0:
        port = _free_port(args.host)
        print(f"qsweep ui: --port 0: using free port {port}", file=sys.stderr)
    elif port_in_use(args.host, port):
        raise ServiceError(
            f"port {port} on {args.host} is already in use (another qsweep ui or MLflow "
            f"server?); stop that one, or pass another --port, e.g. --port {_free_port(args.host)} "
            "(free now), or --port 0 for any free port."
        )
    root = f"http://{args.host}:{port}"
    url = experiment_url(store, root)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    print(f"qsweep ui: starting the MLflow UI for {store} on {args.host}:{port} ...",
          file=sys.stderr, flush=True)  # fmt: skip

    def on_signal(signum: int, frame) -> None:
        raise _Stop(signal.Signals(signum).name)

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    handlers = {s: signal.signal(s, on_signal) for s in stops}
    proc = None
    try:
        proc = subprocess.Popen(ui_command(store, args.host, port), env=env, start_new_session=True)
        health = f"http://{_probe_host(args.host)}:{port}/health"
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not _healthy(health):
            if proc.poll() is not None:
                raise ServiceError(
                    f"the MLflow UI exited with status {proc.returncode} before it answered "
                    f"{health}; its output is above."
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"the MLflow UI did not answer {health} in {HEALTH_TIMEOUT_S:g} s."
                )
            time.sleep(0.25)
        print(f"qsweep ui: MLflow UI for {store} at {root} (Ctrl+C to stop)", file=sys.stderr)
        if url:
            print(f"qsweep ui: study {url}", file=sys.stderr, flush=True)
        code = proc.wait()
        if code != 0:
            raise ServiceError(f"the MLflow UI exited with status {code}; its output is above.")
        return 0
    except _Stop as stop:
        print(f"qsweep ui: {stop}: stopping the MLflow UI", file=sys.stderr)
        return 0
    finally:
        if proc is not None:
            _stop_group(proc)
        for s, h in handlers.items():
            signal.signal(s, h)

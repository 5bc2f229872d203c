"""``qsweep ui [RESULTS_DIR]``: browse a study's MLflow store (``mlflow ui``).

qsweep ui results/quickstart --port 5000     # prints http://127.0.0.1:5000/#/experiments/<id>/runs

The study's experiment holds one parent run named after the study; expand it to see
the trial runs (each with its model, circuit and dataset).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["register", "run", "ui_command"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ui",
        help="start the MLflow UI on a study's store (results/<study>/mlflow.db)",
        description="Start `mlflow ui` on the embedded store of a study directory.",
    )
    p.add_argument(
        "results_dir",
        nargs="?",
        default="results",
        help="study directory holding mlflow.db (default: results; the newest study in it is used)",
    )
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
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
    return [
        mlflow,
        "ui",
        "--backend-store-uri",
        default_tracking_uri(store.parent),
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


def run(args: argparse.Namespace) -> int:
    from model.errors import ConfigError

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a TCP port; allowed: 1..65535.")
    store = _find_store(Path(args.results_dir))
    cmd = ui_command(store, args.host, args.port)
    root = f"http://{args.host}:{args.port}"
    print(f"qsweep ui: MLflow UI for {store} at {root} (Ctrl+C to stop)", file=sys.stderr)
    url = experiment_url(store, root)
    if url:
        print(f"qsweep ui: study {url}", file=sys.stderr, flush=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0

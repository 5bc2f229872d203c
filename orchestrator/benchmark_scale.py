"""How many trials per second one driver keeps up with: zero-work trials through the real
driver, Ray Tune, MLflow (SQLite, or an HTTP server) and results table, with models.

    python -m orchestrator.benchmark_scale                     # N = 1,000 and 10,000, packed + unpacked, SQLite
    python -m orchestrator.benchmark_scale --trials 1000 --store http --pack 16
    python -m orchestrator.benchmark_scale --trials 100000 --pack 16      # the 100,000-trial run

Each configuration runs in a fresh process (so its peak RSS is the driver's own); each
trial is :func:`zero_fit`: ``--epochs`` epochs reported at once and a tiny real head
(``mlp``, hidden 0, 4 inputs) as its trained state, so rows, per-epoch curves, MLflow runs,
model files and registry versions are all real. Printed per configuration: trials per
second end to end (Ray start to the last MLflow write), driver milliseconds per trial
split by phase, and the driver's peak RSS; then the figure ``--dry-run`` uses.

Phases: ``tune`` = Tune's own event loop (wall time of ``Tuner.fit`` less the callback's
work below), ``row`` (building the row), ``table`` (the journal append), ``enqueue``
(handing the trial to the MLflow thread); the MLflow thread's own seconds are shown
per kind (``write`` = finished runs in bulk, ``study``, ``model`` = registry) and
``drain`` = how long the study waited for it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from model.config import TrialConfig
from model.types import EmbeddedSplits, TrialResult

DIM = 4


def zero_fit(config: TrialConfig, data: EmbeddedSplits, on_epoch=None) -> TrialResult:
    """No training: ``QSWEEP_SCALE_EPOCHS`` epochs reported at once, a real untrained head."""
    import torch

    from model.heads.factory import build_head

    epochs = int(os.environ.get("QSWEEP_SCALE_EPOCHS", "2"))
    for epoch in range(1, epochs + 1):
        if on_epoch is not None:
            acc = 0.5 + 0.1 * config.learning_rate * epoch
            on_epoch({"epoch": epoch, "train_loss": 1.0 / epoch, "train_accuracy": acc,
                      "val_loss": 1.0 / epoch, "val_accuracy": acc, "lr": config.learning_rate,
                      "elapsed_s": 0.0})  # fmt: skip
    torch.manual_seed(config.seed)
    head = build_head(config, DIM)
    state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    val = 0.5 + 0.1 * config.learning_rate * epochs
    return TrialResult(val, val - 0.01, epochs, epochs, 10, 0.0, "cpu", state=state)


def _one(args: argparse.Namespace) -> dict:
    """One configuration in this process; returns the figures as a dict."""
    os.environ["QSWEEP_SCALE_EPOCHS"] = str(args.epochs)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from orchestrator.results import read_trials
    from orchestrator.spec import spec_from_dict
    from orchestrator.tune_driver import run_study

    n = args.trials
    spec = spec_from_dict(
        {
            "name": "scale",
            "fixed": {"head": "mlp", "hidden": 0, "epochs": args.epochs},
            # one point per trial: packs group points that differ only in learning_rate
            "factors": {"learning_rate": [round(1e-4 * (i + 1), 8) for i in range(n)]},
            "max_concurrent": args.concurrency,
            "pack_size": args.pack,
            "mlflow": {"register": args.register, "register_top": 10},
        }
    )
    x = np.zeros((4, DIM), dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    data = EmbeddedSplits(x, y, x, y, x, y, encoder="none", source="synthetic")
    with tempfile.TemporaryDirectory(prefix="qsweep-scale-") as tmp:
        study_dir = Path(tmp) / "scale"
        server = None
        uri = None
        if args.store == "http":
            server, uri = _start_server(Path(tmp))
        try:
            t0 = time.perf_counter()
            outcome = run_study(
                spec, study_dir=study_dir, tracking_uri=uri, fit="orchestrator.benchmark_scale:zero_fit",
                data=data, max_concurrent=args.concurrency, stream=open(os.devnull, "w"),
            )  # fmt: skip
            wall = time.perf_counter() - t0
            # the driver's peak, before this benchmark reads the table and the runs back
            # (counting 10,000 runs through MLflow's store alone builds ~0.5 M ORM objects)
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows = read_trials(study_dir)
            runs = _count_runs(outcome.tracking_uri)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    phases = outcome.phases
    callback_s = sum(v for k, v in phases.items() if k.startswith("driver_"))
    return {
        "trials": n,
        "pack": args.pack,
        "store": args.store,
        "register": args.register,
        "rows": int((rows.status == "completed").sum()),
        "runs": runs,
        "wall_s": wall,
        "fit_s": phases.get("tune_fit_s", 0.0),
        "tune_s": phases.get("tune_fit_s", 0.0) - callback_s,
        "row_s": phases.get("driver_row_s", 0.0),
        "table_s": phases.get("driver_table_s", 0.0),
        "enqueue_s": phases.get("driver_enqueue_s", 0.0),
        "drain_s": phases.get("mlflow_drain_s", 0.0),
        "mlflow": {k[7:-2]: v for k, v in phases.items() if k.startswith("mlflow_") and k != "mlflow_drain_s"},
        "rss_mb": rss_mb,
    }  # fmt: skip


def _start_server(tmp: Path):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2):
                return proc, uri
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("the MLflow server did not start in 120 s")


def _count_runs(uri: str) -> int:
    from orchestrator.tracking.store import _all_runs, _client

    client = _client(uri)
    experiment = client.get_experiment_by_name("scale")
    runs = _all_runs(client, experiment.experiment_id)
    return sum(r.info.status == "FINISHED" and "qsweep.trial_id" in r.data.tags for r in runs)


def _line(r: dict) -> str:
    n = r["trials"]
    ms = {k: 1000 * r[f"{k}_s"] / n for k in ("tune", "row", "table", "enqueue", "drain")}
    mlflow = ", ".join(f"{k} {1000 * v / n:.2f}" for k, v in sorted(r["mlflow"].items()))
    return (
        f"N={n:>6} pack={r['pack']:>3} {r['store']:>6} register={r['register']}: "
        f"{n / r['wall_s']:7.1f} trials/s ({r['wall_s']:.1f} s wall, {1000 * r['wall_s'] / n:.2f} ms/trial; "
        f"{r['rows']} rows, {r['runs']} runs) | driver ms/trial: tune {ms['tune']:.2f}, "
        f"row {ms['row']:.3f}, table {ms['table']:.3f}, enqueue {ms['enqueue']:.3f}, "
        f"drain {ms['drain']:.2f} | MLflow thread ms/trial: {mlflow} | peak RSS {r['rss_mb']:.0f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--pack", type=int, nargs="+", default=[1, 16],
                        help="trials per Ray trial (1: unpacked)")  # fmt: skip
    parser.add_argument("--store", nargs="+", choices=("sqlite", "http"), default=["sqlite"])
    parser.add_argument("--register", choices=("best", "all", "none"), default="best")
    parser.add_argument("--epochs", type=int, default=2, help="epochs reported per trial")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-unpacked", type=int, default=1000,
                        help="skip unpacked runs above this N (Tune's own cost, minutes)")  # fmt: skip
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        args.trials, args.pack, args.store = args.trials[0], args.pack[0], args.store[0]
        print(json.dumps(_one(args)))
        return 0
    print(f"benchmark_scale: {os.cpu_count()} cores, {args.epochs} epochs per trial, "
          f"concurrency {args.concurrency}, models: register {args.register}", flush=True)  # fmt: skip
    results = []
    for store in args.store:
        for n in args.trials:
            for pack in args.pack:
                if pack == 1 and n > args.max_unpacked:
                    continue
                cmd = [sys.executable, "-m", "orchestrator.benchmark_scale", "--one",
                       "--trials", str(n), "--pack", str(pack), "--store", store,
                       "--register", args.register, "--epochs", str(args.epochs),
                       "--concurrency", str(args.concurrency)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"N={n} pack={pack} {store}: failed\n{out.stderr[-3000:]}", flush=True)
                    continue
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(result)
                print(_line(result), flush=True)
    packed = [r for r in results if r["pack"] > 1 and r["store"] == "sqlite"]
    if packed:
        big = max(packed, key=lambda r: r["trials"])
        print(f"driver seconds per trial (packed, SQLite, N={big['trials']}): "
              f"{big['wall_s'] / big['trials']:.4f} (orchestrator.plan.DRIVER_S_PER_TRIAL)")  # fmt: skip
    if len({r["trials"] for r in packed}) > 1:
        a, b = sorted(packed, key=lambda r: r["trials"])[:: len(packed) - 1]
        growth = (b["rss_mb"] - a["rss_mb"]) / (b["trials"] - a["trials"]) * 10_000
        print(f"driver peak RSS growth: {growth:.1f} MB per 10,000 trials "
              f"({a['rss_mb']:.0f} MB at N={a['trials']}, {b['rss_mb']:.0f} MB at N={b['trials']})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

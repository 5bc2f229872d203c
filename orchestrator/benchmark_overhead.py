"""Orchestration overhead of ``qsweep run``: a study of synthetic trials that burn CPU.

    python -m orchestrator.benchmark_overhead                 # 20 trials x 60 s, 2 concurrent (~10 min)
    python -m orchestrator.benchmark_overhead --seconds 15    # shorter

Each trial is a fake ``fit`` that keeps one core busy for ``--seconds`` (in 10 "epochs",
each reported through Ray Tune and logged to MLflow like a real trial). Printed: the
study's wall time against the ideal ``sum(trial times) / concurrency`` and their ratio
(the orchestration overhead: Ray start, scheduling, per-epoch reports, MLflow, Parquet).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from model.config import TrialConfig
from model.types import EmbeddedSplits, TrialResult

EPOCHS = 10


def burn_fit(config: TrialConfig, data: EmbeddedSplits, on_epoch=None) -> TrialResult:
    """Keep one core busy for ``QSWEEP_BURN_S`` seconds; report 10 epochs."""
    seconds = float(os.environ.get("QSWEEP_BURN_S", "60"))
    t0 = time.perf_counter()
    for epoch in range(1, EPOCHS + 1):
        end = t0 + seconds * epoch / EPOCHS
        while time.perf_counter() < end:
            sum(range(2000))
        if on_epoch is not None:
            acc = 0.5 + 0.01 * epoch
            on_epoch(
                {
                    "epoch": epoch,
                    "train_loss": 1.0 / epoch,
                    "train_accuracy": acc,
                    "val_loss": 1.0 / epoch,
                    "val_accuracy": acc,
                    "lr": config.learning_rate,
                    "elapsed_s": time.perf_counter() - t0,
                }
            )
    return TrialResult(0.6, 0.6, EPOCHS, EPOCHS, 0, time.perf_counter() - t0, "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="CPU seconds per trial (default 60)"
    )
    parser.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (default 2)")
    args = parser.parse_args(argv)

    from orchestrator.results import ResultsTable, trials_path
    from orchestrator.spec import spec_from_dict
    from orchestrator.tune_driver import run_study

    os.environ["QSWEEP_BURN_S"] = str(args.seconds)  # inherited by the Ray workers
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    spec = spec_from_dict(
        {
            "name": "overhead",
            "fixed": {"epochs": EPOCHS, "qubits": 4},
            "factors": {"learning_rate": [1e-3 * (i + 1) for i in range(args.trials)]},
            "max_concurrent": args.concurrency,
        }
    )
    x = np.zeros((4, 4), dtype=np.float32)
    y = np.array([0, 1, 0, 1])
    data = EmbeddedSplits(x, y, x, y, x, y, encoder="none", source="synthetic")
    with tempfile.TemporaryDirectory(prefix="qsweep-overhead-") as tmp:
        study_dir = Path(tmp) / "overhead"
        t0 = time.perf_counter()
        outcome = run_study(
            spec,
            study_dir=study_dir,
            fit="orchestrator.benchmark_overhead:burn_fit",
            data=data,
            max_concurrent=args.concurrency,
        )
        wall = time.perf_counter() - t0
        rows = list(ResultsTable(trials_path(study_dir), study=spec.name).rows.values())
    trial_sum = sum(r["wall_time_s"] or 0.0 for r in rows)
    ideal = trial_sum / args.concurrency
    completed = sum(r["status"] == "completed" for r in rows)
    print(
        f"trials: {len(rows)} ({completed} completed) x {args.seconds:g} s CPU, concurrency {args.concurrency}, {os.cpu_count()} cores"
    )
    print(f"sum of trial times / concurrency: {ideal:.1f} s")
    print(
        f"study wall time (store + Ray start to last row): {wall:.1f} s  ratio {wall / ideal:.3f}"
    )
    print(
        f"overhead: {100 * (wall / ideal - 1):+.1f} % ({outcome.wall_time_s:.1f} s inside run_study)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

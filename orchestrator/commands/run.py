"""``qsweep run SPACE.yaml``: run (or resume, or just plan) a study with Ray Tune.

    qsweep run search_spaces/quickstart.yaml
    qsweep run search_spaces/qubits_single.yaml --data /work/shared/data/sst2 --dry-run
    qsweep run search_spaces/quickstart.yaml --resume        # after a crash / preemption

Exit status: 0 done (failed trials are rows, not a failed study), 2 a configuration or
service error, 75 interrupted by SIGTERM/SIGUSR1 (rerun with ``--resume``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from model.config import EPOCHLESS_HEADS

__all__ = ["register", "run", "plan_text", "seconds_per_epoch"]

# Calibration of the statevector cost model (NOTES.md): 14 qubits, batch 16, 6 layers of
# rotations + CNOT ring, forward + backward, 2 threads, complex64: 0.425 s per step.
_CAL_STEP_S = 0.425
_CAL_WORK = 16 * 6 * 2**14  # samples x layers x amplitudes
_SST2_ROWS = 6920 + 872 + 1821


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a study (search space YAML) with Ray Tune; results in results/<study>/",
        description="Run a hyperparameter study: every trial trains one head on embeddings "
        "computed once; rows go to trials.parquet, runs to MLflow.",
    )
    p.add_argument("space", help="search-space YAML file (see search_spaces/)")
    p.add_argument(
        "--data",
        metavar="SRC",
        help="override data.source: demo, hf:NAME or a local directory (e.g. /path/to/sst2)",
    )
    p.add_argument(
        "--encoder",
        metavar="NAME|PATH",
        help="override data.encoder: minilm, a hub name or a local sentence-transformers directory",
    )
    p.add_argument(
        "--results", metavar="DIR", help="study directory (default: results/<study name>)"
    )
    p.add_argument(
        "--mlflow-uri",
        metavar="URI",
        help="MLflow tracking URI (default: sqlite:///<results dir>/mlflow.db)",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="existing Ray cluster (default: $RAY_ADDRESS, else a local Ray)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted study; finished trials are not rerun",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        metavar="K",
        help="trials running at once (overrides max_concurrent)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan and a cost estimate; run nothing"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.errors import ConfigError
    from orchestrator.spec import load_spec

    spec = load_spec(args.space)
    changes: dict[str, Any] = {}
    if args.data:
        changes["source"] = args.data
    if args.encoder:
        changes["encoder"] = args.encoder
    if changes:
        spec = spec.replace(data=spec.data.replace(**changes))
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(
            f"--max-concurrent {args.max_concurrent} is not allowed; give an integer >= 1."
        )
    concurrency = args.max_concurrent or spec.max_concurrent
    study_dir = Path(args.results) if args.results else Path("results") / spec.name

    if args.dry_run:
        print(plan_text(spec, concurrency=concurrency, study_dir=study_dir))
        return 0

    from orchestrator.tune_driver import INTERRUPTED_EXIT, run_study

    print(
        f"qsweep run: study {spec.name}: {spec.n_trials()} trials -> {study_dir}/", file=sys.stderr
    )
    outcome = run_study(
        spec,
        study_dir=study_dir,
        tracking_uri=args.mlflow_uri,
        address=args.address,
        resume=args.resume,
        max_concurrent=concurrency,
    )
    if outcome.interrupted:
        print("qsweep run: interrupted; rerun with --resume", file=sys.stderr)
        return INTERRUPTED_EXIT
    print(
        f"qsweep run: {spec.name}: {outcome.ran} trials run ({outcome.failed} failed, "
        f"{outcome.stopped} stopped early), {outcome.skipped} done before; "
        f"{outcome.wall_time_s:.1f} s. Table: {outcome.study_dir / 'trials.parquet'}; "
        f"MLflow: {outcome.tracking_uri} (qsweep ui {outcome.study_dir})",
        file=sys.stderr,
    )
    return 0


# ------------------------------------------------------------------------------------
def _n_train(spec) -> tuple[int, int]:
    """(train, val) sizes the protocol will give (SST-2 sizes when every row is used)."""
    d = spec.data
    if d.n_per_class > 0:
        drawn = 2 * d.n_per_class
    else:
        drawn = _SST2_ROWS if d.protocol == "paper" else 6920
    if d.protocol == "paper":
        n_val = int(round(drawn * d.val_fraction))
        return drawn - n_val, n_val
    return drawn, 872


def seconds_per_epoch(cfg, n_train: int, n_val: int) -> float:
    """Modelled CPU seconds per epoch of one trial (2 threads; order of magnitude).

    Quantum heads: statevector work (samples x circuit layers x 2^qubits) scaled from one
    measured step; evaluation of the validation set counted as one third of a training
    pass; ``ry`` rotations 0.64x of ``rot``; density-matrix noise and shots not modelled.
    MLP heads: 2 ms per epoch. sklearn heads: one epoch of 2 s.
    """
    if cfg.head in ("logreg", "svc"):
        return 2.0
    if cfg.head == "finetune":  # pairs x 2 sentences through MiniLM, + embedding every split
        return 4e-3 * 2 * cfg.finetune_iterations * n_train * cfg.finetune_epochs + 60.0
    if cfg.head == "mlp":
        return 0.002 + 2e-6 * n_train
    layers = (
        cfg.encoders * cfg.encoder_layers
        + cfg.reuploads * (cfg.reupload_layers + 1)
        + cfg.main_layers
    )
    if cfg.head == "mlp_encoder":
        layers = cfg.reuploads * (cfg.reupload_layers + 1) + cfg.main_layers
    work = (n_train + n_val / 3.0) * layers * 2**cfg.qubits
    factor = 1.0 if cfg.rotation == "rot" else 0.64
    return _CAL_STEP_S * factor * work / _CAL_WORK


def _measured_s_per_epoch(study_dir: Path) -> float | None:
    table = study_dir / "trials.parquet"
    if not table.exists():
        return None
    import pyarrow.parquet as pq

    rows = [
        r["wall_time_s"] / r["epochs_run"]
        for r in pq.read_table(table, columns=["status", "wall_time_s", "epochs_run"]).to_pylist()
        if r["status"] == "completed" and r["epochs_run"] and r["wall_time_s"]
    ]
    return sorted(rows)[len(rows) // 2] if rows else None


def _fmt_level(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plan_text(spec, *, concurrency: int, study_dir: Path) -> str:
    """The --dry-run plan: trials, factors/points, resources and a cost estimate."""
    from orchestrator.progress import format_duration

    out = [f"study {spec.name}" + (f": {spec.description}" if spec.description else "")]
    if spec.source:
        out.append(f"file: {spec.source}")
    d = spec.data
    out.append(
        f"data: source={d.source} encoder={d.encoder} protocol={d.protocol} n_per_class={d.n_per_class} "
        f"val_fraction={d.val_fraction} split_seed={d.split_seed} max_test={d.max_test}"
    )
    if spec.fixed:
        out.append("fixed: " + ", ".join(f"{k}={_fmt_level(v)}" for k, v in spec.fixed.items()))
    search = ", ".join(f"{k}={v}" for k, v in spec.search.to_dict().items())
    out.append(f"search: {search}; metric {spec.metric} ({spec.mode})")
    out.append("factors:")
    for name, levels in spec.factors.items():
        if isinstance(levels, list):
            out.append(
                f"  {name:<16} {len(levels)} levels: " + ", ".join(_fmt_level(v) for v in levels)
            )
        else:
            scale = "log" if levels["log"] else "linear"
            out.append(
                f"  {name:<16} range {_fmt_level(levels['low'])} .. {_fmt_level(levels['high'])} ({scale})"
            )
    seeds = ", ".join(map(str, spec.seeds))
    n_train, n_val = _n_train(spec)
    if spec.is_optuna:
        out.append(
            f"trials: {spec.search.trials} optuna suggestions x {len(spec.seeds)} seed ({seeds}) = {spec.n_trials()}"
        )
        mid = {}
        for name, levels in spec.factors.items():
            if isinstance(levels, list):
                mid[name] = levels[len(levels) // 2]
            else:
                lo, hi = levels["low"], levels["high"]
                value = math.sqrt(lo * hi) if levels["log"] else (lo + hi) / 2
                mid[name] = int(round(value)) if isinstance(lo, int) else value
        configs = [spec.trial_config(mid, spec.seeds[0])] * spec.n_trials()
    else:
        planned = spec.planned_trials()
        points = spec.points()
        out.append(
            f"trials: {len(points)} points x {len(spec.seeds)} seeds ({seeds}) = {len(planned)}"
        )
        if spec.search.kind != "grid" or len(points) <= 40:
            names = list(spec.factors)
            widths = [max(len(n), *(len(_fmt_level(p[n])) for p in points)) for n in names]
            out.append("points:")
            out.append(
                "  point  " + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))
            )
            for i, p in enumerate(points[:60]):
                cells = "  ".join(
                    _fmt_level(p[n]).rjust(w) for n, w in zip(names, widths, strict=True)
                )
                out.append(f"  p{i:03d}   {cells}")
            if len(points) > 60:
                out.append(f"  ... {len(points) - 60} more")
        configs = [p.config for p in planned]
    res = spec.resources
    out.append(
        f"resources per trial: cpu={res['cpu']:g} gpu={res['gpu']:g}; max concurrent trials: {concurrency}"
    )
    if spec.early_stopping:
        es = spec.early_stopping
        out.append(
            f"early stopping: ASHA on {spec.metric}, grace_period={es['grace_period']} epochs, reduction_factor={es['reduction_factor']:g}"
        )
    out.append(f"retries per failing trial: {spec.retries}")

    measured = _measured_s_per_epoch(study_dir)
    epochs = sum(1 if c.head in EPOCHLESS_HEADS else c.epochs for c in configs)
    if measured is not None:
        total = epochs * measured / concurrency
        how = f"measured: median {measured:.3g} s/epoch of the completed trials in {study_dir}/trials.parquet"
    else:
        total = (
            sum(
                (1 if c.head in EPOCHLESS_HEADS else c.epochs)
                * seconds_per_epoch(c, n_train, n_val)
                for c in configs
            )
            / concurrency
        )
        how = (
            f"modelled: statevector cost scaled from a measured 14-qubit CPU step (2 threads), {n_train} train + "
            f"{n_val} val sentences per epoch; noise/shots/GPU not modelled, embedding time not included"
        )
    out.append(
        f"cost estimate: {len(configs)} trials, {epochs} epochs in all, / {concurrency} concurrent "
        f"~ {format_duration(total)} wall time ({how})"
    )
    out.append(f"results: {study_dir}/ (trials.parquet, study.json, mlflow.db)")
    return "\n".join(out)

"""``qsweep run SPACE.yaml``: run (or resume, or just plan) a study with Ray Tune.

    qsweep run search_spaces/quickstart.yaml
    qsweep run search_spaces/qubits_single.yaml --data /path/to/sst2 --dry-run
    qsweep run search_spaces/quickstart.yaml --resume        # after a crash / preemption

Exit status: 0 done (failed trials are rows, not a failed study), 2 a configuration or
service error, 75 interrupted by SIGTERM/SIGUSR1 (rerun with ``--resume``). Before
anything is written, the data source and the encoders are checked offline
(:func:`orchestrator.precheck.run_problems`); ``--dry-run`` prints the plan, then the same
problems, and exits 2 when there are any.

A local Ray (no ``--address``, no ``$RAY_ADDRESS``) keeps Ray's token authentication and
is started with ``RAY_AUTH_MODE=token`` set, so that Ray does not warn about it on every
run; an explicit ``RAY_AUTH_MODE`` wins.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


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
        "--encoder-path",
        metavar="NAME=DIR",
        action="append",
        default=[],
        help="load encoder NAME (a data.encoder level or the data.encoder setting) from the "
        "local sentence-transformers directory DIR; rows keep NAME (repeatable)",
    )
    p.add_argument(
        "--results",
        metavar="DIR",
        default="results",
        help="results root; the study goes to DIR/<study name>/ (default: results)",
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
        "--shard",
        metavar="I/K",
        help="run only shard I of K of a grid or DOE study (every K-th point, I from 0): one "
        "task of a Slurm job array; the shards share the study directory and MLflow store",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        metavar="K",
        help="trials running at once (overrides max_concurrent)",
    )
    p.add_argument(
        "--pack-size",
        metavar="N|auto",
        help="trials trained together as one packed model (one Ray trial) when they differ "
        "only in seed, learning_rate, lr_decay or weight_decay; 1: off; default: the study's "
        "pack_size (auto: chosen from qubits, device and memory)",
    )
    p.add_argument(
        "--expect-nodes",
        metavar="HOST[,HOST...]",
        help="wait until these hosts have joined the Ray cluster before any trial starts "
        "(qsweep slurm submit passes the allocation's nodes)",
    )
    p.add_argument(
        "--expect-cpus", type=float, default=0.0, metavar="N", help="... and N CPUs in all"
    )
    p.add_argument(
        "--expect-gpus", type=float, default=0.0, metavar="N", help="... and N GPUs in all"
    )
    p.add_argument(
        "--expect-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="give up waiting after S seconds with an error naming the missing nodes",
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
        if "data.encoder" in spec.factors:
            raise ConfigError(
                f"--encoder {args.encoder} cannot override data.encoder: it is a factor of "
                f"{args.space} (levels {spec.factors['data.encoder']}); load a level from a "
                "local directory with --encoder-path NAME=DIR instead."
            )
        changes["encoder"] = args.encoder
    if changes:
        spec = spec.replace(data=spec.data.replace(**changes))
    if args.encoder_path:
        spec = spec.replace(encoder_paths=_encoder_paths(args.encoder_path, spec))
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(
            f"--max-concurrent {args.max_concurrent} is not allowed; give an integer >= 1."
        )
    concurrency = args.max_concurrent or spec.max_concurrent
    if args.pack_size is not None:
        from orchestrator.packing import parse_pack_size

        spec = spec.replace(pack_size=parse_pack_size(args.pack_size, "--pack-size"))
    from orchestrator.results import study_dir_in

    study_dir = study_dir_in(Path(args.results), spec.name)

    from orchestrator.plan import plan_text
    from orchestrator.precheck import DataCheck, run_problems

    if args.dry_run:
        check = DataCheck(spec)
        print(plan_text(spec, concurrency=concurrency, study_dir=study_dir, resume=args.resume,
                        check=check))  # fmt: skip
        problems = run_problems(spec, study_dir=study_dir, resume=args.resume, check=check)
        if problems:
            raise ConfigError(_would_fail(problems))
        return 0
    if not os.environ.get("QSWEEP_TEST_DATA"):  # a test hook replaces the data: not checked
        problems = DataCheck(spec).problems
        if problems:
            raise ConfigError(_would_fail(problems))

    if not (args.address or os.environ.get("RAY_ADDRESS")):
        # Ray reads the mode when it is imported; set, it starts a local cluster with token
        # authentication (a token in ~/.ray/auth_token) and without its warning.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from orchestrator.cluster import ClusterNeed
    from orchestrator.tune_driver import INTERRUPTED_EXIT, run_study

    expect = None
    if args.expect_nodes:
        nodes = tuple(n for n in args.expect_nodes.split(",") if n)
        expect = ClusterNeed(nodes, args.expect_cpus, args.expect_gpus, args.expect_timeout)

    print(
        f"qsweep run: study {spec.name}: {spec.n_trials()} trials -> {study_dir}/", file=sys.stderr
    )
    outcome = run_study(
        spec,
        shard=parse_shard(args.shard) if args.shard else None,
        study_dir=study_dir,
        tracking_uri=args.mlflow_uri,
        address=args.address,
        resume=args.resume,
        max_concurrent=concurrency,
        expect=expect,
    )
    if outcome.stop_reason:  # the driver stopped the study itself (disk full, MLflow away)
        print(f"qsweep run: stopped: {outcome.stop_reason}", file=sys.stderr)
        return INTERRUPTED_EXIT
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


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/K`` -> ``(I, K)`` with 0 <= I < K; ConfigError otherwise."""
    from model.errors import ConfigError

    index, _, shards = text.partition("/")
    if not (index.isdigit() and shards.isdigit() and 0 <= int(index) < int(shards)):
        raise ConfigError(
            f"--shard {text!r} is not I/K with 0 <= I < K (e.g. --shard 0/4, the first of 4 "
            "shards; a Slurm array task passes $SLURM_ARRAY_TASK_ID/K)."
        )
    return int(index), int(shards)


def _would_fail(problems: list[str]) -> str:
    """One paragraph per problem, under a heading that says nothing was run."""
    if len(problems) == 1:
        return f"the run would fail before its first trial (nothing was run): {problems[0]}"
    items = "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, start=1))
    return f"the run would fail before its first trial (nothing was run):\n{items}"


def _encoder_paths(items: list[str], spec) -> dict[str, str]:
    """``--encoder-path NAME=DIR`` options as ``{NAME: DIR}``; NAME must be an encoder of the study."""
    from model.errors import ConfigError

    names = list(dict.fromkeys([*spec.factors.get("data.encoder", []), spec.data.encoder]))
    out: dict[str, str] = {}
    for item in items:
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            raise ConfigError(
                f"--encoder-path {item!r} is not NAME=DIR, e.g. "
                "--encoder-path sentence-transformers/all-mpnet-base-v2=/models/mpnet."
            )
        if name not in names:
            raise ConfigError(
                f"--encoder-path {item!r}: {name!r} is not an encoder of this study; "
                f"allowed: {', '.join(names)}."
            )
        out[name] = directory
    return out

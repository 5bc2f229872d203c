"""``qsweep report STUDY_DIR``: main effects, ANOVA and the paper's views as HTML/MD/CSV.

    qsweep report results/quickstart                 # -> results/quickstart/report/
    qsweep report results/quickstart --metric val_accuracy --out /tmp/rep --no-mlflow
    qsweep report results/paper_sst2                 # every study under it, side by side
    qsweep report results/a results/b --out results/a_vs_b

The report files are also logged under ``report/`` of the study's parent MLflow run (the
study's default store ``STUDY_DIR/mlflow.db`` or ``--mlflow-uri``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the screening report (HTML, Markdown, CSV) of a study",
        description="Analyse a study (trials.parquet or MLflow runs): design, main effects "
        "with t-intervals, the ANOVA of the model the design supports (main effects and "
        "estimable two-factor interactions; Lenth's method for unreplicated two-level "
        "designs), interaction plots, max and mean accuracy per qubit count and head family, "
        "model comparison, energy and noise. Writes report.html (self-contained), report.md "
        "+ PNGs and CSV tables, then logs them to MLflow.",
    )
    p.add_argument(
        "study_dir",
        metavar="STUDY_DIR",
        nargs="+",
        help="study directory, e.g. results/quickstart; several, or a directory of study "
        "directories (e.g. results/paper_sst2), give one combined report of the paper views",
    )
    p.add_argument(
        "--metric", default="test_accuracy", help="column to analyse (default: test_accuracy)"
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default: STUDY_DIR/report)")
    p.add_argument(
        "--mlflow-uri",
        metavar="URI",
        help="read the trials from this MLflow store instead of trials.parquet and log the report there",
    )
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report files to MLflow")
    p.set_defaults(func=run)


def _combined_dirs(given: list[Path], mlflow_uri: str | None) -> tuple[list[Path], Path] | None:
    """The studies and default output of a combined report, or None for one study."""
    from model.errors import ConfigError, DataError
    from orchestrator.report.study import study_dirs_under
    from orchestrator.results import read_study_json, trials_path

    if mlflow_uri:
        if len(given) > 1:
            raise ConfigError("--mlflow-uri reads one study; give one STUDY_DIR with it.")
        return None
    if len(given) == 1:
        one = given[0]
        if trials_path(one).exists() or not one.is_dir() or read_study_json(one) is not None:
            return None
        found = study_dirs_under(one)
        if not found:
            raise DataError(
                f"{one} has no trials table ({trials_path(one).name}) and no study "
                "directories with one under it; give a study directory written by qsweep run."
            )
        return found, one / "report"
    parent = Path(os.path.commonpath([p.resolve() for p in given]))
    return given, parent / "report"


def run(args: argparse.Namespace) -> int:
    from orchestrator.report import build_combined_report, build_report

    given = [Path(d) for d in args.study_dir]
    combined = _combined_dirs(given, args.mlflow_uri)
    if combined is not None:
        dirs, default_out = combined
        out = Path(args.out) if args.out else default_out
        files = build_combined_report(dirs, metric=args.metric, out_dir=out)
        print(
            f"combined report of {len(dirs)} studies ({', '.join(d.name for d in dirs)}): wrote "
            f"{len(files)} files to {out}/ (not logged to MLflow: it belongs to no single study)"
        )
        return 0
    study_dir = given[0]
    out = Path(args.out) if args.out else study_dir / "report"
    files = build_report(study_dir, metric=args.metric, out_dir=out, mlflow_uri=args.mlflow_uri)
    print(
        f"wrote {len(files)} files to {out}/: report.html, report.md, "
        f"{sum(f.suffix == '.png' for f in files)} figures, {sum(f.suffix == '.csv' for f in files)} tables"
    )
    if not args.no_mlflow:
        _log_to_mlflow(study_dir, files, args.mlflow_uri)
    return 0


def _log_to_mlflow(study_dir: Path, files: list[Path], uri: str | None) -> None:
    from orchestrator import tracking
    from orchestrator.results import study_name

    uri = uri or tracking.default_tracking_uri(study_dir)
    name = study_name(study_dir)
    try:
        run_id = tracking.log_study_artifacts(uri, name, files, artifact_path="report")
    except Exception as err:  # the report is written; a tracking failure must not hide it
        print(
            f"MLflow logging failed ({type(err).__name__}: {err}); the report files are still "
            f"in place. Retry with --mlflow-uri or skip with --no-mlflow.",
            file=sys.stderr,
        )
        return
    print(f"logged {len(files)} report files to MLflow: {uri}, experiment {name!r}, run {run_id}")

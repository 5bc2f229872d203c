"""``qsweep predict``: classify sentences with a trial's logged model.

    qsweep predict --trial quickstart/p000_s0 "a gripping film" "dull and overlong"
    qsweep predict --run 3f2c... --mlflow-uri http://head:5000 --file sentences.txt --json

The trial's model (its best epoch, logged to MLflow by ``qsweep run``) and the frozen
encoder it was trained on (tag ``qsweep.encoder``) are loaded; each sentence is embedded
and classified. Output: one line per sentence, ``label p(0) p(1) text`` (0 = negative,
1 = positive), or a JSON list with ``--json``. The store is ``--mlflow-uri``, else
``RESULTS/STUDY/mlflow.db`` for ``--trial`` and the stores under ``RESULTS`` for ``--run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register", "run", "predict"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify sentences with a trial's logged model",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="RUN_ID", help="MLflow run id of a trial")
    which.add_argument(
        "--trial", metavar="STUDY/TRIAL", help="study name and trial id, e.g. quickstart/p000_s0"
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="sentences to classify")
    p.add_argument("--file", metavar="PATH", help="also classify each non-empty line of PATH")
    p.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="results root or study directory (default: results)",
    )
    p.add_argument(
        "--mlflow-uri",
        metavar="URI",
        help="tracking store of the run (default: found under --results)",
    )
    p.add_argument(
        "--json", action="store_true", help="print a JSON list of {text, label, probabilities}"
    )
    p.set_defaults(func=run)  # fmt: skip


def _stores(results: Path, study: str | None) -> list[str]:
    """Candidate tracking URIs under ``results``: the study's own store first."""
    from orchestrator.tracking import default_tracking_uri

    dirs = [results, *([results / study] if study else []), *sorted(results.glob("*/"))]
    seen, out = set(), []
    for d in dirs:
        if (d / "mlflow.db").is_file() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(default_tracking_uri(d))
    if study:  # the store named after the study first
        out.sort(key=lambda uri: not uri.endswith(f"/{study}/mlflow.db"))
    return out


def _find(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    from model.errors import ConfigError
    from orchestrator.tracking import find_trial_model

    study = trial = None
    if args.trial:
        study, _, trial = args.trial.partition("/")
        if not study or not trial:
            raise ConfigError(
                f"--trial {args.trial!r} must be STUDY/TRIAL, e.g. quickstart/p000_s0."
            )
    uris = [args.mlflow_uri] if args.mlflow_uri else _stores(Path(args.results), study)
    if not uris:
        raise ConfigError(
            f"no MLflow store under {args.results} (no mlflow.db there or in its study directories); "
            "pass --results STUDY_DIR or --mlflow-uri URI."
        )
    error: ConfigError | None = None
    for uri in uris:
        try:
            return uri, find_trial_model(uri, run_id=args.run, study=study, trial_id=trial)
        except ConfigError as err:
            error = err
    assert error is not None
    raise error


def predict(tracking_uri: str, found: dict[str, str], texts: list[str]) -> list[dict]:
    """Labels and class probabilities of ``texts`` from a trial's logged model."""
    import numpy as np

    from model.embeddings import embed_texts
    from model.errors import ConfigError
    from model.heads import registry
    from orchestrator.tracking import load_model

    if not found["encoder"]:
        raise ConfigError(
            f"trial run {found['run_id']} does not name its encoder (tag qsweep.encoder)."
        )
    if found.get("model_uri"):
        model = load_model(tracking_uri, found["model_uri"], found["head"])
    else:  # a trial outside the registered best (mlflow.register): its state file
        from orchestrator.tracking.models import load_state_file_model

        model = load_state_file_model(found)
    x = embed_texts(texts, found["encoder"], progress=False)  # (n, d) float32
    if registry.is_sklearn(found["head"]):
        probs = np.asarray(model.predict_proba(x), dtype=float)
    else:
        import torch

        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(x)), dim=1).double().numpy()  # (n, 2)
    return [
        {"text": t, "label": int(p.argmax()), "probabilities": [float(v) for v in p]}
        for t, p in zip(texts, probs, strict=True)
    ]


def run(args: argparse.Namespace) -> int:
    from model.errors import ConfigError

    texts = list(args.texts)
    if args.file:
        try:
            texts += [
                line.strip() for line in Path(args.file).read_text().splitlines() if line.strip()
            ]
        except OSError as err:
            raise ConfigError(f"--file {args.file}: {err.strerror}.") from None
    if not texts:
        raise ConfigError("no sentences to classify: give TEXT arguments or --file PATH.")
    uri, found = _find(args)
    out = predict(uri, found, texts)
    print(
        f"qsweep predict: trial {found['trial_id']} (run {found['run_id']}, {found['head']} head) from {uri}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for item in out:
            p0, p1 = item["probabilities"]
            print(f"{item['label']}\t{p0:.4f}\t{p1:.4f}\t{item['text']}")
    return 0

"""The ``qsweep`` command line.

Each subcommand lives in ``orchestrator/commands/<name>.py`` and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func=run`` where
``run(args) -> int``. Command modules import heavy libraries (torch, ray, mlflow)
inside ``run`` only, so ``qsweep --help`` stays fast.

Errors derived from :class:`model.errors.QsweepError` are printed as one paragraph
(no traceback) and exit with status 2; ``QSWEEP_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from model.errors import QsweepError

# Order is the order shown in --help.
COMMANDS = ("train", "circuit", "energy", "run", "predict", "ui", "design", "report", "slurm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsweep",
        description="Screening studies of hybrid quantum-classical classification heads "
        "on frozen sentence embeddings.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"orchestrator.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except QsweepError as err:
        if os.environ.get("QSWEEP_DEBUG"):
            raise
        print(f"qsweep {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qsweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

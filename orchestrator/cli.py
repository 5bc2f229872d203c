"""The ``qsweep`` command line.

Each subcommand lives in ``orchestrator/commands/<name>.py`` and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func=run`` where
``run(args) -> int``. Command modules import heavy libraries (torch, ray, mlflow)
inside ``run`` only, so ``qsweep --help`` stays fast.

Errors derived from :class:`model.errors.QsweepError` are printed as one paragraph
(no traceback) and exit with status 2; ``QSWEEP_DEBUG=1`` shows the traceback. Help texts
may quote names as in the docstrings (``x``, `x`); the terminal shows them plain
(:func:`plain_help`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from model.errors import QsweepError

# Order is the order shown in --help.
COMMANDS = (
    "train", "circuit", "energy", "run", "predict", "ui", "design", "report", "slurm", "encoder",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsweep",
        description="Screening studies of hybrid quantum-classical classification heads "
        "on frozen sentence embeddings.",
    )
    parser.add_argument("--version", action="version", version=f"qsweep {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"orchestrator.commands.{name}").register(sub)
    plain_help(parser)
    return parser


def _version() -> str:
    from orchestrator.results import qsweep_version

    return qsweep_version()


def _plain(text: str | None) -> str | None:
    """reST and Markdown quoting for the terminal: ``x`` -> x, `x` -> 'x'."""
    if not text:
        return text
    return re.sub(r"`([^`]+)`", r"'\1'", re.sub(r"``([^`]+)``", r"\1", text))


def plain_help(parser: argparse.ArgumentParser) -> None:
    """Strip backtick quoting from the descriptions and option help of ``parser`` and of
    every subcommand parser under it."""
    parser.description = _plain(parser.description)
    parser.epilog = _plain(parser.epilog)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = _plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # the one-line help of each subcommand
                choice.help = _plain(choice.help)
            for child in dict.fromkeys(action.choices.values()):
                plain_help(child)


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
    except BrokenPipeError:  # e.g. `qsweep energy | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

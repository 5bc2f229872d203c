"""The terminal help of every command: a version, descriptions, option help, plain text."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]


def _parsers(parser: argparse.ArgumentParser, name: str = "qsweep"):
    """(name, parser) of ``parser`` and of every subcommand under it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def test_version_prints_the_installed_version():
    from orchestrator.results import qsweep_version

    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--version"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == f"qsweep {qsweep_version()}"


def test_help_shows_no_rest_or_markdown_quoting():
    seen = []
    for name, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert "`" not in text, (name, [line for line in text.splitlines() if "`" in line])
        seen.append(name)
    assert {"qsweep circuit", "qsweep predict", "qsweep ui", "qsweep slurm submit"} <= set(seen)
    circuit = dict(_parsers(build_parser()))["qsweep circuit"].format_help()
    assert "(qelib1.inc gates)" in circuit  # ``qelib1.inc`` shown plain, not dropped


@pytest.mark.parametrize("action", ["submit", "status", "logs", "cancel"])
def test_slurm_subcommands_have_descriptions(action):
    parser = dict(_parsers(build_parser()))[f"qsweep slurm {action}"]
    assert parser.description and len(parser.description) > 40


def test_every_option_has_help():
    missing = []
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_every_command_is_listed():
    text = build_parser().format_help()
    for name in COMMANDS:
        assert name in text

"""Hostile study files: each gets one clear paragraph, exit status 2 and nothing written.

The table below is the whole contract: file content -> the pieces its one-line message
must hold. Every case goes through the CLI in-process (``qsweep run FILE --dry-run``:
the same checks as a real run, and a file that slipped through exits 0 instead of
starting a study); a few also through the real command line without ``--dry-run``.
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from model.errors import ConfigError
from orchestrator.cli import main
from orchestrator.configfile import MAX_ALIAS_VALUES, load_trial_file, read_yaml
from orchestrator.spec import DEFAULT_MAX_TRIALS, spec_from_dict

ROOT = Path(__file__).resolve().parents[1]
OK = "factors: {qubits: [4]}\n"  # the rest of a valid study


def random_bytes() -> bytes:
    data = random.Random(24).randbytes(4096)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    return data


def alias_bomb() -> str:
    """The "billion laughs": nine anchors of nine aliases each, 9^9 strings in 452 bytes."""
    lines = ["name: bomb", "description:", "  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, anchor in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  - &{anchor} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n" + OK


def many_levels(n: int = 330_000) -> str:
    """A 3.6 MB study file: one factor of n learning rates, crossed with 2 qubit counts."""
    levels = ", ".join(f"{1e-6 * (i + 1):.6g}" for i in range(n))
    return f"name: huge\nfactors:\n  learning_rate: [{levels}]\n  qubits: [4, 5]\n"


# id -> (file content, pieces of the message)
HOSTILE = {
    "random-bytes": (random_bytes, ["is not a UTF-8 YAML file", "byte 0x"]),
    "empty": ("", ["the file is empty"]),
    "blank": ("\n  \n\t\n", ["the file is empty"]),
    "only-comments": ("# a study, one day\n", ["holds no settings"]),
    "duplicate-key": (
        "name: dup\nfixed:\n  epochs: 3\n  lr_decay: 1.0\n  epochs: 5\n" + OK,
        ["key 'epochs' is given twice", "on lines 3 and 5"],
    ),
    "duplicate-top-level": ("name: a\nname: b\n" + OK, ["key 'name'", "on lines 1 and 2"]),
    "duplicate-flow-key": ("name: d\nfixed: {epochs: 1, epochs: 2}\n" + OK, ["'epochs'", "line 2"]),
    "name-dotdot": ("name: ..\n" + OK, ["name = '..' is not allowed", "one plain path component"]),
    "name-dot": ("name: .\n" + OK, ["name = '.' is not allowed", "one plain path component"]),
    "name-slash": ("name: ../escape\n" + OK, ["name = '../escape'", "one plain path component"]),
    "name-hidden": ("name: .hidden\n" + OK, ["name = '.hidden'"]),
    "name-too-long": ("name: " + "n" * 300 + "\n" + OK, ["name = 'nnn", "1 to 100"]),
    "alias-bomb": (alias_bomb, ["aliases", "expand to", f"{MAX_ALIAS_VALUES:,} allowed"]),
    "recursive-alias": ("name: r\ndescription: &d [1, *d]\n" + OK, ["recursive alias", "line 2"]),
    "330k-levels": (
        many_levels,
        ["660,000 trials", "330,000 x 2 levels", f"max_trials = {DEFAULT_MAX_TRIALS:,}"],
    ),
    "optuna-trials": (
        "name: o\nsearch: {kind: optuna, trials: 200000}\n"
        "factors: {learning_rate: {low: 0.001, high: 0.1}}\n",
        ["200,000 trials", "max_trials: 200000"],
    ),
    "inf-learning-rate": (
        "name: inf\nfixed: {learning_rate: .inf}\n" + OK,
        ["fixed.learning_rate = inf", "not a finite number"],
    ),
    "nan-level": (
        "name: nan\nfactors: {learning_rate: [0.001, .nan]}\n",
        ["factors.learning_rate = nan", "not a finite number"],
    ),
    "overflowing-level": (
        "name: big\nfactors: {weight_decay: [1e999]}\n",
        ["factors.weight_decay", "not a finite number"],
    ),
    "inf-range": (
        "name: r\nsearch: {kind: optuna, trials: 2}\n"
        "factors: {learning_rate: {low: 0.001, high: .inf}}\n",
        ["factors.learning_rate.high = inf", "not a finite number"],
    ),
    "nan-data": (
        "name: d\ndata: {val_fraction: .nan}\n" + OK,
        ["data.val_fraction = nan", "not a finite number"],
    ),
    "inf-resources": ("name: c\nresources: {cpu: .inf}\n" + OK, ["resources.cpu = inf"]),
    "nan-early-stopping": (
        "name: e\nearly_stopping: {kind: asha, reduction_factor: .nan}\n" + OK,
        ["early_stopping.reduction_factor = nan", "finite"],
    ),
    "huge-int": ("name: i\nfixed: {epochs: 1000000000000000000000000}\n" + OK, ["fixed.epochs"]),
    "huge-seed": ("name: s\nseeds: [0, 100000000000000000000000]\n" + OK, ["seeds", "2^63"]),
    "long-value": (
        "name: m\nmetric: " + "x" * 200_000 + "\n" + OK,
        ["metric = 'xxx", "...", "allowed: val_accuracy"],
    ),
    "deep-nesting": ("name: n\ndescription: " + "[" * 5000 + "]" * 5000 + "\n" + OK, ["line 2"]),
}


def _content(value) -> bytes:
    value = value() if callable(value) else value
    return value if isinstance(value, bytes) else value.encode()


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_study_file_gets_one_clear_paragraph(case, tmp_path, capsys):
    content, pieces = HOSTILE[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(_content(content))
    results = tmp_path / "results"
    assert main(["run", str(path), "--dry-run", "--results", str(results)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"qsweep run: error: {path}") and err.endswith("\n"), err[:300]
    message = err.rstrip("\n")
    assert "\n" not in message and "Traceback" not in message, message[:500]
    assert len(message) < 700, (len(message), message[:500])  # values are cut, never dumped
    for piece in pieces:
        assert piece in message, (piece, message)
    assert not results.exists()  # nothing written, not even the results root
    assert out == ""


def test_a_raised_max_trials_lets_a_big_grid_through():
    factors = {"learning_rate": [1e-4 * (i + 1) for i in range(300)], "qubits": [4, 5]}
    with pytest.raises(ConfigError, match="1,200 trials.*max_trials: 1200"):
        spec_from_dict({"name": "g", "factors": factors, "seeds": [0, 1], "max_trials": 1000})
    spec = spec_from_dict({"name": "g", "factors": factors, "seeds": [0, 1], "max_trials": 1200})
    assert spec.n_trials() == 1200 == len(spec.planned_trials())
    with pytest.raises(ConfigError, match="max_trials = 0 is not allowed"):
        spec_from_dict({"name": "g", "factors": factors, "max_trials": 0})


def test_counting_trials_builds_no_grid():
    """n_trials() of a 10^12-point grid: counted from the level lists, in constant memory."""
    spec = spec_from_dict({"name": "g", "factors": {"qubits": [4]}})
    levels = [1e-6 * (i + 1) for i in range(1000)]
    wide = spec.replace(
        factors={
            "learning_rate": levels,
            "lr_decay": levels,
            "weight_decay": levels,
            "hidden": levels,
        }
    )
    tracemalloc.start()
    try:
        assert wide.n_trials() == 1000**4
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000, peak


def test_duplicate_keys_merges_and_anchors_that_are_fine(tmp_path):
    """A ``<<`` merge that overrides a key is not a duplicate; a reused anchor is no bomb."""
    path = tmp_path / "fine.yaml"
    path.write_text(
        "base: &base {epochs: 3, rotation: ry}\n"
        "name: fine\n"
        "fixed:\n  <<: *base\n  epochs: 5\n"
        "factors: {qubits: &q [4, 5], encoders: [1, 2]}\n"
        "description: [*q, *q]\n"
    )
    doc = read_yaml(path)
    assert doc["fixed"] == {"epochs": 5, "rotation": "ry"} and doc["description"] == [[4, 5]] * 2


def test_set_values_must_be_finite(tmp_path, capsys):
    path = tmp_path / "trial.yaml"
    path.write_text("trial: {epochs: 1}\n")
    for item in ("learning_rate=.inf", "noise_p1=.nan", "amplitude_offset=-inf", "epochs=1e999"):
        with pytest.raises(ConfigError, match="finite number|not an integer"):
            load_trial_file(path, sets=[item])
    assert main(["train", str(path), "--set", "learning_rate=nan"]) == 2
    assert "trial.learning_rate = 'nan' is not a finite number" in capsys.readouterr().err


# --- the real command line, as a user runs it -------------------------------------------
def _cli(path: Path, results: Path) -> subprocess.CompletedProcess:
    def limit_memory() -> None:  # the bomb once took 5.5 GB; a regression fails here, fast
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", str(path), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=limit_memory,
    )


@pytest.mark.parametrize("case", ["random-bytes", "alias-bomb", "duplicate-key", "name-dotdot"])
def test_cli_refuses_hostile_file_without_a_traceback(case, tmp_path):
    content, pieces = HOSTILE[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(_content(content))
    proc = _cli(path, tmp_path / "results")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and all(p in proc.stderr for p in pieces), proc.stderr
    assert not (tmp_path / "results").exists()

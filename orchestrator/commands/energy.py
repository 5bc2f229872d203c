"""``qsweep energy``: QPU versus GPU-simulation energy per inference, by register size.

    qsweep energy --qubits 40:50
    qsweep energy --config search_spaces/quickstart.yaml --set reuploads=2 --shots 1000 --json e.json

One option per field of :class:`model.energy.EnergyParams` (generated from the dataclass).
With ``--config`` (or ``--set``) the trial's own ``shots`` are the QPU's unless ``--shots``
is given, and its register size is marked in the table (added when outside ``--qubits``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from model.errors import ConfigError
from orchestrator.commands.train import add_set_option

_MAX_QUBITS = 1000  # 2**q stays a finite float well beyond this
_CROSSOVER_SEARCH = range(1, _MAX_QUBITS + 1)


def register(subparsers: Any) -> None:
    from model.energy import EnergyParams

    parser = subparsers.add_parser(
        "energy",
        help="estimate QPU vs GPU-simulation energy per inference of the PQC head",
        description="Energy of classifying one input with the head's parametrised quantum "
        "circuit on a trapped-ion QPU (shots) versus exact statevector simulation on GPUs, "
        "for a range of register sizes, and the crossover where the GPU costs more.",
    )
    parser.add_argument(
        "--qubits",
        default=None,
        metavar="A:B[:S]",
        help="register sizes: A:B inclusive, A:B:S with step S, or one number (default: 10:60, "
        "plus the trial's qubits when --config or --set qubits= gives them)",
    )
    parser.add_argument(
        "--config",
        metavar="CONFIG.yaml",
        help="YAML whose 'trial:' or 'fixed:' mapping sets the head, its qubits and its shots "
        "(default: the paper's ansatz, R=4 N=1 M=2 C=1, Rot gates)",
    )
    add_set_option(
        parser, "override one trial setting (repeatable), e.g. --set reuploads=2", dest="overrides"
    )
    group = parser.add_argument_group("energy model constants (model.energy.EnergyParams)")
    for f in dataclasses.fields(EnergyParams):
        option = "--" + f.name.replace("_", "-")
        text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if f.type in ("bool", bool):
            group.add_argument(
                option, dest=f"energy_{f.name}", action=argparse.BooleanOptionalAction, help=text
            )
        else:
            kind = int if f.type in ("int", int) else float
            group.add_argument(
                option, dest=f"energy_{f.name}", type=kind, metavar=kind.__name__.upper(), help=text
            )
    parser.add_argument("--json", metavar="OUT", help="also write the table as JSON to OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.energy import crossover_qubits, energy_table

    config = load_trial_config(args.config, args.overrides)
    given = {
        o.partition("=")[0].strip().removeprefix("trial.").removeprefix("fixed.")
        for o in args.overrides
    }
    trial_qubits = config.qubits if args.config or "qubits" in given else None
    qubits = list(parse_qubit_range(args.qubits or "10:60"))
    if trial_qubits is not None and trial_qubits not in qubits:
        qubits = sorted([*qubits, trial_qubits])
    params = energy_params_from_args(args)
    shots_from = "--shots" if args.energy_shots is not None else "the energy model's default"
    if args.energy_shots is None and (args.config or "shots" in given):
        if config.shots > 0:
            params = dataclasses.replace(params, shots=config.shots)
            shots_from = "the trial's shots"
        else:
            shots_from = "the energy model's default; the trial simulates exact expectations"
    rows = energy_table(config, qubits, params)
    crossover = crossover_qubits(config, params, _CROSSOVER_SEARCH)
    print(
        format_table(config, params, rows, crossover, trial_qubits=trial_qubits,
                     shots_from=shots_from)
    )  # fmt: skip
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": config.to_dict(),
            "params": params.to_dict(),
            "crossover_qubits": crossover,
            "rows": rows,
        }
        out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------------
def parse_qubit_range(text: str) -> range:
    """``"A:B"`` -> range(A, B + 1); ``"A:B:S"`` steps by S; ``"A"`` is one size."""
    usage = f"use A:B (inclusive), A:B:S (step S) or A, with 1 <= A <= B <= {_MAX_QUBITS}, S >= 1"
    parts = str(text).split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--qubits {text!r} is not a range of integers; {usage}.") from None
    if len(numbers) == 1:
        numbers = [numbers[0], numbers[0]]
    if len(numbers) not in (2, 3):
        raise ConfigError(f"--qubits {text!r} has {len(parts)} parts; {usage}.")
    start, stop, step = numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 1
    if start < 1 or stop > _MAX_QUBITS:
        raise ConfigError(f"--qubits {text!r} is out of bounds; {usage}.")
    if start > stop:
        raise ConfigError(f"--qubits {text!r}: start {start} is above stop {stop}; {usage}.")
    if step < 1:
        raise ConfigError(f"--qubits {text!r}: step {step} is not allowed; {usage}.")
    return range(start, stop + 1, step)


def load_trial_config(path: str | None, overrides: list[str]):
    """TrialConfig from the YAML's trial settings (``orchestrator.configfile``) and ``--set``."""
    from model.config import TrialConfig
    from model.heads.registry import QUANTUM_HEADS
    from orchestrator.configfile import parse_sets

    values: dict[str, Any] = {}
    where = "trial"
    if path:
        values, where = _read_trial_mapping(Path(path))
    trial_sets, data_sets = parse_sets(overrides)
    if data_sets:
        raise ConfigError(
            f"--set data.{next(iter(data_sets))} is a data setting; qsweep energy has none "
            "(it models one trial's circuit): drop it."
        )
    values.update(trial_sets)
    config = TrialConfig.from_dict(values, where=where)
    if not config.is_quantum:
        raise ConfigError(
            f"{where}.head = {config.head!r} has no quantum circuit; energy estimates apply to "
            f"the heads with a PQC ({', '.join(QUANTUM_HEADS)}): drop it or add --set head=quantum."
        )
    return config


def _read_trial_mapping(path: Path) -> tuple[dict[str, Any], str]:
    from orchestrator.configfile import read_yaml, trial_settings

    doc = read_yaml(path, what="--config")
    if doc.get("fixed") is None and doc.get("trial") is None:
        raise ConfigError(
            f"--config {str(path)!r} has no 'trial:' or 'fixed:' mapping; "
            f"top-level keys found: {', '.join(map(str, doc)) or 'none'}."
        )
    try:
        key, values = trial_settings(doc)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return values, f"{path}:{key}"


def energy_params_from_args(args: argparse.Namespace):
    """EnergyParams with the defaults replaced by the options given; errors name the option."""
    from model.energy import EnergyParams

    changes = {}
    for f in dataclasses.fields(EnergyParams):
        value = getattr(args, f"energy_{f.name}", None)
        if value is not None:
            changes[f.name] = value
    try:
        return EnergyParams(**changes)
    except ConfigError as err:
        message = str(err)
        for name in changes:
            message = message.replace(f"energy.{name} ", f"--{name.replace('_', '-')} ")
        raise ConfigError(message) from None


# ------------------------------------------------------------------------------------
def format_table(
    config,
    params,
    rows: list[dict[str, float]],
    crossover: int | None,
    *,
    trial_qubits: int | None = None,
    shots_from: str = "",
) -> str:
    """The printed report: a heading, one line per register size (the trial's own size
    marked), the crossover line."""
    shots = f"{params.shots} shots" + (f" ({shots_from})" if shots_from else "")
    head = (
        f"Energy per inference of one input: head={config.head}, R={config.reuploads} "
        f"N={config.reupload_layers} M={config.main_layers} C={config.connectivity} "
        f"rotation={config.rotation}; QPU {shots}, {params.qubit_power_w:g} W/qubit; "
        f"GPU {params.gpu_tflops:g} TFLOP/s, {params.gpu_power_w:g} W"
    )
    columns = ("qubits", "1Q gates", "2Q gates", "QPU time", "QPU energy", "GPUs", "GPU time")
    columns += ("GPU energy", "GPU/QPU")
    lines = [head, "", "  ".join(f"{c:>10}" for c in columns)]
    for row in rows:
        q = int(row["qubits"])
        cells = (
            str(q),
            f"{row['n_1q_gates']:.0f}",
            f"{row['n_2q_gates']:.0f}",
            format_seconds(row["qpu_time_s"]),
            format_si(row["qpu_energy_j"], "J"),
            f"{row['n_gpus']:.0f}",
            format_seconds(row["gpu_time_s"]),
            format_si(row["gpu_energy_j"], "J"),
            f"{row['gpu_to_qpu_energy']:.3g}",
        )
        marks = [m for m, at in (("crossover", crossover), ("the trial", trial_qubits)) if q == at]
        mark = f"  <- {', '.join(marks)}" if marks else ""
        lines.append("  ".join(f"{c:>10}" for c in cells) + mark)
    lines.append("")
    if crossover is None:
        lines.append(
            f"GPU simulation costs less energy than the QPU at every size up to {_MAX_QUBITS} qubits."
        )
    else:
        lines.append(f"GPU simulation costs more energy than the QPU from {crossover} qubits on.")
    return "\n".join(lines)


_PREFIXES = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_PREFIXES += ((1e-3, "m"), (1e-6, "u"), (1e-9, "n"))


def format_si(value: float, unit: str) -> str:
    """``18431280.0, "J"`` -> ``"18.4 MJ"``."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def format_seconds(seconds: float) -> str:
    """Seconds in the largest unit that keeps the number >= 1 (us ... years)."""
    if seconds < 1.0:
        return format_si(seconds, "s")
    for scale, unit in ((365.25 * 86400, "y"), (86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= 2 * scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"

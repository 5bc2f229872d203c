"""``qsweep circuit CONFIG.yaml --qasm OUT.qasm --expval OUT.json``: export the PQC.

The PQC (the part meant for a real QPU) is written for one input with all parameters
bound, as OpenQASM 2.0 (``qelib1.inc`` gates), together with the simulator's exact
Pauli-Z expectations of that same circuit (``{"z": [...]}``, qubit order q[0]..q[n-1]),
so the circuit can be run on hardware or another simulator and compared.

The input is a seeded random unit vector of the embedding width and the head's weights
are the seeded initial weights: both follow ``--seed``. The width is ``--dim``, else that
of the file's encoder (``data.encoder``: 384 for minilm, read from a local or cached
model's files), else 768 (the paper's encoder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.commands.train import add_set_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "circuit",
        help="export the PQC for one input as OpenQASM 2.0 plus its Pauli-Z expectations",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML file with 'fixed'/'trial' settings (a study file works)")
    add_set_option(
        p,
        "override a trial setting (e.g. qubits=12) or the encoder (data.encoder=minilm); "
        "repeatable",
    )
    p.add_argument(
        "--qasm", metavar="OUT.qasm", required=True, help="where to write the OpenQASM 2.0 circuit"
    )
    p.add_argument(
        "--expval", metavar="OUT.json", required=True, help="where to write {'z': [...]} "
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the initial weights and the input (default 0)"
    )
    p.add_argument(
        "--dim",
        type=int,
        default=None,
        help="embedding width of the random input (default: the encoder's width, else 768)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.errors import ConfigError
    from model.heads.registry import QUANTUM_HEADS
    from orchestrator.configfile import load_trial_file

    trial, data = load_trial_file(args.config, sets=args.sets)
    if not trial.is_quantum:
        raise ConfigError(
            f"trial.head = {trial.head!r} has no quantum circuit; allowed for 'qsweep circuit': "
            f"{', '.join(QUANTUM_HEADS)}."
        )
    dim, where = input_width(args.dim, data.encoder)
    import torch

    from model.heads.quantum import QuantumHead
    from model.quantum.qasm import export_pqc

    torch.manual_seed(args.seed)
    try:
        head = QuantumHead(trial.replace(shots=0, noise_p1=0.0, noise_p2=0.0, device="cpu"), dim)
    except ConfigError as err:
        if not str(err).startswith("trial.qubits"):
            raise
        raise ConfigError(
            f"{err} The input width {dim} is {where}; export for another width with --dim D."
        ) from None
    head.eval()
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(1, dim, generator=gen)
    x = x / x.norm()
    qasm, z = export_pqc(head, x)
    Path(args.qasm).parent.mkdir(parents=True, exist_ok=True)
    Path(args.qasm).write_text(qasm)
    Path(args.expval).parent.mkdir(parents=True, exist_ok=True)
    Path(args.expval).write_text(
        json.dumps(
            {"z": [float(v) for v in z], "qubits": trial.qubits, "seed": args.seed}, indent=2
        )
    )
    n_gates = sum(
        1
        for line in qasm.splitlines()
        if line
        and not line.startswith(("OPENQASM", "include", "qreg", "creg", "measure", "//", "barrier"))
    )
    print(
        f"wrote {args.qasm} ({trial.qubits} qubits, {n_gates} gates; a {dim}-d input, {where}) "
        f"and {args.expval}",
        file=sys.stderr,
    )
    if trial.shots or trial.noise_p1 or trial.noise_p2:
        print(
            "note: shots and gate noise are not part of the exported circuit; the expectations are exact.",
            file=sys.stderr,
        )
    return 0


def input_width(dim: int | None, encoder: str) -> tuple[int, str]:
    """(width of the exported input, where it comes from): ``--dim``, else the width of
    ``encoder`` read offline from its files, else 768."""
    from model.errors import ConfigError, EncoderError

    if dim is not None:
        if dim < 1:
            raise ConfigError(f"--dim {dim} must be a positive embedding width.")
        return dim, "from --dim"
    from model.embeddings import encoder_width

    try:
        width = encoder_width(encoder)
    except EncoderError:  # e.g. a directory that does not exist here
        width = None
    if width:
        return width, f"the width of encoder {encoder}"
    return 768, f"the default (the width of encoder {encoder} is not known offline)"

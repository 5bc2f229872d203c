"""Own torch statevector simulator for the hybrid quantum heads.

Modules: ``gates`` (matrices as pure functions), ``statevector`` (batched states, fused
layers, permutation entanglers, expectations), ``encoding`` (amplitude / angle),
``circuits`` (ansatz from a TrialConfig, compiled runner), ``cpu_kernel`` (the compiled
C kernel noise-free CPU circuits run in), ``adjoint`` (un-computing backward of the torch
path), ``noise`` (shot noise,
Pauli-trajectory depolarizing), ``density`` (exact density-matrix reference),
``qasm`` (OpenQASM 2.0 export), ``benchmark`` (``python -m model.quantum.benchmark``).
Qubit 0 is the most significant bit of the statevector index everywhere.
"""

from __future__ import annotations

from model.quantum.circuits import CircuitRunner, CircuitSpec, pqc_spec, sqe_spec
from model.quantum.encoding import amplitude_encode
from model.quantum.qasm import circuit_qasm, export_pqc
from model.quantum.statevector import probabilities, z_expectations

__all__ = [
    "CircuitRunner",
    "CircuitSpec",
    "pqc_spec",
    "sqe_spec",
    "amplitude_encode",
    "circuit_qasm",
    "export_pqc",
    "probabilities",
    "z_expectations",
]

"""OpenQASM 2.0 export of the PQC for one input, with bound parameters.

Gates (qelib1.inc): ``ry`` for the angle encoding and RY rotations, ``rz; ry; rz`` for
``Rot(phi, theta, omega)`` (``rz(phi)`` first), ``cx`` for the entanglers. qelib1's ``rz``
equals our RZ up to a global phase, so expectation values are unchanged. ``q[k]`` is
qubit k of the simulator (qubit 0 = most significant bit of the statevector index);
every qubit is measured into ``c[k]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.errors import ConfigError
from model.quantum.circuits import ENCODE, ROTATE, CircuitSpec
from model.quantum.statevector import probabilities, z_expectations

__all__ = ["circuit_qasm", "export_pqc"]


def _num(value: float) -> str:
    return repr(float(value))


def circuit_qasm(spec: CircuitSpec, weights: Tensor, angles: Tensor) -> str:
    """QASM text of ``spec`` with weights ``(L, q, P)`` and encoding angles ``(q,)`` in radians."""
    n = spec.n_qubits
    w = weights.detach().double().cpu()
    a = angles.detach().double().cpu()
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{n}];", f"creg c[{n}];"]
    for op in spec.ops:
        if op.kind == ENCODE:
            lines += [f"ry({_num(a[k])}) q[{k}];" for k in range(n)]
        elif op.kind == ROTATE:
            for k in range(n):
                if spec.rotation == "rot":
                    phi, theta, omega = w[op.index, k].tolist()
                    lines += [
                        f"rz({_num(phi)}) q[{k}];",
                        f"ry({_num(theta)}) q[{k}];",
                        f"rz({_num(omega)}) q[{k}];",
                    ]
                else:
                    lines.append(f"ry({_num(w[op.index, k, 0])}) q[{k}];")
        else:
            lines += [f"cx q[{c}],q[{t}];" for c, t in spec.pairs]
    lines += [f"measure q[{k}] -> c[{k}];" for k in range(n)]
    return "\n".join(lines) + "\n"


def export_pqc(head, x: Tensor, *, member: int = 0) -> tuple[str, list[float]]:
    """QASM of ``head``'s PQC for one input ``x`` ``(1, d)`` and its exact ``<Z_k>``, k = 0..q-1.

    The latent is computed by the head's encoder (sQE or MLP); the expectations are
    noise-free and shot-free statevector values of exactly the exported circuit.
    ``member`` picks one trial of a packed head.
    """
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[0] != 1:
        raise ConfigError(f"export_pqc needs one input of shape (1, d), got {tuple(x.shape)}.")
    pqc = head.pqc
    with torch.no_grad():
        param = next(head.parameters())
        xs = x.to(device=param.device, dtype=param.dtype)[:, None].expand(1, head.members, -1)
        z = head.latent(xs)  # (1, T, q)
        state = pqc.final_state(z, noisy=False)  # (1, T, 2**q)
        expvals = z_expectations(probabilities(state), pqc.qubits)[0, member]
    text = circuit_qasm(pqc.spec, pqc.weights[:, member], pqc.input_scale * z[0, member])
    return text, [float(v) for v in expvals.cpu()]

"""Exact density-matrix simulation of a CircuitSpec with depolarizing noise (<= 6 qubits).

A slow, dense reference for the Pauli-trajectory sampler: every gate is a full
``2**n x 2**n`` matrix built with ``torch.kron``; the channels are

* after each 1-qubit gate on qubit k: ``rho -> (1-p1) rho + p1/3 (X rho X + Y rho Y + Z rho Z)``
* after each CNOT on (c, t): ``rho -> (1-p2) rho + p2/15 sum_{P != II} P rho P``.

Noise placement matches ``CircuitRunner``: after every angle-encoding RY, after every
rotation (Rot counts as one gate), after every CNOT of an entangling block.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from model.quantum.circuits import ENCODE, ROTATE, CircuitSpec, layer_matrices
from model.quantum.encoding import angle_matrices
from model.quantum.gates import CNOT, I2, X, Y, Z

__all__ = ["MAX_DENSITY_QUBITS", "embed", "depolarize_1q", "depolarize_2q", "density_expectations"]

MAX_DENSITY_QUBITS = 6
_PAULIS = (I2, X, Y, Z)


def embed(op: Tensor, first: int, n: int) -> Tensor:
    """Dense ``2**n`` matrix of ``op`` (on qubits first..first+k-1) tensored with identities."""
    k = op.shape[-1].bit_length() - 1
    left = torch.eye(2**first, dtype=op.dtype)
    right = torch.eye(2 ** (n - first - k), dtype=op.dtype)
    return torch.kron(torch.kron(left, op), right)


def _two_qubit(op4: Tensor, a: int, b: int, n: int) -> Tensor:
    """Dense matrix of a 4x4 operator on qubits (a, b) (a = most significant of the pair)."""
    idx = torch.arange(2**n)
    ba, bb = (idx >> (n - 1 - a)) & 1, (idx >> (n - 1 - b)) & 1
    rest = idx & ~((1 << (n - 1 - a)) | (1 << (n - 1 - b)))
    local = 2 * ba + bb
    same = (rest[:, None] == rest[None, :]).to(op4.dtype)
    return op4[local[:, None], local[None, :]] * same


def depolarize_1q(rho: Tensor, k: int, p: float, n: int) -> Tensor:
    out = (1 - p) * rho
    for pauli in (X, Y, Z):
        m = embed(pauli.to(rho.dtype), k, n)
        out = out + (p / 3) * m @ rho @ m.conj().T
    return out


def depolarize_2q(rho: Tensor, a: int, b: int, p: float, n: int) -> Tensor:
    out = (1 - p) * rho
    for pa, pb in itertools.product(range(4), repeat=2):
        if pa == 0 and pb == 0:
            continue
        m = _two_qubit(torch.kron(_PAULIS[pa], _PAULIS[pb]).to(rho.dtype), a, b, n)
        out = out + (p / 15) * m @ rho @ m.conj().T
    return out


def density_expectations(
    spec: CircuitSpec,
    weights: Tensor,
    z: Tensor | None,
    *,
    input_scale: float = math.pi,
    p1: float = 0.0,
    p2: float = 0.0,
    psi0: Tensor | None = None,
) -> Tensor:
    """Exact ``<Z_k>`` ``(B, q)`` of the noisy circuit. weights ``(L, q, P)``; z ``(B, q)``."""
    n = spec.n_qubits
    if n > MAX_DENSITY_QUBITS:
        raise ValueError(
            f"density-matrix reference supports <= {MAX_DENSITY_QUBITS} qubits, got {n}"
        )
    dtype = torch.complex128
    mats = layer_matrices(weights.double(), spec.rotation).to(dtype)  # (L, q, 2, 2)
    batch = z.shape[0] if z is not None else (psi0.shape[0] if psi0 is not None else 1)
    cnots = [_two_qubit(CNOT.to(dtype), c, t, n) for c, t in spec.pairs]
    out = []
    for b in range(batch):
        if psi0 is None:
            psi = torch.zeros(2**n, dtype=dtype)
            psi[0] = 1
        else:
            psi = psi0[b].to(dtype)
        rho = torch.outer(psi, psi.conj())
        enc = angle_matrices(z[b].double(), input_scale).to(dtype) if z is not None else None
        for op in spec.ops:
            if op.kind in (ENCODE, ROTATE):
                gates = enc if op.kind == ENCODE else mats[op.index]
                for k in range(n):
                    u = embed(gates[k], k, n)
                    rho = u @ rho @ u.conj().T
                    if p1 > 0:
                        rho = depolarize_1q(rho, k, p1, n)
            else:
                for (c, t), u in zip(spec.pairs, cnots, strict=True):
                    rho = u @ rho @ u.conj().T
                    if p2 > 0:
                        rho = depolarize_2q(rho, c, t, p2, n)
        diag = rho.diagonal().real
        zs = [(diag * (1 - 2 * ((torch.arange(2**n) >> (n - 1 - k)) & 1))).sum() for k in range(n)]
        out.append(torch.stack(zs))
    return torch.stack(out)

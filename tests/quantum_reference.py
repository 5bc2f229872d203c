"""Independent dense numpy references for the quantum tests (no qsweep simulator code).

Qubit 0 is the most significant bit (leftmost Kronecker factor).
"""

from __future__ import annotations

import numpy as np

I2 = np.eye(2, dtype=complex)
X = np.array([[0, 1], [1, 0]], dtype=complex)
Y = np.array([[0, -1j], [1j, 0]], dtype=complex)
Z = np.array([[1, 0], [0, -1]], dtype=complex)
P0 = np.diag([1, 0]).astype(complex)
P1 = np.diag([0, 1]).astype(complex)


def pauli_rotation(pauli: np.ndarray, theta: float) -> np.ndarray:
    """exp(-i theta P / 2) = cos(theta/2) I - i sin(theta/2) P."""
    theta = float(theta)
    return np.cos(theta / 2) * I2 - 1j * np.sin(theta / 2) * pauli


def rx(t):
    return pauli_rotation(X, t)


def ry(t):
    return pauli_rotation(Y, t)


def rz(t):
    return pauli_rotation(Z, t)


def rot(phi, theta, omega):
    return rz(omega) @ ry(theta) @ rz(phi)


def kron_all(ops) -> np.ndarray:
    out = np.array([[1.0 + 0j]])
    for op in ops:
        out = np.kron(out, op)
    return out


def on_qubit(u: np.ndarray, k: int, n: int) -> np.ndarray:
    return kron_all([u if j == k else I2 for j in range(n)])


def cnot(c: int, t: int, n: int) -> np.ndarray:
    a = kron_all([P0 if j == c else I2 for j in range(n)])
    b = kron_all([P1 if j == c else (X if j == t else I2) for j in range(n)])
    return a + b


def cz(a: int, b: int, n: int) -> np.ndarray:
    return np.eye(2**n) - 2 * kron_all([P1 if j in (a, b) else I2 for j in range(n)])


def z_expect(psi: np.ndarray, n: int) -> np.ndarray:
    """<Z_k> for k = 0..n-1 of a state vector (2**n,)."""
    return np.array([np.real(psi.conj() @ on_qubit(Z, k, n) @ psi) for k in range(n)])


def entangler(n: int, c: int) -> np.ndarray:
    u = np.eye(2**n, dtype=complex)
    if n == 1:
        return u
    for i in range(n):
        u = cnot(i, (i + c) % n, n) @ u
    return u


def layer(mats, n: int) -> np.ndarray:
    return kron_all(mats)


def pqc_state(weights, z, *, n, reuploads, reupload_layers, main_layers, conn, rotation, scale):
    """The PQC of the architecture description, for one latent z (n,) and weights (L, n, P)."""
    psi = np.zeros(2**n, dtype=complex)
    psi[0] = 1
    ent = entangler(n, conn)
    li = 0

    def trainable(psi, li):
        w = weights[li]
        gates = [rot(*w[k]) if rotation == "rot" else ry(w[k][0]) for k in range(n)]
        return ent @ (kron_all(gates) @ psi)

    for _ in range(reuploads):
        psi = kron_all([ry(scale * z[k]) for k in range(n)]) @ psi
        for _ in range(reupload_layers):
            psi = trainable(psi, li)
            li += 1
    for _ in range(main_layers):
        psi = trainable(psi, li)
        li += 1
    return psi


def sqe_state(weights, x, *, n, conn, rotation):
    """sQE: amplitude-encode x (d,) into n qubits, then weights (L, n, P) trainable layers."""
    psi = np.zeros(2**n, dtype=complex)
    psi[: len(x)] = x / np.linalg.norm(x)
    ent = entangler(n, conn)
    for w in weights:
        gates = [rot(*w[k]) if rotation == "rot" else ry(w[k][0]) for k in range(n)]
        psi = ent @ (kron_all(gates) @ psi)
    return psi

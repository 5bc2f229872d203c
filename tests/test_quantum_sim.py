"""Gates, statevector ops and encodings against independent dense numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.errors import ConfigError
from model.quantum import gates as G
from model.quantum import statevector as sv
from model.quantum.encoding import amplitude_encode, split_chunks
from tests import quantum_reference as ref

TOL = 1e-10


def test_gate_matrices_match_definitions():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-7, 7, size=(3, 4))
    t = torch.tensor(angles, dtype=torch.float64)
    for fn, refn in ((G.rx_matrix, ref.rx), (G.ry_matrix, ref.ry), (G.rz_matrix, ref.rz)):
        got = fn(t).numpy()
        assert got.shape == (3, 4, 2, 2)
        want = np.stack([[refn(a) for a in row] for row in angles])
        np.testing.assert_allclose(got, want, atol=TOL)
    np.testing.assert_allclose(G.ry_matrix_real(t).numpy(), G.ry_matrix(t).numpy().real, atol=TOL)
    phi, theta, omega = (torch.tensor(rng.uniform(-7, 7, 5)) for _ in range(3))
    got = G.rot_matrix(phi, theta, omega).numpy()
    want = np.stack([ref.rot(a, b, c) for a, b, c in zip(phi, theta, omega, strict=True)])
    np.testing.assert_allclose(got, want, atol=TOL)


def test_constant_gates():
    np.testing.assert_allclose(G.X.numpy(), ref.X)
    np.testing.assert_allclose(G.Y.numpy(), ref.Y)
    np.testing.assert_allclose(G.Z.numpy(), ref.Z)
    np.testing.assert_allclose((G.H @ G.H).numpy(), np.eye(2), atol=1e-6)
    np.testing.assert_allclose(G.CNOT.numpy(), ref.cnot(0, 1, 2))
    np.testing.assert_allclose(G.CZ.numpy(), ref.cz(0, 1, 2))
    # RX(pi) = -i X, RY(pi) = -i Y (definitions)
    np.testing.assert_allclose(G.rx_matrix(torch.tensor(np.pi)).numpy(), -1j * ref.X, atol=1e-6)
    np.testing.assert_allclose(G.ry_matrix(torch.tensor(np.pi)).numpy(), -1j * ref.Y, atol=1e-6)


def _random_state(rng, batch, n):
    psi = rng.normal(size=(batch, 2**n)) + 1j * rng.normal(size=(batch, 2**n))
    return psi / np.linalg.norm(psi, axis=1, keepdims=True)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_random_circuits_match_dense_unitaries(n):
    rng = np.random.default_rng(n)
    batch = 3
    psi = _random_state(rng, batch, n)
    state = torch.tensor(psi, dtype=torch.complex128)
    dense = [np.eye(2**n, dtype=complex) for _ in range(batch)]  # per-sample unitaries
    makers = [(G.rx_matrix, ref.rx), (G.ry_matrix, ref.ry), (G.rz_matrix, ref.rz)]
    for _ in range(25):
        kind = rng.integers(0, 6) if n > 1 else rng.integers(0, 3)
        if kind == 0:  # shared 1-qubit gate, random type incl. Rot
            k = int(rng.integers(n))
            if rng.random() < 0.25:
                a = rng.uniform(-4, 4, 3)
                m, u = G.rot_matrix(*torch.tensor(a)), ref.rot(*a)
            else:
                fn, rf = makers[rng.integers(3)]
                a = rng.uniform(-4, 4)
                m, u = fn(torch.tensor(a, dtype=torch.float64)), rf(a)
            state = sv.apply_1q(state, m, k, n)
            dense = [ref.on_qubit(u, k, n) @ d for d in dense]
        elif kind == 1:  # per-sample 1-qubit gate
            k = int(rng.integers(n))
            a = rng.uniform(-4, 4, (batch, 3))
            state = sv.apply_1q(state, G.rot_matrix(*torch.tensor(a).T), k, n)
            dense = [ref.on_qubit(ref.rot(*a[b]), k, n) @ dense[b] for b in range(batch)]
        elif kind == 2:  # fused layer on all qubits, random block size, per-sample
            a = rng.uniform(-4, 4, (batch, n, 3))
            block = int(rng.integers(1, n + 1))
            state = sv.apply_layer(state, G.rot_matrix(*torch.tensor(a).unbind(-1)), n, block=block)
            dense = [
                ref.kron_all([ref.rot(*a[b, k]) for k in range(n)]) @ dense[b] for b in range(batch)
            ]
        elif kind == 3:  # CNOT on a random (possibly long-range) pair
            c, t = (int(v) for v in rng.choice(n, 2, replace=False))
            state = sv.apply_cnot(state, c, t, n)
            dense = [ref.cnot(c, t, n) @ d for d in dense]
        elif kind == 4:  # CZ
            c, t = (int(v) for v in rng.choice(n, 2, replace=False))
            state = sv.apply_cz(state, c, t, n)
            dense = [ref.cz(c, t, n) @ d for d in dense]
        else:  # a whole entangling block as one permutation
            conn = int(rng.integers(1, n))
            pairs = [(i, (i + conn) % n) for i in range(n)]
            perm = sv.cnot_permutation(pairs, n)
            state = sv.apply_permutation(state, perm, torch.argsort(perm))
            dense = [ref.entangler(n, conn) @ d for d in dense]
    want = np.stack([dense[b] @ psi[b] for b in range(batch)])
    np.testing.assert_allclose(state.numpy(), want, atol=1e-9)
    zs = sv.z_expectations(sv.probabilities(state), n).numpy()
    np.testing.assert_allclose(zs, np.stack([ref.z_expect(w, n) for w in want]), atol=1e-9)


def test_cz_block_diagonal_and_real_state():
    n = 4
    pairs = [(0, 3), (1, 2), (2, 0)]
    diag = sv.cz_diagonal(pairs, n).numpy()
    want = np.eye(2**n)
    for a, b in pairs:
        want = ref.cz(a, b, n) @ want
    np.testing.assert_allclose(np.diag(diag), want.real)
    # real fast path: real state, real matrices stay real
    x = torch.randn(2, 2**n, dtype=torch.float64)
    out = sv.apply_layer(x, G.ry_matrix_real(torch.rand(n, dtype=torch.float64)), n, block=3)
    assert not out.is_complex()


def test_gradients_match_finite_differences():
    n = 3
    torch.manual_seed(0)
    psi = torch.randn(2, 2**n, dtype=torch.complex128)
    perm = sv.cnot_permutation([(0, 2), (2, 1)], n)
    inv = torch.argsort(perm)

    def f(w):
        mats = G.rot_matrix(w[..., 0], w[..., 1], w[..., 2])  # (n, 2, 2)
        s = sv.apply_layer(psi, mats, n, block=2)
        s = sv.apply_permutation(s, perm, inv)
        s = sv.apply_1q(s, G.rx_matrix(w[0, 0] * 0.5), 1, n)
        return sv.z_expectations(sv.probabilities(s), n)

    w = torch.rand(n, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-6)


def test_parameter_shift_rule():
    # d<Z_0>/dtheta = (f(theta + pi/2) - f(theta - pi/2)) / 2 for a Pauli rotation
    n = 3
    rng = np.random.default_rng(1)
    psi = torch.tensor(_random_state(rng, 1, n))

    def f(theta):
        s = sv.apply_1q(psi, G.rot_matrix(0.3, 1.1, -0.4), 0, n)
        s = sv.apply_cnot(s, 0, 2, n)
        s = sv.apply_1q(s, G.ry_matrix(theta), 2, n)
        s = sv.apply_cnot(s, 2, 0, n)
        return sv.z_expectations(sv.probabilities(s), n)[0, 0]

    theta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    f(theta).backward()
    shift = (f(theta.detach() + np.pi / 2) - f(theta.detach() - np.pi / 2)) / 2
    assert abs(theta.grad.item() - shift.item()) < 1e-10


def test_amplitude_encoding():
    x = torch.tensor([[3.0, 4.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    s = amplitude_encode(x, 2)
    assert s.shape == (2, 4)
    np.testing.assert_allclose(s.norm(dim=1).numpy(), 1.0)
    np.testing.assert_allclose(s[0].numpy(), [0.6, 0.8, 0, 0])
    assert s[1, 3] == 0
    with pytest.raises(ConfigError, match=r"of 5 values needs at least 3 qubits.*has 2 qubits"):
        amplitude_encode(torch.ones(1, 5), 2)
    chunks = split_chunks(torch.arange(1.0, 8.0)[None], 3)  # 7 -> 3 chunks of 3, last padded
    np.testing.assert_allclose(chunks[0].numpy(), [[1, 2, 3], [4, 5, 6], [7, 0, 0]])


@pytest.mark.parametrize("first,k", [(0, 2), (1, 2), (3, 2), (0, 5), (2, 1)])
@pytest.mark.parametrize("layout", ["member", "sample", "member_major"])
def test_batched_matrices_match_dense_kron(first, k, layout):
    """Per-member and per-sample matrices on a 5-qubit batch, in every layout the runner
    uses (sample-major (B, T), member-major (T, B) with (T, 1, K, K) matrices), against
    a dense ``I x M x I`` applied to each state row."""
    n, b, t = 5, 3, 4
    rng = np.random.default_rng(first * 10 + k)
    state = rng.normal(size=(b, t, 2**n)) + 1j * rng.normal(size=(b, t, 2**n))
    shape = {"member": (t, 2**k, 2**k), "sample": (b, t, 2**k, 2**k)}
    m = rng.normal(size=shape.get(layout, (t, 2**k, 2**k))) + 0j
    m = m + 1j * rng.normal(size=m.shape)
    per = np.broadcast_to(m, (b, t, 2**k, 2**k))
    want = np.empty_like(state)
    for i in range(b):
        for j in range(t):
            full = np.kron(np.kron(np.eye(2**first), per[i, j]), np.eye(2 ** (n - first - k)))
            want[i, j] = full @ state[i, j]
    s, mt = torch.tensor(state, dtype=torch.complex128), torch.tensor(m, dtype=torch.complex128)
    if layout == "member_major":  # (T, B, N) state, (T, 1, K, K) matrices
        got = sv.apply_matrix(s.transpose(0, 1).contiguous(), mt[:, None], first, n).transpose(0, 1)
    else:
        got = sv.apply_matrix(s, mt, first, n)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


def test_permute_amplitudes_equals_indexing():
    perm = sv.cnot_permutation([(0, 2), (2, 1), (1, 0)], 3)
    state = torch.randn(2, 5, 8, dtype=torch.complex64)
    assert torch.equal(sv.permute_amplitudes(state, perm), state[..., perm])
    assert torch.equal(sv.permute_amplitudes(state[:, ::2], perm), state[:, ::2][..., perm])


def test_probabilities_gradient_is_autograds_of_re2_plus_im2():
    psi = torch.randn(3, 8, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(sv.probabilities, (psi,))
    w = torch.randn(3, 8, dtype=torch.float64)
    (got,) = torch.autograd.grad((sv.probabilities(psi) * w).sum(), psi)
    (want,) = torch.autograd.grad(((psi.real.square() + psi.imag.square()) * w).sum(), psi)
    torch.testing.assert_close(got, want)

"""Shot-noise sampling statistics; Pauli trajectories vs the exact density matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.quantum import noise as qn
from model.quantum.circuits import CircuitRunner, CircuitSpec, Op, pqc_spec
from model.quantum.density import density_expectations
from model.quantum.statevector import probabilities, z_expectations
from tests import quantum_reference as ref


def test_gaussian_shot_noise_moments():
    torch.manual_seed(0)
    p = torch.tensor([0.3, 0.25, 0.2, 0.15, 0.1], dtype=torch.float64)
    shots, draws = 2000, 40000  # clipping at 0 is ~20 sigma away: moments are the unrectified ones
    p_hat = qn.gaussian_shot_probs(p.expand(draws, -1), shots)
    sigma = (torch.diag(p) - torch.outer(p, p)) / shots
    mean = p_hat.mean(0)
    se_mean = (sigma.diagonal() / draws).sqrt()
    assert ((mean - p).abs() < 5 * se_mean + 1e-12).all()
    centred = p_hat - p_hat.mean(0)
    cov = centred.T @ centred / (draws - 1)
    # standard error of a sample covariance of Gaussians: sqrt((s_ii s_jj + s_ij^2) / D)
    se_cov = ((sigma.diagonal()[:, None] * sigma.diagonal()[None, :] + sigma**2) / draws).sqrt()
    assert ((cov - sigma).abs() < 5 * se_cov).all(), (cov, sigma)
    np.testing.assert_allclose(p_hat.sum(-1).numpy(), 1.0)


def test_gaussian_shot_noise_is_differentiable_and_rectified():
    logits = torch.randn(3, 8, requires_grad=True)
    p = logits.softmax(-1)
    p_hat = qn.gaussian_shot_probs(p, 4)  # few shots: clipping happens
    assert (p_hat >= 0).all()
    np.testing.assert_allclose(p_hat.sum(-1).detach().numpy(), 1.0, rtol=1e-6)
    z_expectations(p_hat, 3).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_multinomial_shot_frequencies():
    torch.manual_seed(1)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    shots, rows = 100, 4000
    freq = qn.multinomial_shot_probs(p.expand(rows, -1), shots)
    assert torch.allclose(freq * shots, (freq * shots).round())  # counts / S
    np.testing.assert_allclose(freq.sum(-1).numpy(), 1.0, rtol=1e-6)
    se = (p * (1 - p) / (shots * rows)).sqrt()
    assert ((freq.mean(0) - p).abs() < 5 * se).all()
    var = freq.var(0)
    assert ((var - p * (1 - p) / shots).abs() < 0.1 * p * (1 - p) / shots + 1e-9).all()
    assert qn.shot_probs(p, 0, training=True) is p


def _pauli_dense(x, z):
    return ref.kron_all(
        [
            np.linalg.matrix_power(ref.X, int(a)) @ np.linalg.matrix_power(ref.Z, int(b))
            for a, b in zip(x, z, strict=True)
        ]
    )


def test_pauli_frame_and_cnot_propagation_match_dense():
    n = 4
    rng = np.random.default_rng(3)
    psi = rng.normal(size=(5, 2**n)) + 1j * rng.normal(size=(5, 2**n))
    x = torch.tensor(rng.integers(0, 2, (5, n)), dtype=torch.bool)
    z = torch.tensor(rng.integers(0, 2, (5, n)), dtype=torch.bool)
    out = qn.apply_pauli_frame(torch.tensor(psi), x, z).numpy()
    for b in range(5):
        np.testing.assert_allclose(out[b], _pauli_dense(x[b], z[b]) @ psi[b], atol=1e-12)
    # CNOT P = P' CNOT up to a sign, with P' the propagated frame
    for b in range(5):
        c, t = (int(v) for v in rng.choice(n, 2, replace=False))
        x2, z2 = qn.propagate_cnot(x[b : b + 1], z[b : b + 1], c, t)
        lhs = ref.cnot(c, t, n) @ _pauli_dense(x[b], z[b])
        rhs = _pauli_dense(x2[0], z2[0]) @ ref.cnot(c, t, n)
        assert np.allclose(lhs, rhs) or np.allclose(lhs, -rhs)


def test_one_qubit_depolarizing_shrinks_z():
    p1, theta = 0.3, 0.8
    spec = CircuitSpec(1, "ry", 1, (Op("rotate", 0),))
    w = torch.full((1, 1, 1), theta, dtype=torch.float64)
    exact = density_expectations(spec, w, None, p1=p1)[0, 0].item()
    assert abs(exact - (1 - 4 * p1 / 3) * math.cos(theta)) < 1e-12
    torch.manual_seed(4)
    runner = CircuitRunner(spec)
    samples = 20000
    state = torch.zeros(samples, 2, dtype=torch.float64)
    state[:, 0] = 1
    zs = z_expectations(probabilities(runner(state, w, p1=p1)), 1)[:, 0]
    se = zs.std().item() / samples**0.5
    assert abs(zs.mean().item() - exact) < 5 * se


@pytest.mark.slow
@pytest.mark.parametrize("q,conn,rotation", [(2, 1, "rot"), (3, 2, "ry"), (4, 1, "rot")])
def test_trajectories_average_to_density_matrix(q, conn, rotation):
    cfg = TrialConfig(qubits=q, connectivity=conn, rotation=rotation, reuploads=2, main_layers=1)
    spec = pqc_spec(cfg)
    torch.manual_seed(q)
    per = 3 if rotation == "rot" else 1
    w = torch.rand(spec.n_layers, q, per, dtype=torch.float64) * 2 * math.pi
    z = torch.rand(2, q, dtype=torch.float64) * 2 - 1
    p1, p2 = 0.05, 0.15
    exact = density_expectations(spec, w, z, p1=p1, p2=p2, input_scale=cfg.input_scale)
    noiseless = density_expectations(spec, w, z, input_scale=cfg.input_scale)
    runner = CircuitRunner(spec)
    reps = 6000
    zz = z.repeat_interleave(reps, 0)
    state = torch.zeros(zz.shape[0], 2**q, dtype=torch.float64)
    state[:, 0] = 1
    out = z_expectations(probabilities(runner(state, w, zz, p1=p1, p2=p2)), q)
    out = out.reshape(2, reps, q)
    se = out.std(1) / reps**0.5
    assert ((out.mean(1) - exact).abs() < 5 * se + 1e-9).all(), (out.mean(1), exact)
    # the noise is visible: the noisy and noiseless references differ by much more than the error
    assert (exact - noiseless).abs().max() > 10 * se.max()


def test_multinomial_shot_covariance_and_rare_outcomes():
    """Counts are multinomial, not independent binomials: Cov(n_i, n_j) = -S p_i p_j; an
    outcome of probability 0 is never drawn, one of probability 1 always."""
    torch.manual_seed(2)
    p = torch.tensor([0.4, 0.35, 0.2, 0.05, 0.0])
    shots, rows = 64, 20000
    counts = qn.multinomial_shot_probs(p.expand(rows, -1), shots) * shots
    assert (counts.sum(-1) == shots).all() and (counts[:, 4] == 0).all()
    cov = torch.cov(counts[:, :4].T.double())
    want = shots * (torch.diag(p[:4]) - torch.outer(p[:4], p[:4])).double()
    assert torch.allclose(cov, want, atol=0.06 * shots * 0.25)
    one = qn.multinomial_shot_probs(torch.tensor([[0.0, 1.0, 0.0]]), 8192)
    assert one.tolist() == [[0.0, 1.0, 0.0]]

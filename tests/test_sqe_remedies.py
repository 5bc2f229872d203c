"""Remedies for the sQE bottleneck: amplitude offset (fixed, trainable) and the ZZ readout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.errors import ConfigError
from model.heads.quantum import QuantumHead, expected_parameter_count
from model.quantum.encoding import amplitude_encode
from model.quantum.statevector import zz_pairs
from model.training import count_parameters
from tests import quantum_reference as ref


def _cfg(**kw) -> TrialConfig:
    return TrialConfig.from_dict(kw)


def test_offset_zero_is_the_plain_encoding():
    x = torch.randn(5, 3, 6, dtype=torch.float64)
    np.testing.assert_array_equal(
        amplitude_encode(x, 3, offset=0.0).numpy(), amplitude_encode(x, 3).numpy()
    )
    head_plain = QuantumHead(_cfg(qubits=3, encoder_layers=2), 6).double()
    head_zero = QuantumHead(_cfg(qubits=3, encoder_layers=2, amplitude_offset_trainable=True), 6)
    head_zero = head_zero.double()
    head_zero.load_state_dict(
        {**head_plain.state_dict(), "encoder.offset": head_zero.encoder.offset}
    )
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(head_zero(x), head_plain(x), atol=1e-12, rtol=0)


def test_offset_amplitudes_by_hand():
    # x = (1, 2, 2), offset 4: norm sqrt(1 + 4 + 4 + 16) = 5 -> (0.2, 0.4, 0.4, 0.8)
    state = amplitude_encode(torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64), 2, offset=4.0)
    np.testing.assert_allclose(state.numpy(), [[0.2, 0.4, 0.4, 0.8]], atol=1e-15)
    # a per-row offset tensor broadcasts like a column
    rows = torch.tensor([[3.0], [0.0]], dtype=torch.float64)
    state = amplitude_encode(torch.tensor([[4.0], [2.0]], dtype=torch.float64), 1, offset=rows)
    np.testing.assert_allclose(state.numpy(), [[0.8, 0.6], [1.0, 0.0]], atol=1e-15)


@pytest.mark.parametrize("trainable", [False, True])
def test_offset_latent_by_hand_two_qubits(trainable):
    """One sQE layer: RY(pi/2) on qubit 0, RY(0) on qubit 1, then CNOT 0->1, CNOT 1->0.

    Amplitudes a = (x0, x1, x2, o) / N, N^2 = |x|^2 + o^2. RY(pi/2) on qubit 0 gives
    ((x0 - x2), (x1 - o), (x0 + x2), (x1 + o)) / (sqrt2 N); CNOT 0->1 swaps |10>, |11>;
    CNOT 1->0 then swaps |01>, |11>: b = ((x0-x2), (x0+x2), (x1+o), (x1-o)) / (sqrt2 N).
    <Z0> = (x0^2 + x2^2 - x1^2 - o^2) / N^2 and <Z1> = 2 (x1 o - x0 x2) / N^2.
    x = (1, 2, 2), o = 4 (N = 5): <Z0> = -15/25, <Z1> = 12/25; for -x: <Z1> = -20/25.
    Without offset (N = 3): <Z0> = 1/9, <Z1> = -4/9 for x and -x alike.
    """
    cfg = _cfg(
        qubits=2,
        encoder_layers=1,
        rotation="ry",
        amplitude_offset=4.0,
        amplitude_offset_trainable=trainable,
    )
    head = QuantumHead(cfg, 3).double()
    with torch.no_grad():
        head.encoder.weights.zero_()
        head.encoder.weights[0, 0, 0, 0, 0] = math.pi / 2  # (L, T, E, q, P)
    x = torch.tensor([[1.0, 2.0, 2.0], [-1.0, -2.0, -2.0]], dtype=torch.float64)
    np.testing.assert_allclose(
        head.latent(x).detach().numpy(), [[-15 / 25, 12 / 25], [-15 / 25, -20 / 25]], atol=1e-12
    )
    plain = QuantumHead(cfg.replace(amplitude_offset=0.0, amplitude_offset_trainable=False), 3)
    plain = plain.double()
    with torch.no_grad():
        plain.encoder.weights.copy_(head.encoder.weights)
    np.testing.assert_allclose(
        plain.latent(x).detach().numpy(), [[1 / 9, -4 / 9], [1 / 9, -4 / 9]], atol=1e-12
    )


def test_trainable_offset_gets_a_gradient_per_member():
    cfg = _cfg(qubits=3, encoder_layers=2, amplitude_offset=0.5, amplitude_offset_trainable=True)
    head = QuantumHead(cfg, 7, seeds=[0, 1])
    offset = head.encoder.offset
    assert offset.shape == (2,) and torch.all(offset == 0.5)
    x = torch.randn(6, 2, 7)
    y = torch.tensor([[0, 1], [1, 0], [1, 1], [0, 0], [1, 0], [0, 1]])
    loss = torch.nn.functional.cross_entropy(head(x).reshape(-1, 2), y.reshape(-1))
    loss.backward()
    assert offset.grad is not None and torch.all(offset.grad.abs() > 0)
    # finite difference on member 1's offset
    eps = 1e-4
    with torch.no_grad():
        base = offset.detach().clone()
        vals = []
        for s in (eps, -eps):
            offset.copy_(base)
            offset[1] += s
            out = head(x).reshape(-1, 2)
            vals.append(torch.nn.functional.cross_entropy(out, y.reshape(-1)).item())
        offset.copy_(base)
    assert (vals[0] - vals[1]) / (2 * eps) == pytest.approx(offset.grad[1].item(), abs=2e-3)
    # adjoint differentiation carries the gradient back to the encoded state, hence the offset
    lean = QuantumHead(cfg, 7, seeds=[0, 1], adjoint=True)
    lean.load_state_dict(head.state_dict())
    torch.nn.functional.cross_entropy(lean(x).reshape(-1, 2), y.reshape(-1)).backward()
    torch.testing.assert_close(lean.encoder.offset.grad, offset.grad, atol=1e-5, rtol=1e-4)


def test_offset_capacity_error_and_counts():
    QuantumHead(_cfg(qubits=2), 4)  # 4 values fit in 4 amplitudes
    with pytest.raises(ConfigError, match=r"4 \+ 1 offset amplitude values.*2\*\*2 = 4 < 5"):
        QuantumHead(_cfg(qubits=2, amplitude_offset=1.0), 4)
    with pytest.raises(ConfigError, match="qubits >= 10 or more encoders"):
        QuantumHead(_cfg(qubits=9, encoders=2, amplitude_offset_trainable=True), 1024)
    for kw in (
        dict(amplitude_offset=1.0),
        dict(amplitude_offset_trainable=True),
        dict(amplitude_offset_trainable=True, encoders=2, encoder_combine="linear"),
        dict(sqe_readout="zz"),
        dict(sqe_readout="zz", encoders=3, amplitude_offset_trainable=True),
    ):
        cfg = _cfg(qubits=4, **kw)
        assert count_parameters(QuantumHead(cfg, 13)) == expected_parameter_count(cfg, 13), kw
    base = expected_parameter_count(_cfg(qubits=10), 768)
    assert (
        expected_parameter_count(_cfg(qubits=10, amplitude_offset_trainable=True), 768) == base + 1
    )
    assert expected_parameter_count(_cfg(qubits=10, amplitude_offset=0.7), 768) == base
    # zz: 10 Z + 10 ring ZZ values -> Linear(20, 10)
    assert expected_parameter_count(_cfg(qubits=10, sqe_readout="zz"), 768) == base + 20 * 10 + 10
    with pytest.raises(ConfigError, match="sqe_readout = 'xx'.*allowed: z, zz"):
        _cfg(sqe_readout="xx")
    with pytest.raises(ConfigError, match="amplitude_offset = nan"):
        _cfg(amplitude_offset=float("nan"))


def test_zz_pairs():
    assert zz_pairs(1) == [] and zz_pairs(2) == [(0, 1)]
    assert zz_pairs(4) == [(0, 1), (1, 2), (2, 3), (3, 0)]


@pytest.mark.parametrize("kw", [dict(qubits=3), dict(qubits=2, encoders=2, amplitude_offset=0.3)])
def test_zz_readout_against_dense_reference(kw):
    cfg = _cfg(encoder_layers=2, sqe_readout="zz", **kw)
    q, e = cfg.qubits, cfg.encoders
    d = 5
    torch.manual_seed(3)
    head = QuantumHead(cfg, d).double()
    x = torch.randn(3, d, dtype=torch.float64)
    got = head.latent(x).detach().numpy()
    chunk = -(-d // e)
    xp = np.zeros((3, chunk * e))
    xp[:, :d] = x.numpy()
    sw = head.encoder.weights[:, 0].detach().numpy()  # (L, E, q, P)
    w = head.encoder.readout.weight[0].detach().numpy()  # (q, F)
    bias = head.encoder.readout.bias[0].detach().numpy()
    pairs = [(0, 1)] if q == 2 else [(i, (i + 1) % q) for i in range(q)]
    for b in range(3):
        lat = []
        for j in range(e):
            part = xp[b, j * chunk : (j + 1) * chunk]
            if cfg.amplitude_offset:
                part = np.append(part, cfg.amplitude_offset)
            psi = ref.sqe_state(sw[:, j], part, n=q, conn=1, rotation="rot")
            zz = [
                np.real(psi.conj() @ ref.on_qubit(ref.Z, i, q) @ ref.on_qubit(ref.Z, k, q) @ psi)
                for i, k in pairs
            ]
            feats = np.concatenate([ref.z_expect(psi, q), zz])
            lat.append(np.tanh(w @ feats + bias))
        np.testing.assert_allclose(got[b], np.mean(lat, axis=0), atol=1e-12)

"""QuantumHead against dense references; parameter counts; errors; QASM round trip."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.errors import ConfigError
from model.heads.quantum import QuantumHead, count_parameters, expected_parameter_count
from model.quantum.qasm import export_pqc
from tests import test_quantum_reference as ref


def _cfg(**kw) -> TrialConfig:
    return TrialConfig.from_dict(kw)


@pytest.mark.parametrize(
    "kw",
    [
        dict(qubits=3, rotation="rot", connectivity=1),
        dict(
            qubits=4, rotation="ry", connectivity=3, reuploads=2, reupload_layers=2, main_layers=1
        ),
        dict(qubits=4, rotation="rot", connectivity=2, encoders=2, encoder_layers=2),
        dict(qubits=2, rotation="rot", encoders=3, encoder_combine="linear", final_linear=False),
        dict(qubits=1, rotation="rot", reuploads=2, main_layers=1),
    ],
)
def test_head_matches_dense_reference(kw):
    cfg = _cfg(**kw)
    q = cfg.qubits
    d = min(2**q * cfg.encoders, 11)
    torch.manual_seed(0)
    head = QuantumHead(cfg, d).double()
    x = torch.randn(3, d, dtype=torch.float64)
    logits = head(x).detach().numpy()

    e = cfg.encoders
    chunk = -(-d // e)
    xp = np.zeros((3, chunk * e))
    xp[:, :d] = x.numpy()
    sw = head.encoder.weights[:, 0].detach().numpy()  # (L, E, q, P) of member 0
    pw = head.pqc.weights[:, 0].detach().numpy()  # (L, q, P)
    want = []
    for b in range(3):
        lat = []
        for j in range(e):
            psi = ref.sqe_state(
                sw[:, j],
                xp[b, j * chunk : (j + 1) * chunk],
                n=q,
                conn=cfg.connectivity,
                rotation=cfg.rotation,
            )
            lat.append(ref.z_expect(psi, q))
        lat = np.stack(lat)  # (E, q)
        if e == 1:
            z = lat[0]
        elif cfg.encoder_combine == "mean":
            z = lat.mean(0)
        else:
            lin = head.encoder.combine
            z = np.tanh(
                lin.weight[0].detach().numpy() @ lat.reshape(-1) + lin.bias[0].detach().numpy()
            )
        psi = ref.pqc_state(
            pw,
            z,
            n=q,
            reuploads=cfg.reuploads,
            reupload_layers=cfg.reupload_layers,
            main_layers=cfg.main_layers,
            conn=cfg.connectivity,
            rotation=cfg.rotation,
            scale=cfg.input_scale,
        )
        zz = ref.z_expect(psi, q)
        if cfg.final_linear:
            out = head.linear.weight[0].detach().numpy() @ zz + head.linear.bias[0].detach().numpy()
        else:
            p1 = (1 - zz[0]) / 2
            out = np.log(np.clip([1 - p1, p1], 1e-6, 1))
        want.append(out)
    np.testing.assert_allclose(logits, np.stack(want), atol=1e-9)


def test_head_gradients_finite_differences_and_parameter_shift():
    cfg = _cfg(qubits=3, reuploads=2, main_layers=1, encoder_layers=2)
    torch.manual_seed(1)
    head = QuantumHead(cfg, 6).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    w = head.pqc.weights

    def loss_of(wv):
        with torch.no_grad():
            old = w.detach().clone()
            w.copy_(wv)
            out = torch.nn.functional.cross_entropy(head(x), y)
            w.copy_(old)
        return out.item()

    loss = torch.nn.functional.cross_entropy(head(x), y)
    loss.backward()
    grad = w.grad.clone()
    base = w.detach().clone()
    for idx in [(0, 0, 0, 0), (1, 0, 2, 1), (2, 0, 1, 2)]:  # (L, T=1, q, P)
        e = torch.zeros_like(base)
        e[idx] = 1e-6
        fd = (loss_of(base + e) - loss_of(base - e)) / 2e-6
        assert abs(fd - grad[idx].item()) < 1e-6
    # parameter shift on a single Z expectation (one angle appears once in the circuit)
    z = head.latent(x).detach()[:, None]  # (B, T=1, q)
    pqc = head.pqc
    for idx in [(0, 0, 1, 1), (2, 0, 0, 0)]:
        pqc.zero_grad()
        pqc(z)[0, 0, 0].backward()
        g = pqc.weights.grad[idx].item()
        vals = []
        for s in (math.pi / 2, -math.pi / 2):
            with torch.no_grad():
                pqc.weights[idx] += s
                vals.append(pqc(z)[0, 0, 0].item())
                pqc.weights[idx] -= s
        assert abs(g - (vals[0] - vals[1]) / 2) < 1e-10


def test_parameter_counts_paper_table_ii():
    # Our counts with R=4, N=1, M=2, rot, encoder_layers=5, final_linear: 35 q + 2
    # (paper: 353 / 423 / 633 = 35 q + 3).
    table = {10: 352, 12: 422, 18: 632}
    for q, want in table.items():
        cfg = _cfg(qubits=q)
        assert 35 * q + 2 == want
        assert expected_parameter_count(cfg, 768) == want
        if q <= 12:
            assert count_parameters(QuantumHead(cfg, 768)) == want
    # multi-sQE (paper: 858 / 886 / 914); ours with E encoders, mean combine: 15 E q + 20 q + 2
    for q, e in [(10, 2), (14, 4), (18, 8)]:
        cfg = _cfg(qubits=q, encoders=e)
        want = 15 * e * q + 18 * q + 2 * q + 2
        assert expected_parameter_count(cfg, 768) == want
        if q <= 14:
            assert count_parameters(QuantumHead(cfg, 768)) == want
    cfg = _cfg(qubits=4, encoders=3, encoder_combine="linear", head="quantum")
    assert count_parameters(QuantumHead(cfg, 40)) == expected_parameter_count(cfg, 40)
    cfg = _cfg(qubits=4, head="mlp_encoder", hidden=7)
    assert count_parameters(QuantumHead(cfg, 40)) == (40 * 7 + 7) + (7 * 4 + 4) + 6 * 12 + 10


def test_config_errors_are_precise():
    with pytest.raises(ConfigError, match=r"qubits = 9.*768.*2\*\*9 = 512"):
        QuantumHead(_cfg(qubits=9), 768)
    QuantumHead(_cfg(qubits=9, encoders=2, encoder_layers=1), 768)  # 384 per encoder fits
    with pytest.raises(ConfigError, match="not a quantum head"):
        QuantumHead(_cfg(head="mlp"), 768)
    with pytest.raises(ConfigError, match="encoders = 5"):
        QuantumHead(_cfg(qubits=2, encoders=5), 4)
    head = QuantumHead(_cfg(qubits=3, head="mlp_encoder"), 5)
    with pytest.raises(ConfigError, match=r"\(B, 5\)"):
        head(torch.zeros(2, 6))


def test_mlp_encoder_feeds_the_pqc():
    cfg = _cfg(qubits=3, head="mlp_encoder", hidden=4)
    head = QuantumHead(cfg, 8)
    z = head.latent(torch.randn(5, 8))
    assert z.shape == (5, 3) and z.abs().max() <= 1
    assert head(torch.randn(5, 8)).shape == (5, 2)


def _qasm_z(text: str) -> np.ndarray:
    """A tiny independent OpenQASM 2.0 reader (ry, rz, cx, measure) -> dense <Z_k>."""
    n = int(re.search(r"qreg q\[(\d+)\];", text).group(1))
    assert text.startswith('OPENQASM 2.0;\ninclude "qelib1.inc";')
    psi = np.zeros(2**n, dtype=complex)
    psi[0] = 1
    for line in text.splitlines()[4:]:
        if m := re.fullmatch(r"(ry|rz)\(([-0-9.e+]+)\) q\[(\d+)\];", line):
            gate = ref.ry if m.group(1) == "ry" else ref.rz
            psi = ref.on_qubit(gate(float(m.group(2))), int(m.group(3)), n) @ psi
        elif m := re.fullmatch(r"cx q\[(\d+)\],q\[(\d+)\];", line):
            psi = ref.cnot(int(m.group(1)), int(m.group(2)), n) @ psi
        else:
            assert re.fullmatch(r"measure q\[\d+\] -> c\[\d+\];", line), line
    return ref.z_expect(psi, n)


@pytest.mark.parametrize("rotation", ["rot", "ry"])
def test_qasm_export_round_trip(rotation):
    cfg = _cfg(qubits=4, rotation=rotation, connectivity=2, reuploads=2)
    torch.manual_seed(2)
    head = QuantumHead(cfg, 12)
    text, z = export_pqc(head, torch.randn(1, 12))
    assert len(z) == 4
    assert text.count("measure") == 4 and text.count("cx ") == 4 * (2 + 2)
    np.testing.assert_allclose(_qasm_z(text), z, atol=1e-5)


def test_noisy_head_trains_and_evaluates():
    cfg = _cfg(qubits=3, shots=200, noise_p1=0.02, noise_p2=0.05, reuploads=2)
    torch.manual_seed(5)
    head = QuantumHead(cfg, 8)
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 0, 1, 1, 0])
    head.train()
    torch.nn.functional.cross_entropy(head(x), y).backward()
    assert head.pqc.weights.grad.abs().sum() > 0
    assert head.encoder.weights.grad.abs().sum() > 0
    head.eval()
    with torch.no_grad():
        z = head.pqc(head.latent(x)[:, None])[:, 0]
    # eval shot noise: each <Z> is (even count difference) / shots
    half = z * 100  # = count(0) - 100, an integer
    np.testing.assert_allclose(half.numpy(), half.round().numpy(), atol=1e-3)

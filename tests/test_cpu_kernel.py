"""The compiled CPU circuit kernel against dense references and against the torch path.

Forward: dense numpy matrices (``tests/quantum_reference.py``). Gradients: autograd
through dense complex128 torch matrices built with ``torch.kron`` (no qsweep simulator
code), for the state and for every gate. Then the circuit runner and the head with
``cpu_kernel`` on against the torch path, packed and unpacked, Rot and RY, fused and
unfused encodings. Needs a C compiler (CI installs gcc).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.errors import ConfigError
from model.heads.quantum import QuantumHead
from model.quantum import cpu_kernel
from model.quantum.circuits import CircuitRunner, pqc_spec, sqe_spec
from model.quantum.gates import rot_matrix
from model.quantum.statevector import cnot_permutation
from tests import quantum_reference as ref
from tests.conftest import require_or_skip


@pytest.fixture(autouse=True)
def _needs_kernel():
    require_or_skip(cpu_kernel.available(4), f"CPU kernel: {cpu_kernel.build_error(4)}")


def _unitaries(*shape: int, generator: torch.Generator) -> torch.Tensor:
    w = torch.randn(*shape, 3, generator=generator, dtype=torch.float64) * 2
    return rot_matrix(w[..., 0], w[..., 1], w[..., 2]).to(torch.complex64)


def _problem(n: int, seed: int, states: int = 3):
    g = torch.Generator().manual_seed(seed)
    prog = [0, -1, 1, 2, -1, 3] if n > 1 else [0, 1, 2, 3]
    if n == 1:
        perm = torch.arange(2)
    else:
        perm = cnot_permutation([(i, (i + 1 + seed % (n - 1)) % n) for i in range(n)], n)
    psi = torch.randn(states, 2**n, dtype=torch.complex64, generator=g)
    psi = psi / psi.abs().square().sum(-1, keepdim=True).sqrt()
    return psi, _unitaries(states, 4, n, generator=g), prog, perm


def _dense(gates: torch.Tensor, prog: list[int], perm: torch.Tensor, n: int) -> torch.Tensor:
    """(S, 2**n, 2**n) complex128 circuit unitaries from the gates, with torch.kron."""
    s = gates.shape[0]
    p = torch.eye(2**n, dtype=torch.complex128)[perm]  # new = P old, new[i] = old[perm[i]]
    out = []
    for b in range(s):
        u = torch.eye(2**n, dtype=torch.complex128)
        for k in prog:
            if k < 0:
                u = p @ u
                continue
            layer = torch.ones(1, 1, dtype=torch.complex128)
            for q in range(n):
                layer = torch.kron(layer, gates[b, k, q].to(torch.complex128))
            u = layer @ u
        out.append(u)
    return torch.stack(out)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_forward_matches_dense_numpy(n):
    psi, gates, prog, perm = _problem(n, seed=n)
    got = cpu_kernel.run_circuit(psi, gates, prog, perm, torch.argsort(perm))[0].numpy()
    for b in range(psi.shape[0]):
        u = np.eye(2**n, dtype=complex)
        for k in prog:
            if k < 0:
                u = np.eye(2**n)[perm.numpy()] @ u
            else:
                u = ref.kron_all([gates[b, k, q].numpy() for q in range(n)]) @ u
        np.testing.assert_allclose(got[b], u @ psi[b].numpy(), atol=2e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_gradients_match_autograd_on_dense_matrices(n):
    psi, gates, prog, perm = _problem(n, seed=10 + n)
    weight = torch.randn(
        psi.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(1)
    )

    def loss(out):  # a real loss that is not a function of |psi|^2 alone
        return (out * weight).real.sum() + out.abs().square()[..., :1].sum()

    a_psi, a_gates = psi.clone().requires_grad_(), gates.clone().requires_grad_()
    got = torch.autograd.grad(
        loss(cpu_kernel.run_circuit(a_psi, a_gates, prog, perm, torch.argsort(perm))[0]),
        [a_psi, a_gates],
    )
    d_psi = psi.to(torch.complex128).requires_grad_()
    d_gates = gates.to(torch.complex128).requires_grad_()
    dense = _dense(d_gates, prog, perm, n)
    want = torch.autograd.grad(loss((dense @ d_psi.unsqueeze(-1)).squeeze(-1)), [d_psi, d_gates])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.to(torch.complex128), w, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("n", [2, 5])
def test_real_input_and_probability_output_gradients(n):
    _, gates, prog, perm = _problem(n, seed=20 + n)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2**n, generator=g)
    x = x / x.norm(dim=-1, keepdim=True)  # a real, amplitude-encoded state
    w_state = torch.randn(3, 2**n, dtype=torch.complex64, generator=g)
    w_probs = torch.randn(3, 2**n, generator=g)

    def loss(out, probs):  # both outputs at once: their gradients add up
        return (out * w_state).real.sum() + (probs * w_probs).sum()

    a_x, a_gates = x.clone().requires_grad_(), gates.clone().requires_grad_()
    out, probs = cpu_kernel.run_circuit(a_x, a_gates, prog, perm, torch.argsort(perm))
    torch.testing.assert_close(probs, out.abs().square(), atol=1e-6, rtol=1e-5)
    got = torch.autograd.grad(loss(out, probs), [a_x, a_gates])
    assert got[0].dtype == torch.float32  # a real input gets a real gradient
    d_x = x.double().requires_grad_()
    d_gates = gates.to(torch.complex128).requires_grad_()
    final = (_dense(d_gates, prog, perm, n) @ d_x.to(torch.complex128).unsqueeze(-1)).squeeze(-1)
    want = torch.autograd.grad(loss(final, final.abs().square()), [d_x, d_gates])
    torch.testing.assert_close(got[0].double(), want[0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got[1].to(torch.complex128), want[1], atol=2e-5, rtol=1e-4)


def _runner_pair(spec):
    return CircuitRunner(spec, cpu_kernel="on"), CircuitRunner(spec, cpu_kernel="off")


@pytest.mark.parametrize(
    "kw",
    [
        dict(qubits=5, rotation="rot", connectivity=1, reuploads=2, main_layers=2),
        dict(qubits=4, rotation="ry", connectivity=2, reuploads=3, reupload_layers=2),
        dict(qubits=3, rotation="rot", connectivity=2, reuploads=2, reupload_layers=0),
        dict(qubits=10, rotation="rot", connectivity=1, reuploads=4, main_layers=2),
    ],
)
@pytest.mark.parametrize("members", [0, 3])
def test_pqc_kernel_matches_torch_path(kw, members):
    cfg = TrialConfig.from_dict(kw)
    q, g = cfg.qubits, torch.Generator().manual_seed(7)
    spec = pqc_spec(cfg)
    per = 3 if cfg.rotation == "rot" else 1
    wshape = (spec.n_layers, members, q, per) if members else (spec.n_layers, q, per)
    bshape = (4, members) if members else (4,)
    results = []
    for runner in _runner_pair(spec):
        w = (torch.randn(wshape, generator=torch.Generator().manual_seed(1))).requires_grad_()
        z = torch.rand(*bshape, q, generator=g.manual_seed(2)).mul(2).sub(1).requires_grad_()
        state = torch.zeros(*bshape, 2**q)
        state[..., 0] = 1
        out = runner(state, w, z)
        probs = out.abs().square() if out.is_complex() else out.square()
        loss = (probs * torch.linspace(-1, 1, 2**q)).sum()
        results.append((probs.detach(), *torch.autograd.grad(loss, [w, z])))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("members", [0, 2])
def test_sqe_kernel_matches_torch_path_with_input_gradient(members):
    cfg = TrialConfig(qubits=6, encoder_layers=3, connectivity=2)
    spec = sqe_spec(cfg)
    wshape = (spec.n_layers, members, 1, 6, 3) if members else (spec.n_layers, 6, 3)
    bshape = (5, members, 1) if members else (5,)
    results = []
    for runner in _runner_pair(spec):
        w = torch.randn(wshape, generator=torch.Generator().manual_seed(3)).requires_grad_()
        x = torch.randn(*bshape, 64, generator=torch.Generator().manual_seed(4))
        x = (x / x.norm(dim=-1, keepdim=True)).requires_grad_()  # real amplitude encoding
        probs = runner(x, w).abs().square()
        loss = (probs * torch.linspace(0, 1, 64)).sum()
        results.append((probs.detach(), *torch.autograd.grad(loss, [w, x])))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_head_logits_and_gradients_match_with_kernel_on_and_off():
    x = torch.randn(6, 3, 48, generator=torch.Generator().manual_seed(5))
    outs = []
    for mode in ("on", "off"):
        cfg = TrialConfig(qubits=6, encoder_layers=2, reuploads=2, cpu_kernel=mode)
        head = QuantumHead(cfg, 48, seeds=[0, 1, 2])
        logits = head(x)
        grads = torch.autograd.grad(logits.logsumexp(-1).sum(), list(head.parameters()))
        outs.append((logits.detach(), *grads))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_noise_and_float64_stay_on_the_torch_path(monkeypatch):
    calls, real = [], cpu_kernel.run_layers
    monkeypatch.setattr(
        cpu_kernel, "run_layers", lambda *a, **kw: calls.append(a) or real(*a, **kw)
    )
    spec = pqc_spec(TrialConfig(qubits=3))
    runner = CircuitRunner(spec, cpu_kernel="on")
    w = torch.zeros(spec.n_layers, 3, 3)
    z, state = torch.zeros(2, 3), torch.zeros(2, 8)
    state[:, 0] = 1
    runner(state, w, z, p1=0.1)
    runner(state.double(), w.double(), z.double())
    assert calls == []
    runner(state, w, z)
    runner(state, w, z, adjoint=True)  # the kernel's backward is adjoint differentiation
    assert len(calls) == 2


def test_on_without_a_compiler_is_a_clear_error_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(
        cpu_kernel, "_library", lambda n: (None, "no C compiler (gcc or cc) on PATH")
    )
    spec = pqc_spec(TrialConfig(qubits=3))
    w = torch.zeros(spec.n_layers, 3, 3)
    z, state = torch.zeros(2, 3), torch.zeros(2, 8)
    state[:, 0] = 1
    with pytest.raises(ConfigError, match=r"cpu_kernel = 'on'.*no C compiler.*auto"):
        CircuitRunner(spec, cpu_kernel="on")(state, w, z)
    monkeypatch.setattr(cpu_kernel, "_warned", set())
    with pytest.warns(RuntimeWarning, match="torch path"):
        out = CircuitRunner(spec, cpu_kernel="auto")(state, w, z)
    torch.testing.assert_close(out.abs().square().sum(-1), torch.ones(2))


def test_one_library_per_qubit_count_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("QSWEEP_KERNEL_CACHE", str(tmp_path))
    cpu_kernel._library.cache_clear()
    try:
        assert cpu_kernel.available(3) and cpu_kernel.available(5)
        built = sorted(p.name for p in tmp_path.iterdir())
        assert len(built) == 2 and built[0].startswith("qsweep_kernel_3q_")
        cpu_kernel._library.cache_clear()
        assert cpu_kernel.available(3)  # loaded from the cache, not rebuilt
        assert sorted(p.name for p in tmp_path.iterdir()) == built
    finally:
        cpu_kernel._library.cache_clear()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_the_thread_split(threads):
    psi, gates, prog, perm = _problem(4, seed=3, states=37)  # four full groups and a partial one
    inv = torch.argsort(perm)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        want = cpu_kernel.run_circuit(psi, gates, prog, perm, inv)[1]
        torch.set_num_threads(threads)
        got = cpu_kernel.run_circuit(psi, gates, prog, perm, inv)[1]
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, want)


def test_bad_inputs_are_refused():
    psi, gates, prog, perm = _problem(3, seed=0)
    inv = torch.argsort(perm)
    with pytest.raises(TypeError, match="complex64"):
        cpu_kernel.run_circuit(psi.to(torch.complex128), gates, prog, perm, inv)
    with pytest.raises(ValueError, match="do not fit"):
        cpu_kernel.run_circuit(psi[:2], gates, prog, perm, inv)

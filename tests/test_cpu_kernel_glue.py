"""The CPU kernel's one-call entry point (:func:`cpu_kernel.run_layers`) and its glue.

The glue the kernel now does itself -- gate matrices from the rotation angles, the angle
encoding ``RY(scale z)``, the Pauli-Z / ZZ readout -- against dense references built
here from ``tests/quantum_reference.py`` (numpy Kronecker products, forward) and from
complex128 torch matrices written out gate by gate (autograd, gradients). Then: the
thread count does not change the results (group split and state split), and at 16 and
18 qubits the kernel's float32 gradients stay within 1e-5 (relative) of the torch path
in float64. Needs a C compiler (CI installs gcc).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import TrialConfig
from model.quantum import cpu_kernel
from model.quantum.circuits import CircuitRunner, entangler_pairs, pqc_spec, sqe_spec
from model.quantum.statevector import cnot_permutation, readout_signs, zz_pairs
from tests import quantum_reference as ref
from tests.conftest import require_or_skip


@pytest.fixture(autouse=True)
def _needs_kernel():
    require_or_skip(cpu_kernel.available(4), f"CPU kernel: {cpu_kernel.build_error(4)}")


@pytest.fixture
def threads():
    """Set torch's thread count (the kernel's OpenMP team) for one test; restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


# gate layers: weights 0 with the encoding fused, weights 1, the encoding alone, weights 2
LAYER_OF, ENC_OF = [0, 1, -1, 2], [1, 0, 1, 0]
PROG = [0, -1, 1, -1, 2, 3, -1]
ROWS = [0, 1, 1, 0, 1]  # the weight set (pack member) of each of five states
SCALE = 0.8


def _program(n: int, rotation: str) -> cpu_kernel.KernelProgram:
    prog = PROG if n > 1 else [k for k in PROG if k >= 0]
    perm = cnot_permutation(entangler_pairs(n, 1), n)
    return cpu_kernel.KernelProgram.build(
        n, rotation, prog, LAYER_OF, ENC_OF, perm, torch.argsort(perm)
    )


def _inputs(n: int, rotation: str, kind: str, seed: int):
    """angles (3, 2, n, P) and z (5, n) float32, and the input state of ``kind``."""
    g = torch.Generator().manual_seed(seed)
    per = 3 if rotation == "rot" else 1
    angles = torch.randn(3, 2, n, per, generator=g) * 2
    z = torch.rand(5, n, generator=g) * 2 - 1
    if kind == "zero":
        state = None
    elif kind == "real":  # amplitude encoding: fewer values than amplitudes, zero-padded
        state = torch.randn(5, max(1, 2**n - 1), generator=g)
        state = state / state.norm(dim=-1, keepdim=True)
    else:
        state = torch.randn(5, 2**n, dtype=torch.complex64, generator=g)
        state = state / state.abs().square().sum(-1, keepdim=True).sqrt()
    return angles, z, state


def _numpy_gate(w: np.ndarray, rotation: str) -> np.ndarray:
    return ref.rot(*w) if rotation == "rot" else ref.ry(w[0])


def _numpy_final(n, rotation, angles, z, state, s) -> np.ndarray:
    """State ``s`` after the program, with dense numpy matrices."""
    psi = np.zeros(2**n, dtype=complex)
    if state is None:
        psi[0] = 1
    else:
        psi[: state.shape[-1]] = state[s].numpy()
    w = angles[:, ROWS[s]].double().numpy()
    ent = ref.entangler(n, 1)
    for k in PROG if n > 1 else [k for k in PROG if k >= 0]:
        if k < 0:
            psi = ent @ psi
            continue
        gates = []
        for q in range(n):
            m = _numpy_gate(w[LAYER_OF[k], q], rotation) if LAYER_OF[k] >= 0 else ref.I2
            e = ref.ry(SCALE * float(z[s, q])) if ENC_OF[k] else ref.I2
            gates.append(m @ e)
        psi = ref.kron_all(gates) @ psi
    return psi


def _numpy_readout(psi: np.ndarray, n: int) -> np.ndarray:
    """[<Z_k> for every qubit, <Z_i Z_j> for the ring pairs]."""
    zz = [
        np.real(psi.conj() @ ref.on_qubit(ref.Z, i, n) @ ref.on_qubit(ref.Z, j, n) @ psi)
        for i, j in zz_pairs(n)
    ]
    return np.concatenate([ref.z_expect(psi, n), zz])


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("rotation", ["rot", "ry"])
@pytest.mark.parametrize("kind", ["zero", "real", "complex"])
def test_run_layers_forward_matches_dense_numpy(n, rotation, kind):
    angles, z, state = _inputs(n, rotation, kind, seed=n)
    readout = readout_signs(n, zz_pairs(n))
    out, probs, obs = cpu_kernel.run_layers(
        state, angles, torch.tensor(ROWS), _program(n, rotation), z=z, scale=SCALE,
        readout=readout, probs=True,
    )  # fmt: skip
    for s in range(5):
        psi = _numpy_final(n, rotation, angles, z, state, s)
        np.testing.assert_allclose(out[s].numpy(), psi, atol=2e-6)
        np.testing.assert_allclose(probs[s].numpy(), np.abs(psi) ** 2, atol=2e-6)
        np.testing.assert_allclose(obs[s].numpy(), _numpy_readout(psi, n), atol=2e-6)


def _torch_gate(w: torch.Tensor, rotation: str) -> torch.Tensor:
    """complex128 Rot = RZ(omega) RY(theta) RZ(phi) or RY(theta), as a product of matrices."""
    zero = torch.zeros((), dtype=torch.complex128)

    def ry(t):
        c, s = torch.cos(t / 2).to(torch.complex128), torch.sin(t / 2).to(torch.complex128)
        return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])

    def rz(t):
        e = torch.exp(-0.5j * t.to(torch.complex128))
        return torch.stack([torch.stack([e, zero]), torch.stack([zero, e.conj()])])

    if rotation == "ry":
        return ry(w[0])
    return rz(w[2]) @ ry(w[1]) @ rz(w[0])


def _torch_loss_parts(n, rotation, angles, z, state, readout):
    """(final states, probabilities, observables) in complex128 / float64, differentiable."""
    ent = torch.from_numpy(ref.entangler(n, 1))
    eye = torch.eye(2, dtype=torch.complex128)
    finals = []
    for s in range(5):
        if state is None:
            psi = torch.zeros(2**n, dtype=torch.complex128)
            psi[0] = 1
        else:
            psi = torch.nn.functional.pad(state[s], (0, 2**n - state.shape[-1]))
            psi = psi.to(torch.complex128)
        for k in PROG if n > 1 else [k for k in PROG if k >= 0]:
            if k < 0:
                psi = ent @ psi
                continue
            layer = torch.ones(1, 1, dtype=torch.complex128)
            for q in range(n):
                m = (
                    _torch_gate(angles[LAYER_OF[k], ROWS[s], q], rotation)
                    if LAYER_OF[k] >= 0
                    else eye
                )
                e = _torch_gate((SCALE * z[s, q]).reshape(1), "ry") if ENC_OF[k] else eye
                layer = torch.kron(layer, m @ e)
            psi = layer @ psi
        finals.append(psi)
    final = torch.stack(finals)
    probs = final.abs().square()
    return final, probs, probs @ readout.double()


@pytest.mark.parametrize("n", [1, 3, 4])
@pytest.mark.parametrize("rotation", ["rot", "ry"])
@pytest.mark.parametrize("kind", ["zero", "real", "complex"])
def test_run_layers_gradients_match_dense_autograd(n, rotation, kind):
    """Gradients of the angles, the latent and the input state, through all three outputs."""
    angles, z, state = _inputs(n, rotation, kind, seed=30 + n)
    readout = readout_signs(n, zz_pairs(n))
    g = torch.Generator().manual_seed(4)
    w_out = torch.randn(5, 2**n, dtype=torch.complex64, generator=g)
    w_probs, w_obs = (
        torch.randn(5, 2**n, generator=g),
        torch.randn(5, readout.shape[1], generator=g),
    )

    def loss(out, probs, obs):  # every output at once: their gradients add up
        return (out * w_out).real.sum() + (probs * w_probs).sum() + (obs * w_obs).sum()

    leaves = [angles.clone().requires_grad_(), z.clone().requires_grad_()]
    if state is not None:
        leaves.append(state.clone().requires_grad_())
    out = cpu_kernel.run_layers(
        leaves[2] if state is not None else None, leaves[0], torch.tensor(ROWS),
        _program(n, rotation), z=leaves[1], scale=SCALE, readout=readout, probs=True,
    )  # fmt: skip
    got = torch.autograd.grad(loss(*out), leaves)
    dense = [t.detach().to(torch.complex128 if t.is_complex() else torch.float64) for t in leaves]
    dense = [t.requires_grad_() for t in dense]
    parts = _torch_loss_parts(
        n, rotation, dense[0], dense[1], dense[2] if state is not None else None, readout
    )
    want = torch.autograd.grad(loss(*parts), dense)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.to(b.dtype), b, atol=3e-5, rtol=1e-4)


def test_readout_signs_are_the_z_and_zz_eigenvalues():
    n = 3
    table = readout_signs(n, zz_pairs(n)).double().numpy()  # (8, 3 + 3)
    for col, ops in enumerate([[k] for k in range(n)] + [list(p) for p in zz_pairs(n)]):
        dense = ref.kron_all([ref.Z if q in ops else ref.I2 for q in range(n)])
        np.testing.assert_array_equal(table[:, col], np.real(np.diag(dense)))


def _run_with_threads(set_threads, count, n, states, seed):
    """(outputs, gradients) of one run_layers call on ``count`` threads."""
    set_threads(count)
    g = torch.Generator().manual_seed(seed)
    spec = pqc_spec(TrialConfig(qubits=n, reuploads=2, reupload_layers=1, main_layers=1))
    runner = CircuitRunner(spec, cpu_kernel="on")
    w = (torch.randn(spec.n_layers, n, 3, generator=g)).requires_grad_()
    z = (torch.rand(states, n, generator=g) * 2 - 1).requires_grad_()
    obs = runner(None, w, z, readout=readout_signs(n))
    loss = (obs * torch.randn(obs.shape, generator=g)).sum()
    return obs.detach(), torch.autograd.grad(loss, [w, z])


@pytest.mark.parametrize(
    "n, states, split",
    [(4, 37, "groups"), (13, 5, "states")],  # four groups and a partial one; one group
)
def test_one_and_two_threads_give_the_same_results(threads, n, states, split):
    assert cpu_kernel.thread_plan(n, states, 2) == (2, split)
    want, want_grads = _run_with_threads(threads, 1, n, states, seed=n)
    got, got_grads = _run_with_threads(threads, 2, n, states, seed=n)
    # the gates do not depend on the split; the sums over amplitudes (readout, gradients)
    # are added in another order, so only their last bits may differ
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


def _gradients_vs_float64(runner_on, runner_off, weights, state, z, readout, scale):
    """Relative errors (angles, input or latent, a directional derivative) of the kernel's
    float32 gradients against the torch path in float64."""
    c = torch.randn(
        (state if state is not None else z).shape[0], readout.shape[1],
        generator=torch.Generator().manual_seed(9),
    )  # fmt: skip
    direction = torch.randn(weights.shape, generator=torch.Generator().manual_seed(10))
    grads = []
    for runner, dtype in ((runner_on, torch.float32), (runner_off, torch.float64)):
        w = weights.to(dtype).requires_grad_()
        x = None if state is None else state.to(dtype).requires_grad_()
        lat = None if z is None else z.to(dtype).requires_grad_()
        obs = runner(x, w, lat, input_scale=scale, readout=readout)
        loss = (obs * c.to(dtype)).sum()
        grads.append(torch.autograd.grad(loss, [w, x if x is not None else lat]))
    (gw, gx), (ww, wx) = grads
    directional = abs(float((gw.double() * direction).sum() / (ww * direction).sum()) - 1)
    return _relative(gw, ww), _relative(gx, wx), directional


@pytest.mark.slow
@pytest.mark.parametrize("n", [16, 18])
def test_large_sqe_gradients_within_1e5_of_float64(n):
    """The paper's encoder (5 Rot layers, CNOT ring) on amplitude-encoded inputs."""
    spec = sqe_spec(TrialConfig(qubits=n, encoder_layers=5))
    g = torch.Generator().manual_seed(n)
    weights = torch.randn(spec.n_layers, n, 3, generator=g) * 0.5
    state = torch.zeros(8, 2**n)
    state[:, :768] = torch.randn(8, 768, generator=g)  # 768-d embeddings, zero-padded
    state = state / state.norm(dim=-1, keepdim=True)
    errors = _gradients_vs_float64(
        CircuitRunner(spec, cpu_kernel="on"), CircuitRunner(spec, cpu_kernel="off"),
        weights, state, None, readout_signs(n), 1.0,
    )  # fmt: skip
    assert max(errors) <= 1e-5, errors


@pytest.mark.slow
def test_16_qubit_pqc_gradients_within_1e5_of_float64():
    """The PQC with re-uploads: the latent's gradient goes through the fused encoding."""
    n = 16
    spec = pqc_spec(TrialConfig(qubits=n, reuploads=3, reupload_layers=1, main_layers=2))
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(spec.n_layers, n, 3, generator=g) * 0.5
    z = torch.rand(8, n, generator=g) * 2 - 1
    errors = _gradients_vs_float64(
        CircuitRunner(spec, cpu_kernel="on"), CircuitRunner(spec, cpu_kernel="off"),
        weights, None, z, readout_signs(n), np.pi,
    )  # fmt: skip
    assert max(errors) <= 1e-5, errors


def test_run_layers_refuses_calls_that_do_not_fit():
    """The kernel indexes its tables unchecked: every index is checked before it runs."""
    angles, z, state = _inputs(3, "rot", "real", seed=0)
    program, rows = _program(3, "rot"), torch.tensor(ROWS)
    with pytest.raises(ValueError, match="weight set"):
        cpu_kernel.run_layers(state, angles, torch.tensor([0, 1, 2, 0, 1]), program, z=z)
    with pytest.raises(ValueError, match="no latent z"):
        cpu_kernel.run_layers(state, angles, rows, program)
    with pytest.raises(ValueError, match="weight layer past"):
        cpu_kernel.run_layers(state, angles[:2], rows, program, z=z)
    with pytest.raises(ValueError, match="readout"):
        cpu_kernel.run_layers(state, angles, rows, program, z=z, readout=torch.ones(4, 3))
    with pytest.raises(ValueError, match="do not fit 3 qubits of rot"):
        cpu_kernel.run_layers(state, angles[..., :1], rows, program, z=z)


@pytest.mark.parametrize("given, want", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_wait_passively_unless_set(given, want):
    """Importing qsweep's model before torch makes libgomp's idle threads sleep (spinning
    ones take cores from other work); a policy the user set is kept."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, model, torch; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == want

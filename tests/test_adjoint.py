"""Adjoint differentiation (model.quantum.adjoint) against the autograd path."""

from __future__ import annotations

import pytest
import torch

from model.config import TrialConfig
from model.quantum.circuits import CircuitRunner, pqc_spec, sqe_spec


def _grads(runner, state, weights, z, adjoint, seed, **kw):
    weights = weights.detach().clone().requires_grad_()
    state = state.detach().clone().requires_grad_()
    z = z.detach().clone().requires_grad_() if z is not None else None
    gen = torch.Generator().manual_seed(seed)
    out = runner(state, weights, z, generator=gen, adjoint=adjoint, **kw)
    probe = torch.Generator().manual_seed(99)
    w_out = torch.randn(out.shape, generator=probe, dtype=torch.float64)
    w_out = w_out.to(out.real.dtype)
    loss = (out.abs() ** 2 * w_out).sum() + (out.real * w_out).sum()
    inputs = [weights, state] + ([z] if z is not None else [])
    return out.detach(), torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("q", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("rotation", ["rot", "ry"])
@pytest.mark.parametrize("noise", [(0.0, 0.0), (0.05, 0.1)])
def test_adjoint_matches_autograd_on_random_circuits(q, rotation, noise):
    torch.manual_seed(q)
    cfg = TrialConfig(
        qubits=q, rotation=rotation, connectivity=1 if q < 3 else 2, reuploads=2, main_layers=2
    )
    for spec, has_z in ((pqc_spec(cfg), True), (sqe_spec(cfg), False)):
        runner = CircuitRunner(spec, block=3).double()
        per = 3 if rotation == "rot" else 1
        batch = 4
        weights = torch.randn(spec.n_layers, q, per, dtype=torch.float64)
        state = torch.randn(batch, 2**q, dtype=torch.float64)
        state = state / state.norm(dim=-1, keepdim=True)
        z = torch.rand(batch, q, dtype=torch.float64) * 2 - 1 if has_z else None
        p1, p2 = noise
        ref_out, ref = _grads(runner, state, weights, z, False, 7, p1=p1, p2=p2)
        out, got = _grads(runner, state, weights, z, True, 7, p1=p1, p2=p2)
        torch.testing.assert_close(out, ref_out, atol=1e-10, rtol=0)
        for g, r in zip(got, ref, strict=True):
            torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-8)


def test_adjoint_float32_within_1e5_and_per_member_weights():
    """Packed weights (L, T, q, P) on a (B, T, N) state; float32 as trained."""
    cfg = TrialConfig(qubits=6, rotation="rot", reuploads=3)
    runner = CircuitRunner(pqc_spec(cfg))
    t, b = 3, 5
    weights = torch.randn(runner.spec.n_layers, t, 6, 3)
    state = torch.zeros(b, t, 64)
    state[..., 0] = 1
    z = torch.rand(b, t, 6) * 2 - 1
    ref_out, ref = _grads(runner, state, weights, z, False, 1)
    out, got = _grads(runner, state, weights, z, True, 1)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)

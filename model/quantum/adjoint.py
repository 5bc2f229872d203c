"""Running a compiled circuit: a list of steps, by autograd or by adjoint differentiation.

A *step* is one linear map on the state ``(*batch, 2**n)``:

* ``("m", first, i)`` -- matrix ``mats[i]`` (``(K, K)`` or ``(*mb, K, K)``, ``mb``
  right-aligned with the state's batch) on qubits ``first .. first + log2 K - 1``;
* ``("p",)`` -- the circuit's CNOT-block permutation;
* ``("f", xm, zm)`` -- a Pauli frame ``X^x Z^z`` per trajectory (int64 masks ``(*batch,)``).

All steps are unitary. :func:`run_steps` with ``adjoint=False`` lets autograd record every
intermediate state (about two states per step: fast, but memory grows with depth).
With ``adjoint=True`` the forward keeps only the final state; the backward walks the
steps in reverse, *un-computing* the state with each inverse (``M^H``, the inverse
permutation, the inverse frame) while carrying the adjoint ``lam = dL/dpsi*``:

    psi_{k-1} = U_k^H psi_k,   dL/dM_k = sum over batch/spectators of lam_k psi_{k-1}^H,
    lam_{k-1} = U_k^H lam_k

(PyTorch's own convention for complex gradients, so autograd carries the matrix
gradients on to the weights and the latent). Peak memory is a few states, whatever the
depth; the price is about 1.5x the arithmetic of the autograd backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.quantum.noise import apply_pauli_masks
from model.quantum.statevector import apply_matrix, apply_permutation, permute_amplitudes

__all__ = ["run_steps"]


def _forward(state: Tensor, steps, mats, n: int, perm: Tensor, inverse: Tensor) -> Tensor:
    for step in steps:
        kind = step[0]
        if kind == "m":
            state = apply_matrix(state, mats[step[2]], step[1], n)
        elif kind == "p":
            state = apply_permutation(state, perm, inverse)
        else:
            state = apply_pauli_masks(state, step[1], step[2])
    return state


def _matrix_grad(lam: Tensor, psi: Tensor, first: int, n: int, m: Tensor) -> Tensor:
    """``dL/dM`` for ``out = M psi`` on qubits ``first..``: ``sum lam psi^H`` reduced to M's shape."""
    size = m.shape[-1]
    k = size.bit_length() - 1
    batch = psi.shape[:-1]
    a, b = 2**first, 2 ** (n - first - k)
    lam_v = lam.reshape(*batch, a, size, b)
    psi_v = psi.reshape(*batch, a, size, b)
    grad = torch.einsum("...akb,...alb->...kl", lam_v, psi_v.conj())  # (*batch, K, K)
    return grad.sum_to_size(m.shape)


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, state, n, steps, perm, inverse, *mats):
        with torch.no_grad():
            out = _forward(state, steps, mats, n, perm, inverse)
        ctx.save_for_backward(out, *mats)
        ctx.meta = (n, steps, perm, inverse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        out, *mats = ctx.saved_tensors
        n, steps, perm, inverse = ctx.meta
        want = ctx.needs_input_grad
        grads: list[Tensor | None] = [None] * len(mats)
        psi, lam = out, grad_out
        for step in reversed(steps):
            kind = step[0]
            if kind == "m":
                first, i = step[1], step[2]
                m_inv = mats[i].mH
                psi = apply_matrix(psi, m_inv, first, n)  # the state before this step
                if want[5 + i]:
                    g = _matrix_grad(lam, psi, first, n, mats[i])
                    grads[i] = g if grads[i] is None else grads[i] + g
                lam = apply_matrix(lam, m_inv, first, n)
            elif kind == "p":
                psi = permute_amplitudes(psi, inverse)
                lam = permute_amplitudes(lam, inverse)
            else:
                psi = apply_pauli_masks(psi, step[1], step[2], inverse=True)
                lam = apply_pauli_masks(lam, step[1], step[2], inverse=True)
        return (lam if want[0] else None, None, None, None, None, *grads)


def run_steps(
    state: Tensor,
    steps: list[tuple],
    mats: list[Tensor],
    n: int,
    perm: Tensor,
    inverse: Tensor,
    *,
    adjoint: bool = False,
) -> Tensor:
    """Apply ``steps`` to ``state`` ``(*batch, 2**n)``; ``adjoint`` picks the lean backward."""
    if not adjoint or not torch.is_grad_enabled():
        return _forward(state, steps, mats, n, perm, inverse)
    dtype = torch.promote_types(state.dtype, mats[0].dtype) if mats else state.dtype
    mats = [m.to(dtype) for m in mats]
    return _Adjoint.apply(state.to(dtype), n, steps, perm, inverse, *mats)

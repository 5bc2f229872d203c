"""Batched statevector simulation in plain torch (autograd, CPU and CUDA).

Conventions
-----------
* A state is a tensor ``(*batch, 2**n)`` (``batch`` is usually ``(B,)`` or ``(B, E)``),
  real (float32/64, the *real fast path*) or complex (complex64/128). Device and dtype
  follow the inputs; nothing is hard-coded to the CPU.
* **Qubit 0 is the most significant bit** of the basis index: basis state ``|b0 b1 .. b_{n-1}>``
  has index ``sum_k b_k 2**(n-1-k)``. The QASM export (``q[k]``) and the ``{"z": [...]}``
  lists use the same qubit order.
* A matrix on a contiguous block of ``k`` qubits starting at qubit ``f`` is applied by
  viewing the state as ``(*batch, 2**f, 2**k, 2**(n-f-k))`` and calling one broadcast
  ``torch.matmul`` -- no permute, no copy of the state.
* A block of CNOTs is one fixed permutation of basis indices (precomputed once, applied
  with one ``index_select``; its backward is the inverse permutation); a block of CZs is
  one fixed +-1 diagonal.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = [
    "apply_matrix",
    "apply_1q",
    "member_major",
    "kron_block",
    "apply_layer",
    "cnot_permutation",
    "cz_diagonal",
    "apply_permutation",
    "permute_amplitudes",
    "apply_cnot",
    "apply_cz",
    "probabilities",
    "z_signs",
    "z_expectations",
    "zz_expectations",
    "zz_pairs",
    "readout_signs",
    "basis_bits",
]


def _match(state: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Promote a real state to complex when the matrix is complex, and vice versa."""
    if m.dtype == state.dtype:
        return state, m
    target = torch.promote_types(state.dtype, m.dtype)
    return state.to(target), m.to(target)


def apply_matrix(state: Tensor, m: Tensor, first: int, n: int) -> Tensor:
    """Apply a ``2**k x 2**k`` matrix to qubits ``first .. first+k-1`` of an n-qubit state.

    state: ``(*batch, 2**n)``; m: ``(K, K)`` shared, or ``(*batch, K, K)`` per sample
    (broadcastable to the state's batch shape). Returns ``(*batch, 2**n)``.
    """
    size = m.shape[-1]
    k = size.bit_length() - 1
    if size != 2**k or m.shape[-2] != size or not 0 <= first <= n - k:
        raise ValueError(f"matrix of shape {tuple(m.shape)} cannot act on qubit {first} of {n}")
    state, m = _match(state, m)
    batch = state.shape[:-1]
    a, b = 2**first, 2 ** (n - first - k)
    if m.dim() > 2:
        return _apply_batched(state, m, a, size, b)
    if b == 1:  # last qubits: rows of (*batch, a, K) times M^T -- one (batched) GEMM
        out = torch.matmul(state.reshape(*batch, a, size), m.transpose(-1, -2))
    elif a == 1:  # first qubits: M @ (*batch, K, b)
        out = torch.matmul(m, state.reshape(*batch, size, b))
    else:  # middle block: (*batch, a, K, b); a per-sample M broadcasts over the a axis
        view = state.reshape(*batch, a, size, b)
        out = torch.matmul(m.unsqueeze(-3) if m.dim() > 2 else m, view)
    return out.reshape(*batch, 2**n)


def _apply_batched(state: Tensor, m: Tensor, a: int, size: int, b: int) -> Tensor:
    """Per-member / per-sample matrices ``(*mb, K, K)`` on a ``(*batch, a*K*b)`` state.

    The state's trailing batch axes the matrix is shared over (``mb`` is 1 there) are
    folded into the GEMM rows, so a member-major state ``(T, B, N)`` with matrices
    ``(T, 1, K, K)`` needs no copy of the state for the first and last Kronecker blocks
    (an einsum moves the state twice per block; a middle block still does). One layer of
    the packed 10-qubit head (T = 8, B = 16, 1 thread): 0.59 ms vs 0.89 ms with einsums;
    a whole training epoch gained only about 4 % over the permutation change alone, since
    the backward and the middle blocks dominate. On a GPU, above 16 qubits, every avoided
    state copy is a memory pass saved. See :func:`member_major`.
    """
    batch = state.shape[:-1]
    mb = (1,) * (len(batch) - (m.dim() - 2)) + tuple(m.shape[:-2])
    shared = 0  # trailing batch axes where the matrix broadcasts
    while shared < len(batch) and mb[len(batch) - 1 - shared] == 1:
        shared += 1
    lead, fold = batch[: len(batch) - shared], math.prod(batch[len(batch) - shared :])
    m = m.reshape(*mb[: len(batch) - shared], size, size)
    if b == 1:  # (lead, fold * a, K) @ M^T: one batched GEMM, no copy
        out = torch.matmul(state.reshape(*lead, fold * a, size), m.transpose(-1, -2))
    elif a == 1 and fold == 1:
        out = torch.matmul(m, state.reshape(*lead, size, b))
    elif a == 1:  # M broadcast over the fold axis (a copy of M, not of the state)
        out = torch.matmul(m.unsqueeze(-3), state.reshape(*lead, fold, size, b))
    else:  # middle block: one GEMM per matrix over a permuted copy (beats fold*a tiny GEMMs)
        view = state.reshape(*lead, fold * a, size, b)
        out = torch.einsum("...kl,...flb->...fkb", m, view)
    return out.reshape(state.shape)


def member_major(batch_ndim: int, member_ndim: int) -> tuple[list[int], list[int]]:
    """Axis orders that move the first ``batch_ndim - member_ndim`` (sample) axes of a
    batch behind the ``member_ndim`` member axes, and back: ``(B, T, E) -> (T, E, B)``.

    The circuit runner simulates packed trials in this layout: per-member matrices
    ``(T, E, 1, K, K)`` then apply to ``(T, E, B * a, K, b)`` views of the state.
    """
    samples = batch_ndim - member_ndim
    order = list(range(samples, batch_ndim)) + list(range(samples))
    back = [order.index(i) for i in range(batch_ndim)]
    return order, back


def apply_1q(state: Tensor, m: Tensor, qubit: int, n: int) -> Tensor:
    """Apply a 1-qubit matrix ``(2, 2)`` or ``(*batch, 2, 2)`` to ``qubit``."""
    return apply_matrix(state, m, qubit, n)


def kron_block(mats: Tensor) -> Tensor:
    """Kronecker product along the qubit axis: ``(..., k, 2, 2) -> (..., 2**k, 2**k)``.

    The first matrix acts on the most significant qubit of the block. Differentiable.
    """
    k = mats.shape[-3]
    if k == 1:
        return mats[..., 0, :, :]
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows, cols = letters[:k], letters[k : 2 * k]
    spec = ",".join(f"...{r}{c}" for r, c in zip(rows, cols, strict=True)) + f"->...{rows}{cols}"
    out = torch.einsum(spec, *mats.unbind(-3))
    return out.reshape(*out.shape[: out.dim() - 2 * k], 2**k, 2**k)


def block_bounds(n: int, block: int) -> list[tuple[int, int]]:
    """Split qubits ``0..n-1`` into contiguous ``(first, size)`` blocks of at most ``block``."""
    block = max(1, min(block, n))
    count = -(-n // block)
    base, extra = divmod(n, count)
    bounds, first = [], 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        bounds.append((first, size))
        first += size
    return bounds


def apply_layer(state: Tensor, mats: Tensor, n: int, *, block: int = 5) -> Tensor:
    """Apply one 1-qubit matrix per qubit: mats ``(n, 2, 2)`` or ``(*batch, n, 2, 2)``.

    The n matrices are fused into Kronecker blocks of at most ``block`` qubits and each
    block is applied with one matmul.
    """
    if mats.shape[-3] != n:
        raise ValueError(f"layer has {mats.shape[-3]} matrices for {n} qubits")
    for first, size in block_bounds(n, block):
        m = mats[..., first : first + size, :, :]
        state = apply_matrix(state, kron_block(m) if size > 1 else m[..., 0, :, :], first, n)
    return state


# --- fixed permutations and diagonals --------------------------------------------------
def basis_bits(n: int, device=None) -> Tensor:
    """``(2**n, n)`` int64 bit table: entry [i, k] is qubit k's bit of basis index i."""
    idx = torch.arange(2**n, device=device)
    shifts = torch.arange(n - 1, -1, -1, device=device)
    return (idx[:, None] >> shifts) & 1


def cnot_permutation(pairs: list[tuple[int, int]], n: int, device=None) -> Tensor:
    """Index ``perm`` (2**n,) so that ``new = old[..., perm]`` applies the CNOTs in order.

    pairs: ``[(control, target), ...]``, applied first to last.
    """
    labels = torch.arange(2**n, device=device)
    idx = torch.arange(2**n, device=device)
    for c, t in pairs:
        if c == t or not (0 <= c < n and 0 <= t < n):
            raise ValueError(f"CNOT({c}, {t}) is not valid on {n} qubits")
        flip = ((idx >> (n - 1 - c)) & 1) << (n - 1 - t)
        labels = labels[idx ^ flip]  # new[i] = old[i ^ flip(i)]
    return labels


def cz_diagonal(pairs: list[tuple[int, int]], n: int, device=None) -> Tensor:
    """``(2**n,)`` float +-1 diagonal of a product of CZ gates on ``pairs``."""
    idx = torch.arange(2**n, device=device)
    parity = torch.zeros_like(idx)
    for a, b in pairs:
        if a == b or not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"CZ({a}, {b}) is not valid on {n} qubits")
        parity ^= ((idx >> (n - 1 - a)) & 1) & ((idx >> (n - 1 - b)) & 1)
    return (1 - 2 * parity).to(torch.get_default_dtype())


def permute_amplitudes(state: Tensor, perm: Tensor) -> Tensor:
    """``state[..., perm]`` as a ``gather`` over a broadcast (stride-0) index.

    Same values as ``index_select(-1, perm)``, which on the CPU takes a slow per-row path
    for the last axis: measured 17x slower for a (8, 16, 1024) complex64 state, 1 thread
    (``python -m model.quantum.benchmark --permutation``).
    """
    return torch.gather(state, -1, perm.expand(state.shape))


class _Permute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, state: Tensor, perm: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        return permute_amplitudes(state, perm)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inverse,) = ctx.saved_tensors
        return permute_amplitudes(grad, inverse), None, None


def apply_permutation(state: Tensor, perm: Tensor, inverse: Tensor | None = None) -> Tensor:
    """``state[..., perm]``; with ``inverse`` (= argsort(perm)) the backward is a gather too
    (without it autograd's backward of ``gather`` is a slower scatter-add)."""
    if inverse is None:
        return permute_amplitudes(state, perm)
    return _Permute.apply(state, perm, inverse)


def apply_cnot(state: Tensor, control: int, target: int, n: int) -> Tensor:
    """CNOT(control -> target) on ``(*batch, 2**n)``."""
    perm = cnot_permutation([(control, target)], n, device=state.device)
    return permute_amplitudes(state, perm)


def apply_cz(state: Tensor, a: int, b: int, n: int) -> Tensor:
    """CZ(a, b) on ``(*batch, 2**n)``."""
    diag = cz_diagonal([(a, b)], n, device=state.device)
    return state * diag.to(state.real.dtype if state.is_complex() else state.dtype)


# --- measurement -------------------------------------------------------------------------
def probabilities(state: Tensor) -> Tensor:
    """Born probabilities ``(*batch, 2**n)`` (real)."""
    if state.is_complex():
        return _Born.apply(state)
    return state.square()


class _Born(torch.autograd.Function):
    """``|psi|^2`` of a complex state with a one-op backward, ``2 g psi`` (PyTorch's complex
    convention), where autograd's own graph for ``re^2 + im^2`` runs two select-backwards
    that each zero-fill and copy a full-size complex gradient."""

    @staticmethod
    def forward(ctx, state: Tensor) -> Tensor:
        ctx.save_for_backward(state)
        return state.real.square() + state.imag.square()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (state,) = ctx.saved_tensors
        return state * (2 * grad)


@functools.lru_cache(maxsize=32)
def _z_signs_cached(n: int, dtype: torch.dtype, device: str) -> Tensor:
    return (1 - 2 * basis_bits(n, device=device)).to(dtype)


def z_signs(n: int, dtype=torch.float32, device=None) -> Tensor:
    """``(2**n, n)`` table of Z eigenvalues: entry [i, k] = 1 - 2 * bit_k(i)."""
    return _z_signs_cached(n, dtype, str(torch.device(device or "cpu")))


def z_expectations(probs: Tensor, n: int) -> Tensor:
    """Pauli-Z expectation of every qubit from probabilities: ``(*batch, 2**n) -> (*batch, n)``."""
    return probs @ z_signs(n, probs.dtype, probs.device)


def zz_pairs(n: int) -> list[tuple[int, int]]:
    """Nearest-neighbour qubit pairs of a ring: ``(i, i + 1 mod n)``; one pair for n = 2, none for 1."""
    if n < 2:
        return []
    if n == 2:
        return [(0, 1)]
    return [(i, (i + 1) % n) for i in range(n)]


def zz_expectations(probs: Tensor, n: int, pairs: list[tuple[int, int]]) -> Tensor:
    """``<Z_i Z_j>`` of every pair from probabilities: ``(*batch, 2**n) -> (*batch, len(pairs))``."""
    signs = z_signs(n, probs.dtype, probs.device)  # (2**n, n)
    i, j = zip(*pairs, strict=True)
    return probs @ (signs[:, list(i)] * signs[:, list(j)])


def readout_signs(n: int, pairs: list[tuple[int, int]] = ()) -> Tensor:
    """``(2**n, n + len(pairs))`` float32: the Z signs of every qubit, then the ``Z_i Z_j``
    signs of ``pairs``, so that ``probs @ readout_signs(n, pairs)`` is
    ``[z_expectations, zz_expectations]`` in one product (the heads' readout)."""
    signs = z_signs(n)
    if not pairs:
        return signs.clone()
    i, j = zip(*pairs, strict=True)
    return torch.cat([signs, signs[:, list(i)] * signs[:, list(j)]], dim=1)

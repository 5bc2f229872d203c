"""Shot noise and gate noise (depolarizing channels by Pauli-trajectory sampling).

Shot noise (``shots = S > 0``), applied to a probability vector ``p`` ``(*batch, 2**n)``:

* training (differentiable): the Gaussian reparameterisation of the multinomial,
  ``p_hat = p + (sqrt(p) * eps - p * sum(sqrt(p) * eps)) / sqrt(S)``, ``eps ~ N(0, I)``,
  whose covariance is exactly ``(diag p - p p^T) / S``; then rectified (clamp at 0 and
  renormalise).
* evaluation: exact multinomial sampling of ``S`` shots; counts / S.

Gate noise: a depolarizing channel after every 1-qubit gate (X, Y, Z each with p1/3)
and after every 2-qubit gate (each of the 15 non-identity two-qubit Paulis with p2/15),
simulated by sampling one Pauli error pattern per sample in the batch (a trajectory).
Up to a global phase a Pauli string is a bit-flip mask ``x`` and a phase mask ``z``
(``Y = i X Z``): amplitude ``i -> i XOR x`` with sign ``(-1)**popcount(i & z)`` -- one
gather and one multiply per trajectory. Errors inside a block of CNOTs are pushed to the
end of the block by Clifford conjugation of the bits (CNOT c->t: ``x_t ^= x_c``,
``z_c ^= z_t``), so a noisy entangling block costs one permutation + one Pauli frame.
Bits are kept as ``(*batch, n)`` bool tensors (qubit order = state order).
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.quantum import rng

__all__ = [
    "gaussian_shot_probs",
    "multinomial_shot_probs",
    "shot_probs",
    "sample_1q_depolarizing",
    "sample_2q_depolarizing",
    "propagate_cnot",
    "propagate_block",
    "bits_to_mask",
    "apply_pauli_frame",
    "apply_pauli_masks",
]


# --- shot noise ----------------------------------------------------------------------------
def gaussian_shot_probs(
    p: Tensor, shots: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Differentiable Gaussian shot-noise sample of ``p`` ``(*batch, N)``, rectified."""
    eps = rng.randn(p.shape, generator, dtype=p.dtype, device=p.device)
    root = p.clamp_min(0).sqrt() * eps
    p_hat = p + (root - p * root.sum(-1, keepdim=True)) / shots**0.5
    p_hat = p_hat.clamp_min(0)
    return p_hat / p_hat.sum(-1, keepdim=True).clamp_min(1e-30)


def multinomial_shot_probs(
    p: Tensor, shots: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Frequencies of ``shots`` exact multinomial draws from ``p`` ``(*batch, N)`` (no grad).

    The S draws are S sorted uniforms -- the order statistics ``cumsum(E_1..E_S) /
    cumsum(E_1..E_{S+1})`` of S + 1 exponentials -- binned by the CDF of ``p``: the count
    of outcome j is the number of sorted uniforms in ``[cdf_{j-1}, cdf_j)``, found with one
    ``searchsorted`` of the N CDF values into the S uniforms (N log S instead of S log N;
    a 77-sentence validation pass of 8 packed 10-qubit trials, 8,192 shots: 0.22 s instead
    of 0.40 s with inverse-CDF sampling of every draw, 1 thread).
    """
    flat = p.detach().reshape(-1, p.shape[-1]).clamp_min(0)
    cdf = flat.double().cumsum(-1)  # float64: sums of 1e4 terms keep their bins exact
    cdf = cdf / cdf[:, -1:].clamp_min(1e-300)
    cdf[:, -1] = 2.0  # every uniform (< 1) falls in some outcome, whatever the rounding
    u = rng.rand((*p.shape[:-1], shots + 1), generator, dtype=flat.dtype, device=flat.device)
    e = -torch.log1p(-u.reshape(flat.shape[0], shots + 1).double())  # Exp(1)
    c = e.cumsum(-1)
    sorted_u = c[:, :shots] / c[:, shots:]
    below = torch.searchsorted(sorted_u, cdf)  # uniforms < cdf_j, (rows, N)
    counts = torch.diff(below, dim=-1, prepend=torch.zeros_like(below[:, :1]))
    return (counts.to(flat.dtype) / shots).reshape(p.shape)


def shot_probs(p: Tensor, shots: int, *, training: bool, generator=None) -> Tensor:
    """Gaussian (training) or multinomial (evaluation) shot noise; ``shots == 0``: exact."""
    if shots <= 0:
        return p
    if training:
        return gaussian_shot_probs(p, shots, generator=generator)
    return multinomial_shot_probs(p, shots, generator=generator)


# --- Pauli errors ------------------------------------------------------------------------------
def sample_1q_depolarizing(
    batch_shape: tuple[int, ...], n: int, p1: float, *, device=None, generator=None
) -> tuple[Tensor, Tensor]:
    """Independent 1-qubit depolarizing errors on n qubits: bool bits ``x, z`` ``(*batch, n)``.

    Each qubit: X (x=1, z=0), Y (1, 1), Z (0, 1) each with probability p1 / 3.
    """
    u = rng.rand((*batch_shape, n), generator, device=device)
    hit = u < p1
    which = rng.randint(1, 4, (*batch_shape, n), generator, device=device)  # 1..3
    x = hit & ((which & 1) == 1)  # X=1, Y=3
    z = hit & (which >= 2)  # Z=2, Y=3
    return x, z


def sample_2q_depolarizing(
    batch_shape: tuple[int, ...], p2: float, *, device=None, generator=None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two-qubit depolarizing error: bool ``(x_a, z_a, x_b, z_b)`` each ``(*batch,)``.

    With probability p2 one of the 15 non-identity Paulis, uniformly (= a uniform non-zero
    4-bit pattern).
    """
    hit = rng.rand(batch_shape, generator, device=device) < p2
    code = rng.randint(1, 16, batch_shape, generator, device=device)
    code = torch.where(hit, code, torch.zeros_like(code))
    return (code & 1) > 0, (code & 2) > 0, (code & 4) > 0, (code & 8) > 0


def propagate_cnot(x: Tensor, z: Tensor, control: int, target: int) -> tuple[Tensor, Tensor]:
    """Conjugate a Pauli frame through CNOT(control -> target): ``x_t ^= x_c``, ``z_c ^= z_t``."""
    x, z = x.clone(), z.clone()
    x[..., target] ^= x[..., control]
    z[..., control] ^= z[..., target]
    return x, z


def propagate_block(
    x: Tensor, z: Tensor, pairs: list[tuple[int, int]], p2: float, *, generator=None
) -> tuple[Tensor, Tensor]:
    """Push a frame through CNOTs ``pairs`` (in order), adding a 2-qubit error after each."""
    batch = x.shape[:-1]
    for c, t in pairs:
        x, z = propagate_cnot(x, z, c, t)
        if p2 > 0:
            xa, za, xb, zb = sample_2q_depolarizing(batch, p2, device=x.device, generator=generator)
            x[..., c] ^= xa
            z[..., c] ^= za
            x[..., t] ^= xb
            z[..., t] ^= zb
    return x, z


def bits_to_mask(bits: Tensor) -> Tensor:
    """``(*batch, n)`` bool -> ``(*batch,)`` int64 basis mask (qubit 0 = most significant)."""
    n = bits.shape[-1]
    weights = 2 ** torch.arange(n - 1, -1, -1, device=bits.device)
    return (bits.long() * weights).sum(-1)


def _parity(v: Tensor) -> Tensor:
    for shift in (32, 16, 8, 4, 2, 1):
        v = v ^ (v >> shift)
    return v & 1


def apply_pauli_frame(state: Tensor, x: Tensor, z: Tensor) -> Tensor:
    """Apply ``X^x Z^z`` (global phase dropped) per trajectory.

    state: ``(*batch, 2**n)``; x, z: bool ``(*batch, n)``. Returns ``(*batch, 2**n)``.
    """
    return apply_pauli_masks(state, bits_to_mask(x), bits_to_mask(z))


def apply_pauli_masks(state: Tensor, xm: Tensor, zm: Tensor, *, inverse: bool = False) -> Tensor:
    """``X^x Z^z`` from int64 basis masks ``(*batch,)``: ``new[i] = s(i ^ x) old[i ^ x]``.

    ``inverse=True`` applies ``(X^x Z^z)^-1 = Z^z X^x``: ``old[i] = s(i) new[i ^ x]``,
    with ``s(i) = (-1)**popcount(i & z)``. Both are unitary: the adjoint backward
    un-computes a trajectory with the inverse.
    """
    size = state.shape[-1]
    idx = torch.arange(size, device=state.device)
    sign = (1 - 2 * _parity(idx & zm[..., None])).to(
        state.real.dtype if state.is_complex() else state.dtype
    )  # (*batch, N)
    flip = (idx ^ xm[..., None]).expand(*state.shape[:-1], size)
    if inverse:
        return torch.gather(state, -1, flip) * sign
    return torch.gather(state * sign, -1, flip)

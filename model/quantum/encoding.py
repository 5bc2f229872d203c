"""Classical data -> quantum states: amplitude encoding and angle encoding.

* ``amplitude_encode(x, n)``: L2-normalise each row and zero-pad ``(..., d)`` to
  ``(..., 2**n)`` -- a real state whose amplitude ``i`` is ``x_i / |x|``.
* ``amplitude_encode(x, n, offset=c)``: append the constant ``c`` as amplitude ``d`` before
  normalising, ``(x, c) / sqrt(|x|^2 + c^2)``. Every Pauli expectation of the state is a
  quadratic form of it, so the cross terms ``c * x_i`` make latents linear in ``x`` (without
  an offset they are even under ``x -> -x``).
* Angle encoding: ``RY(input_scale * z_j)`` on qubit ``j`` (``angle_matrices``), used with
  data re-uploading in the PQC.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.errors import ConfigError
from model.quantum.gates import ry_matrix_real

__all__ = ["amplitude_encode", "angle_matrices", "split_chunks"]


def amplitude_encode(
    x: Tensor, n_qubits: int, *, offset: Tensor | float | None = None, eps: float = 1e-12
) -> Tensor:
    """``(..., d)`` real -> ``(..., 2**n_qubits)`` unit-norm real state (zero-padded).

    ``offset`` (a float, or a tensor broadcastable to ``x[..., :1]``): appended as one more
    amplitude before normalising, so ``d + 1`` values are encoded; ``offset=0`` gives the
    same state as no offset. Raises ConfigError when the values do not fit in
    ``2**n_qubits`` amplitudes. An all-zero row stays all-zero (its norm is clamped at ``eps``).
    """
    if offset is not None:
        column = torch.as_tensor(offset, dtype=x.dtype, device=x.device)
        x = torch.cat([x, column.expand(*x.shape[:-1], 1)], dim=-1)  # (..., d + 1)
    d = x.shape[-1]
    size = 2**n_qubits
    if d > size:
        raise ConfigError(
            f"amplitude encoding of {d} values{' (embedding + offset)' if offset is not None else ''} needs at least "
            f"{(d - 1).bit_length()} qubits (2**n >= {d}), but the register has "
            f"{n_qubits} qubits (2**{n_qubits} = {size} amplitudes); raise trial.qubits "
            "or trial.encoders."
        )
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    if d < size:
        x = torch.nn.functional.pad(x, (0, size - d))
    return x


def split_chunks(x: Tensor, parts: int) -> Tensor:
    """``(B, d) -> (B, parts, ceil(d / parts))``: contiguous equal chunks, last zero-padded."""
    d = x.shape[-1]
    chunk = -(-d // parts)
    if chunk * parts != d:
        x = torch.nn.functional.pad(x, (0, chunk * parts - d))
    return x.reshape(*x.shape[:-1], parts, chunk)


def angle_matrices(z: Tensor, input_scale: float) -> Tensor:
    """Angle encoding ``(..., q) -> (..., q, 2, 2)`` real ``RY(input_scale * z_j)`` matrices."""
    return ry_matrix_real(input_scale * z)

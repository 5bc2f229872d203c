"""Classical data -> quantum states: amplitude encoding and angle encoding.

* ``amplitude_encode(x, n)``: L2-normalise each row and zero-pad ``(..., d)`` to
  ``(..., 2**n)`` -- a real state whose amplitude ``i`` is ``x_i / |x|``.
* Angle encoding: ``RY(input_scale * z_j)`` on qubit ``j`` (``angle_matrices``), used with
  data re-uploading in the PQC.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.errors import ConfigError
from model.quantum.gates import ry_matrix_real

__all__ = ["amplitude_encode", "angle_matrices", "split_chunks"]


def amplitude_encode(x: Tensor, n_qubits: int, *, eps: float = 1e-12) -> Tensor:
    """``(..., d)`` real -> ``(..., 2**n_qubits)`` unit-norm real state (zero-padded).

    Raises ConfigError when ``d > 2**n_qubits``. An all-zero row stays all-zero
    (its norm is clamped at ``eps``).
    """
    d = x.shape[-1]
    size = 2**n_qubits
    if d > size:
        raise ConfigError(
            f"amplitude encoding of a {d}-dimensional vector needs at least "
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

"""Gate matrices as pure functions of parameter tensors.

Every parametrised gate takes angles of any batch shape ``(...)`` (radians) and returns
``(..., 2, 2)`` complex matrices (``ry_matrix`` also has a real variant). Conventions:

* ``RX(t) = exp(-i t X / 2)``, ``RY(t) = exp(-i t Y / 2)``, ``RZ(t) = exp(-i t Z / 2)``.
* ``Rot(phi, theta, omega) = RZ(omega) @ RY(theta) @ RZ(phi)`` -- the PennyLane /
  torchquantum "Rot" convention: ``RZ(phi)`` acts first, ``RZ(omega)`` last.
* Two-qubit constants act on ``(control, target)`` with the first qubit as the most
  significant bit of the 4-dim index (``CNOT = |0><0| x I + |1><1| x X``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "rx_matrix",
    "ry_matrix",
    "ry_matrix_real",
    "rz_matrix",
    "rot_matrix",
    "I2",
    "X",
    "Y",
    "Z",
    "H",
    "CNOT",
    "CZ",
]

I2 = torch.eye(2, dtype=torch.complex64)
X = torch.tensor([[0, 1], [1, 0]], dtype=torch.complex64)
Y = torch.tensor([[0, -1j], [1j, 0]], dtype=torch.complex64)
Z = torch.tensor([[1, 0], [0, -1]], dtype=torch.complex64)
H = torch.tensor([[1, 1], [1, -1]], dtype=torch.complex64) / 2**0.5
CNOT = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.complex64)
CZ = torch.diag(torch.tensor([1, 1, 1, -1], dtype=torch.complex64))


def _as_real(theta: Tensor | float) -> Tensor:
    t = torch.as_tensor(theta)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def _mat(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """Stack four (...) tensors into (..., 2, 2) ``[[a, b], [c, d]]``."""
    return torch.stack([a, b, c, d], dim=-1).reshape(*a.shape, 2, 2)


def _cplx(re: Tensor, im: Tensor) -> Tensor:
    return torch.complex(re, im)


def ry_matrix_real(theta: Tensor | float) -> Tensor:
    """Real RY: (...) -> (..., 2, 2) ``[[cos t/2, -sin t/2], [sin t/2, cos t/2]]``."""
    t = _as_real(theta)
    c, s = torch.cos(t / 2), torch.sin(t / 2)
    return _mat(c, -s, s, c)


def ry_matrix(theta: Tensor | float) -> Tensor:
    """Complex RY: (...) -> (..., 2, 2)."""
    m = ry_matrix_real(theta)
    return _cplx(m, torch.zeros_like(m))


def rx_matrix(theta: Tensor | float) -> Tensor:
    """RX: (...) -> (..., 2, 2) ``[[cos, -i sin], [-i sin, cos]]`` of t/2."""
    t = _as_real(theta)
    c, s = torch.cos(t / 2), torch.sin(t / 2)
    zero = torch.zeros_like(c)
    return _mat(_cplx(c, zero), _cplx(zero, -s), _cplx(zero, -s), _cplx(c, zero))


def rz_matrix(theta: Tensor | float) -> Tensor:
    """RZ: (...) -> (..., 2, 2) ``diag(exp(-i t/2), exp(i t/2))``."""
    t = _as_real(theta)
    c, s = torch.cos(t / 2), torch.sin(t / 2)
    zero = torch.zeros_like(c)
    return _mat(_cplx(c, -s), _cplx(zero, zero), _cplx(zero, zero), _cplx(c, s))


def rot_matrix(phi: Tensor | float, theta: Tensor | float, omega: Tensor | float) -> Tensor:
    """Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi): (...) x3 -> (..., 2, 2).

    Closed form ``[[e^{-i(phi+omega)/2} c, -e^{i(phi-omega)/2} s],
    [e^{-i(phi-omega)/2} s, e^{i(phi+omega)/2} c]]`` with c, s = cos, sin of theta/2.
    """
    phi, theta, omega = _as_real(phi), _as_real(theta), _as_real(omega)
    c, s = torch.cos(theta / 2), torch.sin(theta / 2)
    plus, minus = (phi + omega) / 2, (phi - omega) / 2
    mags = torch.stack([c, -s, s, c], dim=-1)  # (..., 4)
    phases = torch.stack([-plus, minus, -minus, plus], dim=-1)
    out = torch.complex(mags * torch.cos(phases), mags * torch.sin(phases))
    return out.reshape(*c.shape, 2, 2)

"""Circuit descriptions (ansatz) built from a TrialConfig, and their compiled simulator.

Architecture
------------
A **trainable layer** is one rotation per qubit -- ``Rot(phi, theta, omega)`` (3 params,
complex) or ``RY(theta)`` (1 param, real fast path) -- followed by an **entangling block**:
``CNOT(i -> (i + C) mod q)`` for ``i = 0 .. q-1`` in that order (``C`` = connectivity).
For q = 1 there is no entangler; for q = 2 the block is CNOT(0->1) then CNOT(1->0).
Example, q = 4, C = 1 (a ring) and C = 2 (long range)::

    C=1:  q0 --*-----------X--       C=2:  q0 --*-----X-------
    .           |           |                   |     |
          q1 --X--*---------|--             q1 --|--*--|--X----
                  |         |                   |  |  |  |
          q2 -----X--*------|--             q2 --X--|--*--|----
                     |      |                      |     |
          q3 --------X------*--             q3 -----X-----*----

* **sQE** (simulated quantum encoder): amplitude-encode the embedding on q qubits,
  ``encoder_layers`` trainable layers, exact Pauli-Z of every qubit -> latent (B, q).
* **PQC**: for r in 1..R: angle-encode the latent (``RY(input_scale * z_j)`` on qubit j),
  then N trainable layers; then M trainable main layers; Pauli-Z of every qubit.

Compilation: the rotations of a layer are fused into Kronecker blocks of at most
``block`` qubits (one matmul each); an angle-encoding layer followed directly by a
rotation layer is fused into one per-sample layer (when there is no gate noise); every
entangling block is one precomputed permutation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.config import TrialConfig
from model.errors import ConfigError
from model.quantum import cpu_kernel
from model.quantum import noise as qnoise
from model.quantum.adjoint import run_steps
from model.quantum.encoding import angle_matrices
from model.quantum.gates import rot_matrix, ry_matrix_real
from model.quantum.statevector import (
    block_bounds,
    cnot_permutation,
    kron_block,
    member_major,
    probabilities,
)

__all__ = [
    "Op",
    "CircuitSpec",
    "entangler_pairs",
    "sqe_spec",
    "pqc_spec",
    "params_per_rotation",
    "layer_matrices",
    "CircuitRunner",
]

ENCODE, ROTATE, ENTANGLE = "encode", "rotate", "entangle"
FUSE_ENCODING = True  # fuse angle encoding into the following rotation layer (noise-free)


@dataclass(frozen=True)
class Op:
    """One step of a circuit: ``encode`` (RY(input_scale * z_j) on every qubit),
    ``rotate`` (trainable layer ``index``: one rotation per qubit) or ``entangle``."""

    kind: str
    index: int = 0


@dataclass(frozen=True)
class CircuitSpec:
    n_qubits: int
    rotation: str  # "rot" | "ry"
    connectivity: int
    ops: tuple[Op, ...]

    @property
    def n_layers(self) -> int:
        return sum(op.kind == ROTATE for op in self.ops)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return entangler_pairs(self.n_qubits, self.connectivity)

    @property
    def is_real(self) -> bool:
        return self.rotation == "ry"


def entangler_pairs(n: int, connectivity: int) -> list[tuple[int, int]]:
    """CNOT pairs ``(i, (i + C) mod n)`` for i = 0..n-1; empty for n = 1."""
    if n == 1:
        return []
    return [(i, (i + connectivity) % n) for i in range(n)]


def _trainable(index: int) -> list[Op]:
    return [Op(ROTATE, index), Op(ENTANGLE)]


def sqe_spec(config: TrialConfig) -> CircuitSpec:
    """``encoder_layers`` trainable layers (the amplitude-encoded state is the input)."""
    ops = [op for i in range(config.encoder_layers) for op in _trainable(i)]
    return CircuitSpec(config.qubits, config.rotation, config.connectivity, tuple(ops))


def pqc_spec(config: TrialConfig) -> CircuitSpec:
    """R x (encode, N trainable layers), then M trainable layers."""
    ops: list[Op] = []
    layer = 0
    for _ in range(config.reuploads):
        ops.append(Op(ENCODE))
        for _ in range(config.reupload_layers):
            ops += _trainable(layer)
            layer += 1
    for _ in range(config.main_layers):
        ops += _trainable(layer)
        layer += 1
    return CircuitSpec(config.qubits, config.rotation, config.connectivity, tuple(ops))


def params_per_rotation(rotation: str) -> int:
    return 3 if rotation == "rot" else 1


def default_block(n: int) -> int:
    """Kronecker block size (qubits per fused matrix), chosen with model/quantum/benchmark.py:
    4 up to 11 qubits (10-qubit head), 5 above (14-qubit reference circuit)."""
    return 4 if n <= 11 else 5


INIT_STD = 0.1  # radians


def init_weights(shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
    """Rotation angles drawn from N(0, INIT_STD^2): a near-identity start.

    Near-identity circuits keep the amplitude-encoded features visible in the sQE's
    Pauli-Z latent at the start of training; angles uniform in [0, 2*pi) scramble the
    state so that every latent is close to 0 for every input. Measured on the demo set
    (quickstart settings, 9 qubits, 80 epochs, lr 0.03, seeds 0-1): test accuracy
    0.59 / 0.59 with uniform angles, 0.69 / 0.70 with this initialisation.
    """
    return torch.randn(shape, generator=generator) * INIT_STD


def layer_matrices(weights: Tensor, rotation: str) -> Tensor:
    """``(..., q, P) -> (..., q, 2, 2)``: Rot (complex, P=3) or real RY (P=1)."""
    if rotation == "rot":
        return rot_matrix(weights[..., 0], weights[..., 1], weights[..., 2])
    return ry_matrix_real(weights[..., 0])


class CircuitRunner(nn.Module):
    """Simulates a CircuitSpec on a batch of states (no parameters; index buffers only).

    ``forward(state, weights, z=None, input_scale=pi, p1=0, p2=0)``:
    state ``(*batch, 2**q)``; weights ``(L, *wb, q, P)`` with ``wb`` broadcastable to the
    state's batch (``()`` for a shared circuit, ``(E,)`` for E encoders on a ``(B, E, .)``
    state); z ``(B, q)`` latent for ``encode`` ops. Returns the final state.
    With p1 or p2 > 0 every sample follows its own Pauli trajectory.

    ``cpu_kernel``: ``off`` (the default here: torch ops, the reference) | ``auto`` | ``on``
    (the heads pass ``trial.cpu_kernel``): noise-free float32 circuits on the CPU run in
    :mod:`model.quantum.cpu_kernel`; the final state is then complex64 even for ``ry``.
    """

    def __init__(
        self,
        spec: CircuitSpec,
        *,
        block: int | None = None,
        fuse_encoding: bool = FUSE_ENCODING,
        cpu_kernel: str = "off",
    ) -> None:
        super().__init__()
        self.spec = spec
        self.cpu_kernel = cpu_kernel  # auto | on | off: see _use_kernel
        self.ran_kernel = False  # a forward ran in the kernel (the trial's engine: cpu-kernel)
        self.block = default_block(spec.n_qubits) if block is None else block
        self.fuse_encoding = fuse_encoding
        self.bounds = block_bounds(spec.n_qubits, self.block)
        perm = cnot_permutation(spec.pairs, spec.n_qubits)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("inverse", torch.argsort(perm), persistent=False)
        # layers fused with the encode op right before them (used when noise is off)
        ops = spec.ops
        self.fused = {
            ops[i + 1].index
            for i in range(len(ops) - 1)
            if ops[i].kind == ENCODE and ops[i + 1].kind == ROTATE
        }
        self.kernel_program = self._kernel_program(perm)
        self.encodes = any(op.kind == ENCODE for op in ops)
        self._rows: dict[tuple, Tensor] = {}  # (batch, weight batch) -> weight set per state

    def _layer_blocks(self, mats: Tensor) -> list[list[tuple[int, Tensor]]]:
        """``(L, ..., q, 2, 2)`` -> per layer [(first qubit, (..., K, K)), ...] Kronecker blocks."""
        sizes = [size for _, size in self.bounds]
        per_block = [
            kron_block(part).unbind(0) if part.shape[-3] > 1 else part[..., 0, :, :].unbind(0)
            for part in mats.split(sizes, dim=-3)
        ]
        firsts = [first for first, _ in self.bounds]
        return [list(zip(firsts, blocks, strict=True)) for blocks in zip(*per_block, strict=True)]

    def _use_kernel(self, state: Tensor | None, weights: Tensor, noisy: bool) -> bool:
        """The compiled CPU kernel runs noise-free float32 circuits on the CPU; its backward
        is adjoint differentiation, so it serves ``gradient`` autograd and adjoint alike.
        ``auto``: wherever it builds; ``on``: an error where it cannot be built."""
        if self.cpu_kernel == "off":
            return False
        n = self.spec.n_qubits
        supported = (
            weights.device.type == "cpu"
            and weights.dtype == torch.float32
            and (state is None or state.dtype in (torch.float32, torch.complex64))
            and (state is None or state.device.type == "cpu")
            and not noisy
            and n <= cpu_kernel.MAX_QUBITS
        )
        if not supported:
            return False
        if cpu_kernel.available(n):
            return True
        if self.cpu_kernel == "on":
            raise ConfigError(
                f"trial.cpu_kernel = 'on' but the CPU kernel cannot be built: "
                f"{cpu_kernel.build_error(n)}; allowed: auto (falls back to torch) | off."
            )
        cpu_kernel.warn_unavailable(n)
        return False

    def _kernel_program(self, perm: Tensor) -> cpu_kernel.KernelProgram:
        """The circuit as one program of the CPU kernel: gate layers (an encode op fused into
        the rotation layer after it, as ``self.fused`` says; an encode op without one is a
        layer of its own) and CNOT-block permutations."""
        spec = self.spec
        prog, layer_of, enc_of = [], [], []
        for pos, op in enumerate(spec.ops):
            if op.kind == ENCODE:
                if pos + 1 < len(spec.ops) and spec.ops[pos + 1].kind == ROTATE:
                    continue  # fused into that rotation layer
                layer, enc = -1, 1
            elif op.kind == ROTATE:
                layer, enc = op.index, int(op.index in self.fused)
            else:
                if spec.n_qubits > 1:  # entangle (no entangler on one qubit)
                    prog.append(-1)
                continue
            prog.append(len(layer_of))
            layer_of.append(layer)
            enc_of.append(enc)
        return cpu_kernel.KernelProgram.build(
            spec.n_qubits, spec.rotation, prog, layer_of, enc_of, perm, torch.argsort(perm)
        )

    def _weight_rows(self, batch: tuple[int, ...], wb: tuple[int, ...]) -> Tensor:
        """``(prod(batch),)`` int32: the weight set (flat index into ``wb``, right-aligned
        with the batch) of every state; cached per shape."""
        key = (batch, wb)
        if key not in self._rows:
            sets = torch.arange(math.prod(wb), dtype=torch.int32).reshape(wb)
            self._rows[key] = torch.broadcast_to(sets, batch).reshape(-1).contiguous()
        return self._rows[key]

    def _run_kernel(
        self,
        state: Tensor | None,
        weights: Tensor,
        z: Tensor | None,
        input_scale: float,
        probs: bool,
        readout: Tensor | None,
    ) -> Tensor:
        """The whole circuit in one call of the CPU kernel, gate matrices, encoding and
        readout included. Returns the final state, its probabilities (``probs``) or the
        observables ``probabilities @ readout``."""
        n, program = self.spec.n_qubits, self.kernel_program
        batch = tuple(state.shape[:-1] if state is not None else z.shape[:-1])
        if self.encodes and z is None:
            raise ValueError("this circuit has encode ops but no latent z was given")
        if state is None and program.layer_of.numel() == 0:
            state = _zero_state(batch, n, weights)
        if program.layer_of.numel() == 0:  # nothing to run
            return _measure(state, probs, readout)
        wb = tuple(weights.shape[1:-2])
        angles = weights.reshape(weights.shape[0], math.prod(wb), n, weights.shape[-1])
        if z is not None:
            z = z.expand(*batch, n).reshape(-1, n)
        final, p, obs = cpu_kernel.run_layers(
            None if state is None else state.reshape(-1, state.shape[-1]),
            angles,
            self._weight_rows(batch, wb),
            program,
            z=z,
            scale=input_scale,
            readout=readout,
            probs=probs and readout is None,
        )
        if readout is not None:
            return obs.reshape(*batch, -1)
        return (p if probs else final).reshape(*batch, 2**n)

    def forward(
        self,
        state: Tensor,
        weights: Tensor,
        z: Tensor | None = None,
        *,
        input_scale: float = math.pi,
        p1: float = 0.0,
        p2: float = 0.0,
        generator=None,
        adjoint: bool = False,
        probs: bool = False,
        readout: Tensor | None = None,
    ) -> Tensor:
        """Final state ``(*batch, 2**q)``, with ``probs`` its Born probabilities, or with
        ``readout`` ``(2**q, F)`` the observables ``probabilities @ readout`` ``(*batch, F)``
        (the Z signs: Pauli-Z expectations). ``state`` None: ``|0..0>`` with the batch of
        ``z``. ``generator``: None, a torch.Generator or a
        :class:`model.quantum.rng.MemberRNG` (packed trials); ``adjoint``: keep only a few
        states for the backward (:mod:`model.quantum.adjoint`)."""
        spec, n = self.spec, self.spec.n_qubits
        noisy = p1 > 0 or p2 > 0
        if self._use_kernel(state, weights, noisy):
            self.ran_kernel = True
            return self._run_kernel(state, weights, z, input_scale, probs, readout)
        if state is None:
            state = _zero_state(tuple(z.shape[:-1]), n, weights)
        mats = layer_matrices(weights, spec.rotation)  # (L, *wb, q, 2, 2)
        enc = angle_matrices(z, input_scale) if z is not None else None  # (*batch, q, 2, 2) real
        if spec.is_real is False and not state.is_complex():
            state = state.to(mats.dtype)  # static dtype decision: complex from the start
        fuse = self.fuse_encoding and not noisy and enc is not None and bool(self.fused)
        if fuse:
            # encode + rotation layer -> one per-sample layer (identity for the other layers)
            enc_c = enc.to(mats.dtype)
            eye = torch.eye(2, dtype=mats.dtype, device=mats.device).expand_as(enc_c)
            enc_all = torch.stack([enc_c if i in self.fused else eye for i in range(mats.shape[0])])
            wb = mats.shape[1:-3]  # weights' batch dims, right-aligned with the state's batch
            pad = (1,) * (enc_c.dim() - 3 - len(wb))
            mats = (
                mats.reshape(mats.shape[0], *pad, *mats.shape[1:]) @ enc_all
            )  # (L, *batch, q, 2, 2)

        blocks: list[Tensor] = []  # the matrices the steps refer to (by index)
        layers = []
        if mats.shape[0]:
            for layer in self._layer_blocks(mats):
                layers.append([(first, len(blocks) + j) for j, (first, _) in enumerate(layer)])
                blocks += [m for _, m in layer]
        # the latent is the same at every re-upload: build its per-sample blocks once
        enc_steps = []
        if enc is not None:
            for first, m in self._layer_blocks(enc.unsqueeze(0))[0]:
                enc_steps.append(("m", first, len(blocks)))
                blocks.append(m.to(state.dtype) if state.is_complex() else m)

        steps: list[tuple] = []
        x_bits = z_bits = None  # pending Pauli frame (noisy path)
        batch = state.shape[:-1]

        def flush() -> None:
            steps.append(("f", qnoise.bits_to_mask(x_bits), qnoise.bits_to_mask(z_bits)))

        ops = spec.ops
        for pos, op in enumerate(ops):
            if op.kind == ENCODE:
                if enc is None:
                    raise ValueError("this circuit has encode ops but no latent z was given")
                if fuse and pos + 1 < len(ops) and ops[pos + 1].kind == ROTATE:
                    continue  # fused into the next rotation layer
                if x_bits is not None:
                    flush()
                steps += enc_steps
                if noisy:
                    x_bits, z_bits = qnoise.sample_1q_depolarizing(
                        batch, n, p1, device=state.device, generator=generator
                    )
            elif op.kind == ROTATE:
                if x_bits is not None:
                    flush()
                    x_bits = z_bits = None
                steps += [("m", first, i) for first, i in layers[op.index]]
                if noisy:
                    x_bits, z_bits = qnoise.sample_1q_depolarizing(
                        batch, n, p1, device=state.device, generator=generator
                    )
            elif n > 1:  # entangle (no entangler on one qubit)
                steps.append(("p",))
                if noisy:
                    if x_bits is None:
                        x_bits = torch.zeros(*batch, n, dtype=torch.bool, device=state.device)
                        z_bits = torch.zeros_like(x_bits)
                    x_bits, z_bits = qnoise.propagate_block(
                        x_bits, z_bits, spec.pairs, p2, generator=generator
                    )
        if x_bits is not None:
            flush()
        members = weights.dim() - 3  # the weights' batch axes (T, E, ...)
        if members == 0 or len(batch) <= members:
            out = run_steps(state, steps, blocks, n, self.perm, self.inverse, adjoint=adjoint)
            return _measure(out, probs, readout)
        # packed trials: simulate member-major, (B, T, E, N) -> (T, E, B, N)
        order, back = member_major(len(batch), members)
        samples = len(batch) - members

        def move(m: Tensor) -> Tensor:
            if m.dim() - 2 == len(batch):  # per-sample (B, T, E, K, K)
                return m.permute(*order, len(batch), len(batch) + 1)
            if m.dim() > 2:  # per-member (T, E, K, K), right-aligned with the batch
                lead = m.shape[:-2]
                full = (1,) * (members - len(lead)) + tuple(lead)
                return m.reshape(*full, *(1,) * samples, *m.shape[-2:])
            return m

        steps = [
            ("f", step[1].permute(*order), step[2].permute(*order)) if step[0] == "f" else step
            for step in steps
        ]
        blocks = [move(m) for m in blocks]
        out = run_steps(
            state.permute(*order, len(batch)).contiguous(),
            steps,
            blocks,
            n,
            self.perm,
            self.inverse,
            adjoint=adjoint,
        )
        out = out.permute(*back, len(batch))
        return _measure(out, probs, readout)


def _zero_state(batch: tuple[int, ...], n: int, weights: Tensor) -> Tensor:
    """``|0..0>`` ``(*batch, 2**n)`` in the weights' dtype and device."""
    state = torch.zeros(*batch, 2**n, dtype=weights.dtype, device=weights.device)
    state[..., 0] = 1
    return state


def _measure(state: Tensor, probs: bool, readout: Tensor | None) -> Tensor:
    """The state, its probabilities, or the observables ``probabilities @ readout``."""
    if readout is not None:
        return probabilities(state) @ readout.to(state.real.dtype)
    return probabilities(state) if probs else state

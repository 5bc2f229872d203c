"""The hybrid quantum head: sQE (or MLP encoder) -> PQC -> logits.

    x (B, d) --sQE: amplitude-encode, encoder_layers trainable layers, <Z>--> z (B, q) in [-1, 1]
             (E > 1: E registers on contiguous chunks, combined by mean | tanh(Linear(E*q, q)))
      or    --MLP encoder: Linear(d, hidden) -> ReLU -> Linear(hidden, q) -> tanh-->
    z --PQC: R x [RY(input_scale * z_j), N trainable layers], M trainable layers, <Z>--> (B, q)
      --final_linear: Linear(q, 2)          -> logits (B, 2)
      --no final_linear: p1 = (1 - <Z_0>)/2 -> logits = log([1 - p1, p1])

Noise: the sQE is a simulation and stays exact; shot noise (``shots``) and gate noise
(``noise_p1``, ``noise_p2``) apply to the PQC only -- the part meant for a real QPU.
Rotation angles start near identity, N(0, 0.1^2) (see ``init_weights``); linear layers use torch defaults.

Packing: ``QuantumHead(config, d, seeds=[s0, .., s_{T-1}])`` holds T independent heads
(every weight has a member axis of size T, see ``model.heads.packed``) and maps
``(B, T, d) -> (B, T, 2)``; with one member it also takes ``(B, d) -> (B, 2)``.
Member t draws its initial weights from a generator seeded with ``seeds[t]``.
``adjoint=True`` differentiates the circuits by un-computing them (``model.quantum.adjoint``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import TrialConfig
from model.errors import ConfigError
from model.heads import registry
from model.heads.packed import PackedLinear, as_members, from_members, member_generators
from model.quantum.circuits import (
    CircuitRunner,
    init_weights,
    params_per_rotation,
    pqc_spec,
    sqe_spec,
)
from model.quantum.encoding import amplitude_encode, split_chunks
from model.quantum.noise import shot_probs
from model.quantum.statevector import readout_signs, z_expectations, zz_pairs

__all__ = [
    "QuantumHead",
    "SimulatedQuantumEncoder",
    "MLPEncoder",
    "PQC",
    "expected_parameter_count",
]

_LOG_CLAMP = 1e-6


def expected_parameter_count(config: TrialConfig, input_dim: int) -> int:
    """Closed-form parameter count of ``QuantumHead(config, input_dim)``."""
    q, per = config.qubits, params_per_rotation(config.rotation)
    if config.head == "mlp_encoder":
        h = config.hidden
        enc = (input_dim * h + h + h * q + q) if h else (input_dim * q + q)
    else:
        enc = config.encoders * config.encoder_layers * q * per
        if config.encoders > 1 and config.encoder_combine == "linear":
            enc += config.encoders * q * q + q
        if config.amplitude_offset_trainable:
            enc += 1
        if config.sqe_readout == "zz" and zz_pairs(q):
            enc += (q + len(zz_pairs(q))) * q + q
    pqc = (config.reuploads * config.reupload_layers + config.main_layers) * q * per
    return enc + pqc + (2 * q + 2 if config.final_linear else 0)


def _stack_init(shape: tuple[int, ...], generators) -> Tensor:
    """Per-member ``init_weights(shape)`` stacked at axis 1: ``(L, T, *shape[1:])``."""
    return torch.stack([init_weights(shape, g) for g in generators], dim=1)


class SimulatedQuantumEncoder(nn.Module):
    """sQE: ``(B, T, d) -> (B, T, q)`` exact Pauli-Z latent, E registers on contiguous chunks."""

    def __init__(self, config: TrialConfig, input_dim: int, generators, *, adjoint=False) -> None:
        super().__init__()
        q, e = config.qubits, config.encoders
        if e > input_dim:
            raise ConfigError(
                f"trial.encoders = {e} is larger than the embedding dimension {input_dim}; "
                f"allowed: 1..{input_dim}."
            )
        chunk = -(-input_dim // e)
        has_offset = config.amplitude_offset != 0 or config.amplitude_offset_trainable
        values = chunk + 1 if has_offset else chunk  # the offset is one more amplitude
        if values > 2**q:
            need = (values - 1).bit_length()
            plus = " + 1 offset amplitude" if has_offset else ""
            raise ConfigError(
                f"trial.qubits = {q} is too small to amplitude-encode {chunk}{plus} values per "
                f"encoder (input_dim = {input_dim}, encoders = {e}): 2**{q} = {2**q} < {values}. "
                f"Use qubits >= {need} or more encoders (>= {-(-input_dim // (2**q - values + chunk))})"
                + (
                    ", or amplitude_offset: 0 without amplitude_offset_trainable."
                    if has_offset
                    else "."
                )
            )
        self.qubits, self.encoders, self.adjoint = q, e, adjoint
        t = len(generators)
        spec = sqe_spec(config)
        self.runner = CircuitRunner(spec, cpu_kernel=config.cpu_kernel)
        per = params_per_rotation(config.rotation)
        self.weights = nn.Parameter(
            _stack_init((spec.n_layers, e, q, per), generators)
        )  # (L, T, E, q, P)
        self.weights.member_axis = 1
        # amplitude offset: a constant, or one trainable scalar per member (T,), or none
        self.offset: Tensor | float | None = config.amplitude_offset if has_offset else None
        if config.amplitude_offset_trainable:
            self.offset = nn.Parameter(torch.full((t,), float(config.amplitude_offset)))
        self.combine = None
        if e > 1 and config.encoder_combine == "linear":
            self.combine = PackedLinear(t, e * q, q, generators)
        # readout zz: [<Z_k>, <Z_i Z_j> on the entangler's nearest-neighbour pairs] -> tanh(Linear) -> q
        self.pairs = zz_pairs(q) if config.sqe_readout == "zz" else []
        self.readout = None
        if self.pairs:
            self.readout = PackedLinear(t, q + len(self.pairs), q, generators)
        # probs @ signs: [<Z_k>, <Z_i Z_j> of the pairs], computed inside the circuit kernel
        self.register_buffer("signs", readout_signs(q, self.pairs), persistent=False)

    def _offset(self) -> Tensor | float | None:
        """The offset as amplitude_encode wants it: per member ``(T, 1, 1)`` when trainable."""
        if isinstance(self.offset, nn.Parameter):
            return self.offset[:, None, None]  # broadcasts against (B, T, E, 1)
        return self.offset

    def forward(self, x: Tensor) -> Tensor:
        chunks = split_chunks(x.to(self.weights.dtype), self.encoders)  # (B, T, E, chunk)
        state = amplitude_encode(chunks, self.qubits, offset=self._offset())  # (B, T, E, 2**q) real
        wide = self.runner(state, self.weights, adjoint=self.adjoint, readout=self.signs)
        z = wide[..., : self.qubits]  # (B, T, E, q)
        if self.readout is not None:  # wide: (B, T, E, q + n_pairs), the <Z_i Z_j> after <Z_k>
            b = wide.shape[0]
            flat = wide.transpose(1, 2).reshape(b * self.encoders, wide.shape[1], -1)  # (B*E, T, F)
            z = (
                torch.tanh(self.readout(flat))
                .reshape(b, self.encoders, -1, self.qubits)
                .transpose(1, 2)
            )
        if self.encoders == 1:
            return z[:, :, 0]
        if self.combine is None:
            return z.mean(2)
        return torch.tanh(self.combine(z.flatten(2)))


class MLPEncoder(nn.Module):
    """``(B, T, d) -> (B, T, q)``: Linear(d, hidden) -> ReLU -> Linear(hidden, q) -> tanh."""

    def __init__(self, config: TrialConfig, input_dim: int, generators) -> None:
        super().__init__()
        q, h, t = config.qubits, config.hidden, len(generators)
        if h:
            self.net = nn.Sequential(
                PackedLinear(t, input_dim, h, generators),
                nn.ReLU(),
                PackedLinear(t, h, q, generators),
                nn.Tanh(),
            )
        else:
            self.net = nn.Sequential(PackedLinear(t, input_dim, q, generators), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.to(self.net[0].weight.dtype))


class PQC(nn.Module):
    """Parametrised quantum circuit: latent ``(B, T, q)`` -> Pauli-Z of every qubit ``(B, T, q)``.

    Shot noise (Gaussian in training, multinomial in eval) and depolarizing gate noise
    as configured, drawn from ``noise_rng`` (None: torch's global stream; a
    :class:`model.quantum.rng.MemberRNG`: one seeded stream per member).
    """

    def __init__(self, config: TrialConfig, generators, *, adjoint: bool = False) -> None:
        super().__init__()
        self.spec = pqc_spec(config)
        self.runner = CircuitRunner(self.spec, cpu_kernel=config.cpu_kernel)
        self.qubits = config.qubits
        self.input_scale = float(config.input_scale)
        self.shots = config.shots
        self.p1, self.p2 = config.noise_p1, config.noise_p2
        self.adjoint = adjoint
        self.noise_rng = None
        per = params_per_rotation(config.rotation)
        self.weights = nn.Parameter(
            _stack_init((self.spec.n_layers, config.qubits, per), generators)
        )
        self.weights.member_axis = 1  # (L, T, q, P)
        self.register_buffer("signs", readout_signs(config.qubits), persistent=False)

    def final_state(
        self,
        z: Tensor,
        *,
        noisy: bool = True,
        probs: bool = False,
        readout: Tensor | None = None,
    ) -> Tensor:
        """``(B, T, q) -> (B, T, 2**q)`` state after the circuit from ``|0..0>`` (one
        trajectory per sample), with ``probs`` its Born probabilities, or with ``readout``
        the observables ``probabilities @ readout``."""
        p1, p2 = (self.p1, self.p2) if noisy else (0.0, 0.0)
        return self.runner(
            None,
            self.weights,
            z.to(self.weights.dtype),
            input_scale=self.input_scale,
            p1=p1,
            p2=p2,
            generator=self.noise_rng,
            adjoint=self.adjoint,
            probs=probs,
            readout=readout,
        )

    def forward(self, z: Tensor) -> Tensor:
        if self.shots <= 0:  # exact: the Pauli-Z readout in the same call as the circuit
            return self.final_state(z, readout=self.signs)
        probs = self.final_state(z, probs=True)
        probs = shot_probs(probs, self.shots, training=self.training, generator=self.noise_rng)
        return z_expectations(probs, self.qubits)


class QuantumHead(nn.Module):
    """Hybrid head ``(B, T, d) -> logits (B, T, 2)`` for ``head`` = quantum | mlp_encoder.

    ``seeds``: one per member (default ``[config.seed]``); ``adjoint``: lean-memory gradients.
    """

    def __init__(
        self,
        config: TrialConfig,
        input_dim: int,
        *,
        seeds: list[int] | None = None,
        adjoint: bool = False,
    ) -> None:
        super().__init__()
        if not registry.is_quantum(config.head):
            raise ConfigError(
                f"trial.head = {config.head!r} is not a quantum head; "
                f"allowed: {', '.join(registry.QUANTUM_HEADS)}."
            )
        if input_dim < 1:
            raise ConfigError(f"input_dim = {input_dim} must be >= 1.")
        self.config = config
        self.input_dim = input_dim
        gens = member_generators([config.seed] if seeds is None else seeds)
        self.members = len(gens)
        if config.head == "quantum":
            self.encoder: nn.Module = SimulatedQuantumEncoder(
                config, input_dim, gens, adjoint=adjoint
            )
        else:
            self.encoder = MLPEncoder(config, input_dim, gens)
        self.pqc = PQC(config, gens, adjoint=adjoint)
        self.linear = (
            PackedLinear(self.members, config.qubits, 2, gens) if config.final_linear else None
        )

    def set_noise_rng(self, rng) -> None:
        """Draw shot and gate noise from ``rng`` (a MemberRNG with one generator per member)."""
        self.pqc.noise_rng = rng

    def latent(self, x: Tensor) -> Tensor:
        """``(B, T, d) -> (B, T, q)`` in [-1, 1] (or ``(B, d) -> (B, q)``): the PQC's input."""
        x, squeeze = as_members(x, self.members, self.input_dim, "QuantumHead")
        return from_members(self.encoder(x), squeeze)

    def forward(self, x: Tensor) -> Tensor:
        x, squeeze = as_members(x, self.members, self.input_dim, "QuantumHead")
        z = self.pqc(self.encoder(x))  # (B, T, q)
        if self.linear is not None:
            return from_members(self.linear(z), squeeze)
        p1 = (1 - z[..., 0]) / 2
        probs = torch.stack([1 - p1, p1], dim=-1).clamp(_LOG_CLAMP, 1.0)
        return from_members(torch.log(probs), squeeze)

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
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import TrialConfig
from model.errors import ConfigError
from model.quantum.circuits import (
    CircuitRunner,
    init_weights,
    params_per_rotation,
    pqc_spec,
    sqe_spec,
)
from model.quantum.encoding import amplitude_encode, split_chunks
from model.quantum.noise import shot_probs
from model.quantum.statevector import probabilities, z_expectations

__all__ = [
    "QuantumHead",
    "SimulatedQuantumEncoder",
    "MLPEncoder",
    "PQC",
    "count_parameters",
    "expected_parameter_count",
]

_LOG_CLAMP = 1e-6


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


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
    pqc = (config.reuploads * config.reupload_layers + config.main_layers) * q * per
    return enc + pqc + (2 * q + 2 if config.final_linear else 0)


class SimulatedQuantumEncoder(nn.Module):
    """sQE: ``(B, d) -> (B, q)`` exact Pauli-Z latent, E registers on contiguous chunks."""

    def __init__(self, config: TrialConfig, input_dim: int) -> None:
        super().__init__()
        q, e = config.qubits, config.encoders
        if e > input_dim:
            raise ConfigError(
                f"trial.encoders = {e} is larger than the embedding dimension {input_dim}; "
                f"allowed: 1..{input_dim}."
            )
        chunk = -(-input_dim // e)
        if chunk > 2**q:
            need = (chunk - 1).bit_length()
            raise ConfigError(
                f"trial.qubits = {q} is too small to amplitude-encode {chunk} values per encoder "
                f"(input_dim = {input_dim}, encoders = {e}): 2**{q} = {2**q} < {chunk}. "
                f"Use qubits >= {need} or more encoders (>= {-(-input_dim // 2**q)})."
            )
        self.qubits, self.encoders = q, e
        spec = sqe_spec(config)
        self.runner = CircuitRunner(spec)
        per = params_per_rotation(config.rotation)
        self.weights = nn.Parameter(init_weights((spec.n_layers, e, q, per)))  # (L, E, q, P)
        self.combine = None
        if e > 1 and config.encoder_combine == "linear":
            self.combine = nn.Linear(e * q, q)

    def forward(self, x: Tensor) -> Tensor:
        chunks = split_chunks(x.to(self.weights.dtype), self.encoders)  # (B, E, chunk)
        state = amplitude_encode(chunks, self.qubits)  # (B, E, 2**q) real
        state = self.runner(state, self.weights)
        z = z_expectations(probabilities(state), self.qubits)  # (B, E, q)
        if self.encoders == 1:
            return z[:, 0]
        if self.combine is None:
            return z.mean(1)
        return torch.tanh(self.combine(z.flatten(1)))


class MLPEncoder(nn.Module):
    """``(B, d) -> (B, q)``: Linear(d, hidden) -> ReLU -> Linear(hidden, q) -> tanh."""

    def __init__(self, config: TrialConfig, input_dim: int) -> None:
        super().__init__()
        q, h = config.qubits, config.hidden
        if h:
            self.net = nn.Sequential(nn.Linear(input_dim, h), nn.ReLU(), nn.Linear(h, q), nn.Tanh())
        else:
            self.net = nn.Sequential(nn.Linear(input_dim, q), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.to(self.net[0].weight.dtype))


class PQC(nn.Module):
    """Parametrised quantum circuit: latent ``(B, q)`` -> Pauli-Z of every qubit ``(B, q)``.

    Shot noise (Gaussian in training, multinomial in eval) and depolarizing gate noise
    as configured.
    """

    def __init__(self, config: TrialConfig) -> None:
        super().__init__()
        self.spec = pqc_spec(config)
        self.runner = CircuitRunner(self.spec)
        self.qubits = config.qubits
        self.input_scale = float(config.input_scale)
        self.shots = config.shots
        self.p1, self.p2 = config.noise_p1, config.noise_p2
        per = params_per_rotation(config.rotation)
        self.weights = nn.Parameter(init_weights((self.spec.n_layers, config.qubits, per)))

    def final_state(self, z: Tensor, *, noisy: bool = True) -> Tensor:
        """``(B, q) -> (B, 2**q)`` state after the circuit (one trajectory per sample)."""
        state = torch.zeros(z.shape[0], 2**self.qubits, dtype=self.weights.dtype, device=z.device)
        state[:, 0] = 1
        p1, p2 = (self.p1, self.p2) if noisy else (0.0, 0.0)
        return self.runner(
            state,
            self.weights,
            z.to(self.weights.dtype),
            input_scale=self.input_scale,
            p1=p1,
            p2=p2,
        )

    def forward(self, z: Tensor) -> Tensor:
        probs = probabilities(self.final_state(z))
        probs = shot_probs(probs, self.shots, training=self.training)
        return z_expectations(probs, self.qubits)


class QuantumHead(nn.Module):
    """Hybrid head ``(B, d) float -> logits (B, 2)`` for ``head`` = quantum | mlp_encoder."""

    def __init__(self, config: TrialConfig, input_dim: int) -> None:
        super().__init__()
        if config.head not in ("quantum", "mlp_encoder"):
            raise ConfigError(
                f"trial.head = {config.head!r} is not a quantum head; allowed: quantum, mlp_encoder."
            )
        if input_dim < 1:
            raise ConfigError(f"input_dim = {input_dim} must be >= 1.")
        self.config = config
        self.input_dim = input_dim
        if config.head == "quantum":
            self.encoder: nn.Module = SimulatedQuantumEncoder(config, input_dim)
        else:
            self.encoder = MLPEncoder(config, input_dim)
        self.pqc = PQC(config)
        self.linear = nn.Linear(config.qubits, 2) if config.final_linear else None

    def latent(self, x: Tensor) -> Tensor:
        """``(B, d) -> (B, q)`` in [-1, 1]: the PQC's input."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ConfigError(
                f"QuantumHead expects input of shape (B, {self.input_dim}), got {tuple(x.shape)}."
            )
        z = self.pqc(self.latent(x))  # (B, q)
        if self.linear is not None:
            return self.linear(z)
        p1 = (1 - z[:, 0]) / 2
        probs = torch.stack([1 - p1, p1], dim=1).clamp(_LOG_CLAMP, 1.0)
        return torch.log(probs)

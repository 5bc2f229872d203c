"""Typed, validated configuration of one trial (``TrialConfig``) and of the data (``DataConfig``).

Both are frozen dataclasses built once at the edge (YAML, CLI ``--set``, a sweep point)
with :meth:`from_dict`, which names the offending key, the value and what is allowed.
``to_dict()`` gives the plain dict that Ray / MLflow / Parquet need.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from model.errors import ConfigError, short_repr, shorten
from model.heads.registry import HEADS, is_quantum

__all__ = [
    "TrialConfig",
    "DataConfig",
    "HEADS",
    "ROTATIONS",
    "PROTOCOLS",
    "DEFAULT_ENCODER",
]

ROTATIONS = ("rot", "ry")
READOUTS = ("z", "zz")
COMBINES = ("mean", "linear")
PROTOCOLS = ("paper", "splits")
DEVICES = ("auto", "cpu", "cuda")
CUDA_GRAPHS = ("auto", "on", "off")
CPU_KERNELS = ("auto", "on", "off")
GRADIENTS = ("auto", "adjoint", "autograd")
DEFAULT_ENCODER = "sentence-transformers/paraphrase-mpnet-base-v2"


@dataclass(frozen=True)
class TrialConfig:
    """Everything that defines one trial of a head on fixed embeddings.

    Paper names in brackets: R re-upload number, N re-uploading layers, M main layers,
    C connectivity.
    """

    head: str = (
        "quantum"  # quantum | mlp_encoder | mlp | logreg | svc | finetune (model.heads.registry)
    )
    # --- quantum head -------------------------------------------------------------
    qubits: int = 10  # register size of every sQE and of the PQC
    encoders: int = 1  # E simulated quantum encoders (multi-sQE when > 1)
    encoder_layers: int = 5  # trainable layers in each sQE circuit
    encoder_combine: str = "mean"  # how E latent vectors become one: mean | linear (E*q -> q, tanh)
    # amplitude appended to each encoder's chunk before normalisation; 0 = the paper's encoding.
    # Non-zero: latents get terms linear in x (without it they are even under x -> -x).
    amplitude_offset: float = 0.0
    amplitude_offset_trainable: bool = False  # the offset as one trainable scalar per trial
    sqe_readout: str = "z"  # z: q Pauli-Z values | zz: + nearest-neighbour ZZ, tanh(Linear) -> q
    reuploads: int = 4  # [R] times the latent vector is angle-encoded into the PQC
    reupload_layers: int = 1  # [N] trainable layers after each upload
    main_layers: int = 2  # [M] trainable layers after the last upload
    connectivity: int = 1  # [C] CNOT range: control i -> target (i + C) mod q, 1 <= C <= q-1
    rotation: str = "rot"  # rot: RZ.RY.RZ (3 params, complex) | ry: RY (1 param, real fast path)
    final_linear: bool = True  # q Pauli-Z values -> Linear(q, 2); off: readout of qubit 0 only
    input_scale: float = math.pi  # angle-encoding angle = input_scale * latent value
    # 0: exact expectations; S > 0: shot noise (Gaussian in training, multinomial in eval)
    shots: int = 0
    noise_p1: float = 0.0  # depolarizing probability after each 1-qubit gate
    noise_p2: float = 0.0  # depolarizing probability after each 2-qubit gate
    # --- classical heads ----------------------------------------------------------
    hidden: int = 0  # MLP hidden width (0: no hidden layer); also the MLP encoder's hidden width
    batch_norm: bool = False  # BatchNorm1d after the hidden layer
    # --- head: finetune (SetFit-style; batch_size pairs per step) ----------------------
    finetune_iterations: int = 5  # pair rounds: 2 pairs per training sentence each (SetFit: 20)
    finetune_epochs: int = 1  # passes over the pairs (SetFit: 1)
    finetune_learning_rate: float = 2e-5  # AdamW on the encoder (SetFit's body default)
    # --- training -----------------------------------------------------------------
    epochs: int = 800
    batch_size: int = 16
    learning_rate: float = 1e-3
    lr_decay: float = 1.0  # exponential decay: lr_e = learning_rate * lr_decay**epoch
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"  # auto (cuda when present) | cpu | cuda
    eval_batch_size: int = 256
    cuda_graphs: str = (
        "auto"  # auto (on for CUDA) | on | off: capture the training step once, replay it
    )
    gradient: str = "auto"  # auto (adjoint from 14 qubits) | adjoint | autograd
    # auto (on where a C compiler is present) | on | off: noise-free circuits on the CPU
    # run in the compiled kernel of model/quantum/cpu_kernel.py instead of torch ops
    cpu_kernel: str = "auto"

    # ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "trial") -> TrialConfig:
        """Build and validate from a plain mapping; unknown keys are errors."""
        return _build(cls, values, where)

    def replace(self, **changes: Any) -> TrialConfig:
        return _build(type(self), {**self.to_dict(), **changes}, "trial")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def is_quantum(self) -> bool:
        return is_quantum(self.head)

    def validate(self) -> None:
        _choice(self, "head", HEADS)
        _choice(self, "rotation", ROTATIONS)
        _choice(self, "encoder_combine", COMBINES)
        _choice(self, "sqe_readout", READOUTS)
        _choice(self, "device", DEVICES)
        _choice(self, "cuda_graphs", CUDA_GRAPHS)
        _choice(self, "gradient", GRADIENTS)
        _choice(self, "cpu_kernel", CPU_KERNELS)
        for key in ("qubits", "encoders", "epochs", "batch_size", "eval_batch_size"):
            _at_least(self, key, 1)
        for key in ("encoder_layers", "reupload_layers", "main_layers", "shots", "hidden", "seed"):
            _at_least(self, key, 0)
        _at_least(self, "reuploads", 1)
        if self.qubits > 26:
            raise ConfigError(
                f"trial.qubits = {self.qubits} is too large to simulate as a statevector; "
                "allowed: 1..26 (18 fits in about 4 GB when training)."
            )
        if self.is_quantum and self.qubits > 1 and not 1 <= self.connectivity <= self.qubits - 1:
            raise ConfigError(
                f"trial.connectivity = {self.connectivity} is not allowed for qubits = {self.qubits}; "
                f"allowed: 1..{self.qubits - 1} (CNOT from qubit i to (i + C) mod q)."
            )
        for key in ("noise_p1", "noise_p2"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"trial.{key} = {short_repr(value)} is not a probability; allowed: 0.0..1.0."
                )
        _at_least(self, "finetune_iterations", 1)
        _at_least(self, "finetune_epochs", 1)
        for key in ("learning_rate", "lr_decay", "finetune_learning_rate"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"trial.{key} = {short_repr(getattr(self, key))} must be > 0.")
        if self.weight_decay < 0:
            raise ConfigError(f"trial.weight_decay = {short_repr(self.weight_decay)} must be >= 0.")


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled sentences come from, how they are split, and which encoder embeds them."""

    # demo | hf:NAME (Hugging Face hub, e.g. hf:SetFit/sst2) | a local directory
    source: str = "demo"
    protocol: str = "paper"  # paper: pool all, draw n_per_class per class, rest is test | splits
    n_per_class: int = 256  # labelled sentences drawn per class (0: use every training row)
    val_fraction: float = 0.15  # share of the drawn sentences kept for validation (protocol=paper)
    split_seed: int = 0  # seed of the draw and the split
    max_test: int = 0  # 0: every remaining row; > 0: a seeded subsample of the test set
    encoder: str = DEFAULT_ENCODER  # hub name, local sentence-transformers directory, or "minilm"
    cache_dir: str = field(default="")  # "" -> ~/.cache/qsweep/embeddings (QSWEEP_CACHE overrides)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "data") -> DataConfig:
        return _build(cls, values, where)

    def replace(self, **changes: Any) -> DataConfig:
        return _build(type(self), {**self.to_dict(), **changes}, "data")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        _choice(self, "protocol", PROTOCOLS, where="data")
        _at_least(self, "n_per_class", 0, where="data")
        _at_least(self, "max_test", 0, where="data")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                f"data.val_fraction = {short_repr(self.val_fraction)} is not allowed; allowed: strictly between 0 and 1."
            )
        if not self.source:
            raise ConfigError("data.source is empty; allowed: demo, hf:NAME or a local directory.")


# ------------------------------------------------------------------------------------
def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(
            f"{where} must be a mapping of settings, got {type(values).__name__}: {short_repr(values)}."
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown setting {where}.{shorten(str(unknown[0]))} (value "
            f"{short_repr(values[unknown[0]])}); "
            f"allowed keys: {', '.join(fields)}."
        )
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default
        kwargs[name] = _coerce(value, default, f"{where}.{name}")
    obj = cls(**kwargs)
    try:
        obj.validate()
    except ConfigError as err:
        if where not in ("trial", "data"):
            raise ConfigError(
                str(err).replace("trial.", f"{where}.").replace("data.", f"{where}.")
            ) from None
        raise
    return obj


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Coerce ``value`` to the type of ``default`` (YAML gives ints for floats, strings for numbers)."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise ConfigError(f"{key} = {short_repr(value)} is not a boolean; allowed: true or false.")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} = {short_repr(value)} is not an integer.")
        number = None
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key} = {short_repr(value)} is not an integer.")
        if not -(2**63) <= number < 2**63:  # a Parquet int64 column holds it
            raise ConfigError(
                f"{key} = {short_repr(value)} is out of range; allowed: |value| < 2^63."
            )
        return number
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} = {short_repr(value)} is not a number.")
        number = None
        if isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:  # an int past 1.8e308
                number = math.inf
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key} = {short_repr(value)} is not a number.")
        if not math.isfinite(number):  # .inf, .nan, 1e999
            raise ConfigError(
                f"{key} = {short_repr(value)} is not a finite number; give an ordinary number "
                "such as 0.001 (no inf or nan)."
            )
        return number
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} = {short_repr(value)} is not a string.")
    return value


def _choice(obj, key: str, allowed, where: str = "trial") -> None:
    value = getattr(obj, key)
    if value not in allowed:
        raise ConfigError(
            f"{where}.{key} = {short_repr(value)} is not allowed; allowed: {', '.join(allowed)}."
        )


def _at_least(obj, key: str, low: int, where: str = "trial") -> None:
    value = getattr(obj, key)
    if value < low:
        raise ConfigError(
            f"{where}.{key} = {short_repr(value)} is not allowed; it must be >= {low}."
        )

"""The one list of heads: what each head is and how it is built.

    from model.heads import registry
    registry.family("svc")          # -> "sklearn"
    registry.is_quantum("quantum")  # -> True
    cls = registry.load("mlp")      # -> model.heads.classical.MLPHead (imported on first use)

Families: ``quantum`` (a PQC inside an ``nn.Module``, trained by gradient descent),
``encoder`` (fine-tunes the sentence encoder itself, then fits a classifier; no epochs),
``torch`` (a classical ``nn.Module``, trained by gradient descent) and ``sklearn``
(fitted by scikit-learn on the embeddings, no epochs). Adding a head is one entry in
:data:`REGISTRY` plus its module. This module imports nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HeadSpec",
    "REGISTRY",
    "HEADS",
    "FAMILIES",
    "QUANTUM_HEADS",
    "TORCH_HEADS",
    "SKLEARN_HEADS",
    "EPOCHLESS_HEADS",
    "CLASSICAL_HEADS",
    "ENCODER_HEADS",
    "head_spec",
    "family",
    "is_quantum",
    "is_sklearn",
    "is_epochless",
    "is_gradient_trained",
    "load",
]

FAMILIES = ("quantum", "torch", "sklearn", "encoder")


@dataclass(frozen=True)
class HeadSpec:
    """One head: its ``trial.head`` name, family and the object that builds or fits it."""

    name: str
    family: str  # quantum | torch | sklearn | encoder (fine-tunes the sentence encoder itself)
    target: str  # "module:attribute": nn.Module class (cls(config, input_dim)) or sklearn fitter
    description: str

    @property
    def gradient_trained(self) -> bool:
        """True for nn.Module heads trained epoch by epoch; False for sklearn baselines."""
        return self.family in ("quantum", "torch")


# Order matters: it is the order error messages list the allowed heads in.
REGISTRY: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in (
        HeadSpec("quantum", "quantum", "model.heads.quantum:QuantumHead",
                 "sQE encoder(s) -> re-uploading PQC -> Pauli-Z readout"),
        HeadSpec("mlp_encoder", "quantum", "model.heads.quantum:QuantumHead",
                 "classical MLP in place of the sQE -> re-uploading PQC"),
        HeadSpec("mlp", "torch", "model.heads.classical:MLPHead",
                 "linear or one-hidden-layer MLP"),
        HeadSpec("logreg", "sklearn", "model.heads.baselines:fit_baseline",
                 "scikit-learn logistic regression, C chosen on validation"),
        HeadSpec("svc", "sklearn", "model.heads.baselines:fit_baseline",
                 "scikit-learn RBF SVC, C chosen on validation"),
        HeadSpec("finetune", "encoder", "model.heads.finetune:fit_finetune",
                 "SetFit-style contrastive fine-tuning of the encoder, then logistic regression"),
    )
}  # fmt: skip

HEADS = tuple(REGISTRY)
QUANTUM_HEADS = tuple(n for n, s in REGISTRY.items() if s.family == "quantum")
TORCH_HEADS = tuple(n for n, s in REGISTRY.items() if s.gradient_trained)  # nn.Module heads
SKLEARN_HEADS = tuple(n for n, s in REGISTRY.items() if s.family == "sklearn")
# fitted once on the data by their own function (no epoch loop, never packed)
EPOCHLESS_HEADS = tuple(n for n, s in REGISTRY.items() if not s.gradient_trained)
# heads on the frozen embeddings that the quantum heads are compared against
CLASSICAL_HEADS = tuple(n for n, s in REGISTRY.items() if s.family in ("torch", "sklearn"))
# heads that train the sentence encoder itself: an upper reference, not a frozen-embedding head
ENCODER_HEADS = tuple(n for n, s in REGISTRY.items() if s.family == "encoder")


def head_spec(name: str) -> HeadSpec:
    """The registry entry of ``name``; ConfigError naming the allowed heads otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        from model.errors import ConfigError

        raise ConfigError(
            f"trial.head = {name!r} is not allowed; allowed: {', '.join(HEADS)}."
        ) from None


def family(name: str) -> str:
    return head_spec(name).family


def is_quantum(name: str) -> bool:
    """True for heads with a PQC (they have a circuit, qubits and an energy estimate)."""
    return name in QUANTUM_HEADS


def is_sklearn(name: str) -> bool:
    """True for scikit-learn baselines (fitted once, no epochs)."""
    return name in SKLEARN_HEADS


def is_epochless(name: str) -> bool:
    """True for heads fitted once by their own function (sklearn baselines, finetune)."""
    return name in EPOCHLESS_HEADS


def is_gradient_trained(name: str) -> bool:
    return name in TORCH_HEADS


def load(name: str) -> Any:
    """Import and return the builder (nn.Module class) or fitter of head ``name``."""
    module, _, attribute = head_spec(name).target.partition(":")
    return getattr(importlib.import_module(module), attribute)

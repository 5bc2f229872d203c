"""Plain data that crosses module boundaries: text splits, embedded splits, trial results."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "TextSplits",
    "EmbeddedSplits",
    "TrialResult",
    "FINAL_METRICS",
    "FINAL_TAGS",
    "ENGINES",
    "EPOCH_METRICS",
]

# The final metrics of one trial, name -> Python type: the one definition that
# TrialResult.summary(), the trials.parquet columns, the MLflow final metrics and the
# Ray driver's rows derive from. Adding a metric: add it here and set it in fit().
FINAL_METRICS: dict[str, type] = {
    "val_accuracy": float,  # best epoch's validation accuracy, in [0, 1]
    "test_accuracy": float,  # with the best epoch's weights
    "best_epoch": int,  # 1-based; 0 for sklearn baselines
    "epochs_run": int,
    "n_params": int,  # trainable scalars
    "wall_time_s": float,
    "qpu_energy_j": float,  # per inference; quantum heads only (TrialResult.energy)
    "gpu_energy_j": float,  # per inference; quantum heads only (TrialResult.energy)
}
# Where and how a trial trained, name -> Python type: the strings next to FINAL_METRICS in
# TrialResult.summary(), the trials.parquet columns and the MLflow tags (qsweep.<name>).
FINAL_TAGS: dict[str, type] = {
    "device": str,  # the resolved device, e.g. cpu, cuda:0
    "engine": str,  # the path that trained it: one of ENGINES; None for epochless heads
}
# The paths a training step can take (model.engine): the step captured as a CUDA graph,
# eager CUDA, the compiled CPU circuit kernel (model.quantum.cpu_kernel), torch on the CPU.
ENGINES = ("cuda-graph", "cuda-eager", "cpu-kernel", "cpu-torch")
# Keys of the per-epoch dict that fit() passes to on_epoch (besides "epoch").
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "elapsed_s")


@dataclass(frozen=True)
class TextSplits:
    """Labelled sentences after a low-data protocol. Labels are 0 (negative) / 1 (positive)."""

    train_text: list[str]
    train_y: np.ndarray  # (n_train,) int64
    val_text: list[str]
    val_y: np.ndarray  # (n_val,) int64
    test_text: list[str]
    test_y: np.ndarray  # (n_test,) int64
    source: str = ""  # human-readable description of where the rows came from
    protocol: str = ""

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


@dataclass(frozen=True)
class EmbeddedSplits:
    """Frozen-encoder embeddings of a TextSplits; what every trial trains on."""

    x_train: np.ndarray  # (n_train, d) float32
    y_train: np.ndarray  # (n_train,) int64
    x_val: np.ndarray  # (n_val, d) float32
    y_val: np.ndarray  # (n_val,) int64
    x_test: np.ndarray  # (n_test, d) float32
    y_test: np.ndarray  # (n_test,) int64
    encoder: str = ""  # encoder identity (hub name or resolved local path)
    source: str = ""
    # the sentences behind the rows (set by model.embeddings.embed_splits); only head: finetune
    # reads them, to fine-tune ``encoder`` itself
    texts: TextSplits | None = None

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])

    def check_trainable(self) -> None:
        """DataError unless train and validation hold rows and the training labels are 0/1."""
        from model.errors import DataError

        for split in ("train", "val"):
            if len(getattr(self, f"y_{split}")) == 0:
                raise DataError(
                    f"the {split} split is empty; a trial needs labelled {split} sentences "
                    "(check data.n_per_class and data.val_fraction)."
                )
        labels = np.unique(self.y_train)
        if not set(labels.tolist()) <= {0, 1}:
            raise DataError(f"training labels must be 0/1, found {labels.tolist()}.")

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


@dataclass
class TrialResult:
    """What ``model.fit`` returns for one trial.

    Accuracies are fractions in [0, 1]. ``best_epoch`` is 1-based; the test accuracy is
    measured with the weights of that epoch. Classical sklearn baselines have
    ``epochs_run == 0`` and ``history == []``.
    """

    val_accuracy: float
    test_accuracy: float
    best_epoch: int
    epochs_run: int
    n_params: int
    wall_time_s: float
    device: str
    engine: str | None = None  # one of ENGINES (set by fit); None for epochless heads
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch
    # qpu_energy_j, gpu_energy_j, ... (quantum heads)
    energy: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # resolved TrialConfig.to_dict()
    extra: dict[str, Any] = field(default_factory=dict)  # head-specific (e.g. chosen sklearn C)
    # The trained model, for drivers that log it (not part of to_dict() or summary()):
    # nn.Module heads: the best epoch's state_dict (CPU tensors) of a one-member head, so
    # model.heads.factory.restore_head(config, dim, state) rebuilds it; sklearn baselines:
    # the fitted Pipeline (scaler + classifier). None when fit() did not keep it.
    state: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Every field but ``state`` (plain data: numbers, strings, lists, dicts)."""
        return {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "state"
        }

    def summary(self) -> dict[str, Any]:
        """Flat scalars for printing, JSON and result tables (no history)."""
        out = {name: getattr(self, name) for name in FINAL_METRICS if hasattr(self, name)}
        out.update({name: getattr(self, name) for name in FINAL_TAGS})  # device, engine
        out.update(self.energy)  # the energy metrics, and the other estimates of one inference
        return out

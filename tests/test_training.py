"""model.fit: the trial contract, on synthetic embeddings with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from model.config import TrialConfig
from model.errors import ConfigError, DataError
from model.training import fit
from model.types import EmbeddedSplits


def gaussians(d: int = 16, n: int = 120, sep: float = 2.5, seed: int = 0) -> EmbeddedSplits:
    """Two Gaussian clouds whose means differ by ``sep`` along a random direction."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)

    def draw(m: int):
        y = np.arange(m) % 2
        x = rng.normal(size=(m, d)) + np.outer(y - 0.5, direction) * sep
        return x.astype(np.float32), y.astype(np.int64)

    xtr, ytr = draw(n)
    xva, yva = draw(n // 2)
    xte, yte = draw(n)
    return EmbeddedSplits(xtr, ytr, xva, yva, xte, yte, encoder="synthetic", source="gaussians")


def test_mlp_learns_separable_data_and_reports_every_epoch():
    data = gaussians()
    seen = []
    cfg = TrialConfig(head="mlp", hidden=8, epochs=15, batch_size=16, learning_rate=0.01)
    result = fit(cfg, data, on_epoch=seen.append)
    assert [m["epoch"] for m in seen] == list(range(1, 16))
    assert set(seen[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "elapsed_s",
    }
    # Bayes accuracy for sep=2.5 is Phi(1.25) = 0.894; a trained head gets near it.
    assert result.test_accuracy > 0.8
    assert result.n_params == 16 * 8 + 8 + 8 * 2 + 2
    assert result.epochs_run == 15 and len(result.history) == 15


def test_best_epoch_is_the_first_maximum_of_validation_accuracy():
    result = fit(TrialConfig(head="mlp", epochs=12, learning_rate=0.003), gaussians(seed=3))
    vals = [m["val_accuracy"] for m in result.history]
    assert result.val_accuracy == max(vals)
    assert result.best_epoch == vals.index(max(vals)) + 1


def test_learning_rate_decays_exponentially():
    cfg = TrialConfig(head="mlp", epochs=4, learning_rate=0.1, lr_decay=0.5)
    lrs = [m["lr"] for m in fit(cfg, gaussians()).history]
    assert lrs == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def test_same_seed_same_result_other_seed_other_weights():
    data = gaussians()
    cfg = TrialConfig(head="mlp", hidden=4, epochs=3)
    a, b = fit(cfg, data), fit(cfg, data)
    c = fit(cfg.replace(seed=1), data)
    assert [m["train_loss"] for m in a.history] == [m["train_loss"] for m in b.history]
    assert [m["train_loss"] for m in a.history] != [m["train_loss"] for m in c.history]


def test_quantum_head_trains_end_to_end_and_reports_energy():
    data = gaussians(d=8, n=64, sep=3.0)
    cfg = TrialConfig(
        qubits=3, encoder_layers=1, reuploads=1, main_layers=1, epochs=8, learning_rate=0.05
    )
    result = fit(cfg, data)
    assert result.n_params > 0
    assert 0.0 <= result.test_accuracy <= 1.0
    assert result.val_accuracy >= 0.5
    assert result.energy["qpu_energy_j"] > 0 and result.energy["gpu_energy_j"] > 0


def test_sklearn_baselines_go_through_fit():
    result = fit(TrialConfig(head="logreg"), gaussians())
    assert result.test_accuracy > 0.8 and result.epochs_run == 0


def test_empty_validation_split_is_a_data_error():
    d = gaussians()
    empty = EmbeddedSplits(d.x_train, d.y_train, d.x_val[:0], d.y_val[:0], d.x_test, d.y_test)
    with pytest.raises(DataError, match="val split is empty"):
        fit(TrialConfig(head="mlp", epochs=1), empty)


def test_cuda_request_without_cuda_is_a_config_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        fit(TrialConfig(head="mlp", epochs=1, device="cuda"), gaussians())

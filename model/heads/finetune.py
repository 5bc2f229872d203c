"""``head: finetune``: SetFit-style contrastive fine-tuning of the sentence encoder, then
logistic regression on the fine-tuned embeddings -- the baseline a frozen-encoder head has
to beat.

    result = fit_finetune(TrialConfig(head="finetune"), embedded)   # embedded.texts is needed

1. Pairs (SetFit's sampling): in each of ``finetune_iterations`` rounds every training
   sentence is paired with one random other sentence of the same label (target cosine 1)
   and one of the other label (target 0): ``2 * n_train * iterations`` pairs, drawn with
   numpy PCG64 seeded by ``seed``.
2. The encoder (``EmbeddedSplits.encoder``, the same directory or hub name that embedded
   the data) is trained on them with sentence-transformers' own ``SentenceTransformerTrainer``
   and ``CosineSimilarityLoss`` (AdamW, ``finetune_learning_rate``, linear decay after 10 %
   warm-up, ``batch_size`` pairs per step, ``finetune_epochs`` passes).
3. Train, validation and test sentences are embedded with the fine-tuned encoder (not
   cached: the model exists only in memory) and
   :func:`model.heads.baselines.fit_baseline` fits logistic regression on them exactly as
   ``head: logreg`` does on the frozen embeddings (C grid on the validation split).

``n_params``: every encoder weight (all are trained) + the logistic regression's d + 1.
"""

from __future__ import annotations

import math
import tempfile
import time
from typing import Any

import numpy as np

from model.config import TrialConfig
from model.errors import DataError
from model.types import EmbeddedSplits, TrialResult

__all__ = ["fit_finetune", "contrastive_pairs"]


def contrastive_pairs(
    texts: list[str], labels: np.ndarray, *, iterations: int, seed: int
) -> tuple[list[str], list[str], list[float]]:
    """SetFit pairs: per round and sentence one same-label partner (1.0) and one other (0.0).

    Returns ``(first, second, target)`` lists of length ``2 * len(texts) * iterations``.
    Every sentence needs a partner of each kind: both labels present, each at least twice.
    """
    labels = np.asarray(labels)
    by_label = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    if len(by_label) < 2 or min(len(v) for v in by_label.values()) < 2:
        counts = {k: len(v) for k, v in by_label.items()}
        raise DataError(
            f"contrastive fine-tuning needs at least two training sentences of each label; "
            f"found {counts}."
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    first, second, target = [], [], []
    for _ in range(iterations):
        for i, label in enumerate(labels.tolist()):
            same = by_label[label]
            j = i
            while j == i:
                j = int(same[rng.integers(len(same))])
            other = np.concatenate([v for k, v in by_label.items() if k != label])
            k = int(other[rng.integers(len(other))])
            first += [texts[i], texts[i]]
            second += [texts[j], texts[k]]
            target += [1.0, 0.0]
    return first, second, target


def fit_finetune(config: TrialConfig, data: EmbeddedSplits) -> TrialResult:
    """Fine-tune ``data.encoder`` on contrastive pairs of the training sentences, then logreg."""
    from model.heads.baselines import fit_baseline

    if data.texts is None:
        raise DataError(
            "head: finetune needs the sentences, but these embedded splits carry none; build them "
            "with model.embeddings.embed_splits / load_and_embed (which keep the texts)."
        )
    data.check_trainable()
    start = time.perf_counter()
    texts = data.texts
    model = _finetuned_encoder(config, data.encoder, texts.train_text, data.y_train)
    tuned_s = time.perf_counter() - start

    def embed(rows: list[str]) -> np.ndarray:
        if not rows:
            return np.zeros((0, data.dim), dtype=np.float32)
        out = model.encode(rows, batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    tuned = EmbeddedSplits(
        x_train=embed(texts.train_text),
        y_train=data.y_train,
        x_val=embed(texts.val_text),
        y_val=data.y_val,
        x_test=embed(texts.test_text),
        y_test=data.y_test,
        encoder=f"{data.encoder} (fine-tuned)",
        source=data.source,
    )
    result = fit_baseline(config.replace(head="logreg"), tuned)
    encoder_params = sum(p.numel() for p in model.parameters())
    result.n_params += encoder_params
    result.config = config.to_dict()
    result.wall_time_s = time.perf_counter() - start
    result.device = str(model.device)
    result.extra.update(
        {
            "pairs": 2 * len(texts.train_text) * config.finetune_iterations,
            "finetune_s": tuned_s,
            "encoder_params": encoder_params,
        }
    )
    return result


def _finetuned_encoder(config: TrialConfig, encoder: str, texts: list[str], labels) -> Any:
    """Load ``encoder`` and train it with CosineSimilarityLoss on SetFit pairs; returns it."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    from model.embeddings import _load_model
    from model.training import resolve_device

    device = resolve_device(config.device)
    model = _load_model(encoder, str(device))
    first, second, target = contrastive_pairs(
        texts, labels, iterations=config.finetune_iterations, seed=config.seed
    )
    pairs = Dataset.from_dict({"sentence1": first, "sentence2": second, "label": target})
    steps = math.ceil(len(target) / config.batch_size) * config.finetune_epochs
    with tempfile.TemporaryDirectory(prefix="qsweep-finetune-") as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out,
            num_train_epochs=config.finetune_epochs,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.finetune_learning_rate,
            warmup_steps=math.ceil(0.1 * steps),
            seed=config.seed,
            data_seed=config.seed,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=device.type == "cpu",
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=pairs, loss=CosineSimilarityLoss(model)
        )
        trainer.train()
    model.eval()
    return model

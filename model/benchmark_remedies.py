"""Benchmark: do the sQE remedies help? The 10-qubit head on real cached embeddings,
plain vs ``amplitude_offset`` (fixed, trainable) vs ``sqe_readout: zz``, a few seeds each.

    nice -n 10 .venv/bin/python -m model.benchmark_remedies --data ../shared/data/sst2 \\
        --encoder ~/.cache/qsweep-encoders/all-mpnet-base-v2 --epochs 30 --seeds 0 1 2

Reads train and validation embeddings from the embedding cache only (it never loads the
encoder; run ``qsweep train`` once to fill the cache) and tests on the cached test rows,
at most ``--max-test`` of them. Prints per variant and seed the best validation accuracy,
its epoch, the test accuracy and seconds per epoch, then the mean over seeds. The seeds
of one variant train as one packed model (``fit_packed``); ``--single`` times one seed
alone with ``fit`` (one trial's seconds per epoch).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from model.config import DataConfig, TrialConfig
from model.training import fit, fit_packed
from model.types import EmbeddedSplits

VARIANTS = {
    "plain": {},
    "offset1": {"amplitude_offset": 1.0},
    "offset1_trainable": {"amplitude_offset": 1.0, "amplitude_offset_trainable": True},
    "zz": {"sqe_readout": "zz"},
    "offset1_zz": {"amplitude_offset": 1.0, "sqe_readout": "zz"},
}


def cached_splits(cfg: DataConfig, max_test: int) -> EmbeddedSplits:
    """Train/val from the cache (all must be there); test: the cached test rows, up to max_test."""
    from model.data import make_splits
    from model.embeddings import _Cache, _Encoder, default_cache_dir, text_key

    splits = make_splits(cfg)
    enc = _Encoder(cfg.encoder, "cpu")
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    index, matrix = _Cache(root, enc.identity, enc.fingerprint).read()
    if matrix is None:
        raise SystemExit(f"no cached embeddings for {enc.identity}; run qsweep train first")

    def rows(texts: list[str], labels: np.ndarray, *, need_all: bool, cap: int = 0):
        keep = [i for i, t in enumerate(texts) if text_key(t) in index]
        if need_all and len(keep) < len(texts):
            raise SystemExit(f"only {len(keep)} of {len(texts)} train/val rows are cached")
        if cap:
            keep = keep[:cap]
        x = matrix[[index[text_key(texts[i])] for i in keep]]
        return x, np.asarray(labels)[keep]

    x_tr, y_tr = rows(splits.train_text, splits.train_y, need_all=True)
    x_va, y_va = rows(splits.val_text, splits.val_y, need_all=True)
    x_te, y_te = rows(splits.test_text, splits.test_y, need_all=False, cap=max_test)
    return EmbeddedSplits(x_tr, y_tr, x_va, y_va, x_te, y_te, encoder=enc.identity)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default="../shared/data/sst2")
    p.add_argument("--encoder", default="~/.cache/qsweep-encoders/all-mpnet-base-v2")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--learning-rate", type=float, default=0.005)
    p.add_argument("--qubits", type=int, default=10)
    p.add_argument("--max-test", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--single", action="store_true", help="also time one seed alone with fit")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = cached_splits(
        DataConfig(source=args.data, encoder=str(Path(args.encoder).expanduser())), args.max_test
    )
    norms = np.linalg.norm(data.x_train, axis=1)
    print(
        f"data: train {len(data.y_train)}, val {len(data.y_val)}, test {len(data.y_test)} "
        f"(cached rows), d={data.dim}, |x| median {np.median(norms):.3f}",
        flush=True,
    )
    base = TrialConfig(
        head="quantum",
        qubits=args.qubits,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        device="cpu",
    )
    if args.single:
        start = time.perf_counter()
        r = fit(base, data)
        per_epoch = (time.perf_counter() - start) / args.epochs
        print(f"single trial (fit, plain): {per_epoch:.2f} s/epoch, val {r.val_accuracy:.4f}")
    print("variant              seed  val     best_ep  test    s/epoch(pack)")
    summary = {}
    for name in args.variants:
        configs = [base.replace(seed=s, **VARIANTS[name]) for s in args.seeds]
        start = time.perf_counter()
        results = fit_packed(configs, data)
        per_epoch = (time.perf_counter() - start) / args.epochs
        for s, r in zip(args.seeds, results, strict=True):
            print(
                f"{name:<20} {s:>4}  {r.val_accuracy:.4f}  {r.best_epoch:>7}  "
                f"{r.test_accuracy:.4f}  {per_epoch:.2f}",
                flush=True,
            )
        summary[name] = [r.val_accuracy for r in results], [r.test_accuracy for r in results]
    print("\nmean over seeds (val / test), n_params:")
    for name, (val, test) in summary.items():
        cfg = base.replace(**VARIANTS[name])
        from model.heads.quantum import expected_parameter_count

        print(
            f"{name:<20} val {statistics.mean(val):.4f}  test {statistics.mean(test):.4f}  "
            f"params {expected_parameter_count(cfg, data.dim)}"
        )


if __name__ == "__main__":
    main()

"""Benchmark: full training of the paper's 10-qubit single-sQE head from cached embeddings.

    .venv/bin/python -m orchestrator.benchmark_train               # 800 epochs, paper protocol sizes
    .venv/bin/python -m orchestrator.benchmark_train --epochs 50   # shorter; prints the 800-epoch projection
    .venv/bin/python -m orchestrator.benchmark_train --encoder minilm --data /path/to/sst2   # real embeddings

Paper configuration: 10 qubits, one sQE (5 layers), R=4, N=1, M=2, C=1, Rot gates, final
linear layer, batch 16, paper protocol (256 + 256 sentences, 15 % validation -> 435 train,
77 validation). Without ``--data`` the embeddings are 768-d Gaussian vectors of those
sizes (the simulation cost does not depend on their values), so no encoder is needed.
Prints seconds per step and per epoch, the 800-epoch total, and the ratio to the paper's
6.8 A100-hours per run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from model.config import DataConfig, TrialConfig
from model.training import fit
from model.types import EmbeddedSplits

PAPER_HOURS_10Q = 6.8


def synthetic_splits(
    d: int = 768, n_train: int = 435, n_val: int = 77, n_test: int = 1000
) -> EmbeddedSplits:
    rng = np.random.default_rng(0)

    def split(n: int):
        y = (np.arange(n) % 2).astype(np.int64)
        x = rng.normal(size=(n, d)).astype(np.float32) + 0.3 * y[:, None]
        return x, y

    return EmbeddedSplits(
        *split(n_train), *split(n_val), *split(n_test), encoder="gaussian", source="synthetic"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=800)
    p.add_argument("--qubits", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--data", help="labelled data source (directory, hf:NAME or demo) for real embeddings"
    )
    p.add_argument("--encoder", default="minilm", help="encoder for --data (default minilm)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from orchestrator.configfile import parse_sets

    trial: dict = {"qubits": args.qubits, "epochs": args.epochs}
    trial.update(parse_sets(args.sets)[0])
    cfg = TrialConfig.from_dict(trial)
    if args.data:
        from model.embeddings import load_and_embed

        data = load_and_embed(DataConfig(source=args.data, encoder=args.encoder))
    else:
        data = synthetic_splits()
    steps_per_epoch = -(-len(data.y_train) // cfg.batch_size)
    print(
        f"config: {cfg.qubits} qubits, E={cfg.encoders}, L_e={cfg.encoder_layers}, R={cfg.reuploads}, "
        f"N={cfg.reupload_layers}, M={cfg.main_layers}, C={cfg.connectivity}, {cfg.rotation}, "
        f"batch {cfg.batch_size}, {args.threads} threads"
    )
    print(f"data: {data.sizes()} ({data.dim}-d, {data.source}); {steps_per_epoch} steps/epoch")

    t0 = time.perf_counter()
    result = fit(cfg, data)
    total = time.perf_counter() - t0
    epoch_s = np.diff([0.0] + [m["elapsed_s"] for m in result.history])
    train_s = result.history[-1]["elapsed_s"]
    per_step_ms = 1e3 * train_s / (cfg.epochs * steps_per_epoch)
    projected = float(np.median(epoch_s)) * 800
    print(f"parameters: {result.n_params}")
    print(
        f"per epoch (median): {np.median(epoch_s) * 1e3:.1f} ms incl. validation; per step: {per_step_ms:.2f} ms"
    )
    print(f"{cfg.epochs} epochs: {train_s:.1f} s training, {total:.1f} s with test evaluation")
    print(f"800-epoch projection: {projected:.1f} s ({projected / 60:.2f} min)")
    print(
        f"ratio to the paper's {PAPER_HOURS_10Q} A100-hours: {PAPER_HOURS_10Q * 3600 / projected:.0f}x faster"
    )
    print(
        f"val accuracy {result.val_accuracy:.4f}, test accuracy {result.test_accuracy:.4f} (best epoch {result.best_epoch})"
    )


if __name__ == "__main__":
    main()

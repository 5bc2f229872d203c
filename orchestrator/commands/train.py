"""``qsweep train CONFIG.yaml``: one trial, no Ray, no MLflow.

qsweep train search_spaces/quickstart.yaml --set epochs=20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one head and print validation/test accuracy",
        description="Train one head on frozen embeddings (no Ray, no MLflow) and print "
        "validation and test accuracy, parameter count and wall time.",
    )
    add_trial_arguments(p)
    p.add_argument("--json", metavar="OUT", help="write the result and the resolved config as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def add_set_option(p: argparse.ArgumentParser, help: str, dest: str = "sets") -> None:
    """``--set KEY=VALUE`` (repeatable), the trial-setting override of train, circuit, energy."""
    p.add_argument("--set", dest=dest, action="append", default=[], metavar="KEY=VALUE", help=help)


def add_trial_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML file with 'data', 'encoder' and 'fixed'/'trial' settings")
    add_set_option(
        p,
        "override a trial setting (e.g. qubits=12) or a data setting (data.n_per_class=64); repeatable",
    )
    p.add_argument(
        "--data",
        metavar="DIR|hf:NAME|demo",
        help="labelled sentences: a local directory, a hub data set or the demo set",
    )
    p.add_argument(
        "--encoder",
        metavar="NAME|PATH",
        help="sentence encoder: hub name, local directory or 'minilm'",
    )


def run(args: argparse.Namespace) -> int:
    from orchestrator.configfile import load_trial_file

    trial, data_cfg = load_trial_file(
        args.config, sets=args.sets, data_source=args.data, encoder=args.encoder
    )
    from model.embeddings import load_and_embed
    from model.heads.registry import is_epochless
    from model.training import fit

    t0 = time.perf_counter()
    data = load_and_embed(data_cfg, progress=not args.quiet)
    embed_s = time.perf_counter() - t0
    sizes = data.sizes()
    print(
        f"data: {data.source or data_cfg.source} | train {sizes['train']}, val {sizes['val']}, "
        f"test {sizes['test']} | encoder {data.encoder} ({data.dim}-d, {embed_s:.1f} s)",
        file=sys.stderr,
    )
    bar = _EpochBar(trial.epochs, enabled=not args.quiet and not is_epochless(trial.head))
    try:
        result = fit(trial, data, on_epoch=bar.update)
    finally:
        bar.close()

    print(f"head            {trial.head} ({_describe(trial)})")
    print(
        f"val accuracy    {result.val_accuracy:.4f}  (best epoch {result.best_epoch} of {result.epochs_run})"
    )
    print(f"test accuracy   {result.test_accuracy:.4f}  ({sizes['test']} sentences)")
    print(f"parameters      {result.n_params}")
    engine = f" ({result.engine})" if result.engine else ""  # cuda-graph, cpu-kernel, ...
    print(f"wall time       {result.wall_time_s:.1f} s on {result.device}{engine}")
    for key in ("qpu_energy_j", "gpu_energy_j"):
        if key in result.energy:
            print(f"{key:<15} {result.energy[key]:.3g} J per inference")
    if args.json:
        out = {
            "result": result.summary(),
            "extra": result.extra,
            "history": result.history,
            "config": trial.to_dict(),
            "data": data_cfg.to_dict(),
            "data_sizes": sizes,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _describe(t) -> str:
    if t.head == "quantum":
        return (
            f"{t.qubits} qubits, {t.encoders} sQE x {t.encoder_layers} layers, "
            f"R={t.reuploads} N={t.reupload_layers} M={t.main_layers} C={t.connectivity}, {t.rotation}"
        )
    if t.head == "mlp_encoder":
        return f"MLP encoder (hidden {t.hidden}) -> {t.qubits}-qubit PQC R={t.reuploads} M={t.main_layers}"
    if t.head == "mlp":
        return f"hidden {t.hidden}{', batch norm' if t.batch_norm else ''}"
    return "scikit-learn grid on the validation split"


class _EpochBar:
    """A tqdm bar over epochs showing the latest validation accuracy."""

    def __init__(self, epochs: int, *, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=epochs, unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def update(self, m: dict) -> None:
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{m['train_loss']:.3f}", val=f"{m['val_accuracy']:.3f}")
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

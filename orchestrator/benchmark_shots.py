"""Benchmark: what shot noise costs per sentence, the calibration of the --dry-run shot model.

    .venv/bin/python -m orchestrator.benchmark_shots                      # 10 and 14 qubits
    .venv/bin/python -m orchestrator.benchmark_shots --qubits 10 12 --shots 1024 8192

Shot noise acts on the PQC's 2^q probabilities of every sentence, member by member (a
pack does not share it), in two forms (``model.quantum.noise``):

    training:   the Gaussian form over all 2^q probabilities, forward and backward,
                per training sentence                     -> a seconds per amplitude
    evaluation: S multinomial draws binned by the 2^q probabilities, per validation
                sentence                                  -> b per shot + c per amplitude

This times both functions alone on random probability vectors (batches of 16 rows as in
training; 77 rows as one validation pass), in CPU time of this process (``--threads``
threads), so that other work on the machine disturbs the figures less than wall-clock
epochs; every setting ``--repeats`` times, the fastest kept. It prints a, b and c fitted
by least squares next to the constants :func:`orchestrator.plan.shot_seconds_per_epoch`
uses. In a real epoch, training with shots also reads Z out of the probabilities (and
back), which this does not time: the planner's training constant is fitted to whole
epochs instead (``python -m model.benchmark_trials --shots 0`` vs ``--shots 8192``; see
the comment at ``SHOT_TRAIN_S``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from model.quantum.noise import gaussian_shot_probs, multinomial_shot_probs
from orchestrator import plan


def _probabilities(rows: int, qubits: int, grad: bool) -> torch.Tensor:
    p = torch.rand(rows, 2**qubits, generator=torch.Generator().manual_seed(0))
    return (p / p.sum(-1, keepdim=True)).requires_grad_(grad)


def train_cost(qubits: int, shots: int, steps: int) -> float:
    """CPU seconds per training sentence: Gaussian shot noise on a batch of 16, backward."""
    p = _probabilities(16, qubits, grad=True)
    weights = torch.rand(16, 2**qubits)
    start = time.process_time()
    for _ in range(steps):
        (gaussian_shot_probs(p, shots) * weights).sum().backward()
    return (time.process_time() - start) / (16 * steps)


def eval_cost(qubits: int, shots: int, passes: int) -> float:
    """CPU seconds per validation sentence: S multinomial draws for 77 sentences."""
    p = _probabilities(77, qubits, grad=False)
    start = time.process_time()
    for _ in range(passes):
        multinomial_shot_probs(p, shots)
    return (time.process_time() - start) / (77 * passes)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--qubits", type=int, nargs="+", default=[10, 14])
    p.add_argument("--shots", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--repeats", type=int, default=5, help="timings per setting (default 5)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train: dict[int, float] = {}
    evaluate: dict[tuple[int, int], float] = {}
    for _ in range(args.repeats):
        for q in args.qubits:
            steps = max(2, 2 ** (16 - q))  # about the same work at every size
            train[q] = min(train.get(q, 1e9), train_cost(q, args.shots[-1], steps))
            for s in args.shots:
                passes = max(1, 2 ** (14 - q))
                evaluate[q, s] = min(evaluate.get((q, s), 1e9), eval_cost(q, s, passes))
    print(f"{args.threads} thread(s), fastest of {args.repeats}, CPU time per sentence:")
    for q in args.qubits:
        print(f"  {q} qubits: training {train[q] * 1e6:8.1f} us "
              f"({train[q] / 2**q * 1e9:.1f} ns per amplitude)")  # fmt: skip
        for s in args.shots:
            print(f"  {q} qubits, {s:5d} shots: evaluation {evaluate[q, s] * 1e6:8.1f} us")
    a = float(np.mean([train[q] / 2**q for q in args.qubits]))
    rows = [[s, 2**q] for q in args.qubits for s in args.shots]
    (b, c), *_ = np.linalg.lstsq(
        np.array(rows, float), np.array([evaluate[q, s] for q in args.qubits for s in args.shots]),
        rcond=None,
    )  # fmt: skip
    for name, value, used in (
        ("a, training per amplitude", a, plan.SHOT_TRAIN_S),
        ("b, evaluation per shot", b, plan.SHOT_EVAL_S),
        ("c, evaluation per amplitude", c, plan.SHOT_EVAL_AMP_S),
    ):
        print(f"  {name}: {value * 1e9:.1f} ns (planner: {used * 1e9:.1f} ns)")


if __name__ == "__main__":
    main()

"""Benchmark: packed trials and adjoint gradients, ratios measured in one run.

    .venv/bin/python -m model.benchmark_trials                  # 10 qubits, T = 1 vs 8, 1 vs 2 threads
    .venv/bin/python -m model.benchmark_trials --steps 10 14 18 --pack 1 --threads 1 2
    .venv/bin/python -m model.benchmark_trials --pack 1 8 64 --epochs 3 --device cuda
    .venv/bin/python -m model.benchmark_trials --memory --qubits 18   # adjoint vs autograd
    .venv/bin/python -m model.benchmark_trials --pack 8 --threads 1 --kernel both --parallel 2

Packing: the paper's 10-qubit head (R=4, N=1, M=2, C=1, Rot, 5 encoder layers, batch
16, paper protocol sizes 435/77) trained with ``fit_packed`` for a few epochs at each
pack size; prints seconds per epoch per pack, the 800-epoch time per trial and the
speed-up per trial over T = 1. Embeddings are 768-d Gaussian vectors (the simulation
cost does not depend on their values). ``--kernel both`` times every pack size with the
compiled CPU kernel (``trial.cpu_kernel``) on and off, alternating, and prints the ratio;
``--parallel P`` runs P packs at once in P processes (as the driver fills P CPU slots)
and reports the throughput: wall-clock seconds per trial when all P * T trials finish.

Threads: ``--threads 1 2 ...`` (default: 1, 2 and the machine's core count) times every
figure at every thread count, interleaved, and prints the ratio to the first. ``--steps
Q ...`` first times one training step (forward, backward; batch 16, min of 7 rounds) at
Q qubits: the circuit alone (5 Rot layers + CNOT ring on amplitude-encoded states, the Z
readout) and the paper head with Adam, on the CPU.

Memory: one training step (forward, backward, Adam) of the paper head at ``--qubits``,
batch 16, once with ``trial.gradient=autograd`` and once with ``adjoint``, each in a
fresh process; prints peak RSS (CPU) or peak CUDA memory, and the step time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from model.config import TrialConfig
from model.quantum.benchmark import head_training_step
from model.types import EmbeddedSplits

PAPER_HOURS_10Q = 6.8


def synthetic_splits(d=768, n_train=435, n_val=77, n_test=200) -> EmbeddedSplits:
    rng = np.random.default_rng(0)

    def split(n):
        y = (np.arange(n) % 2).astype(np.int64)
        return rng.normal(size=(n, d)).astype(np.float32) + 0.3 * y[:, None], y

    return EmbeddedSplits(*split(n_train), *split(n_val), *split(n_test), encoder="gaussian")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_pack(
    cfg: TrialConfig, t: int, epochs: int, *, stop_at: float | None = None
) -> tuple[float, float]:
    """(wall, CPU) seconds per epoch of ``t`` packed copies of ``cfg`` (seeds 0..t-1).

    With two epochs or more the wall figure is the steady state, from the first to the
    last epoch's ``elapsed_s``: set-up and the one test evaluation at the end (about 0.1 s
    for a pack of 8 on the CPU) are not spread over a few epochs as if every epoch paid
    them; over 800 epochs they vanish. One epoch: the whole call. ``stop_at`` (a
    ``time.perf_counter()`` value): no epoch starts after it (the first always runs)."""
    from model.training import fit_packed

    configs = [cfg.replace(seed=s, epochs=epochs) for s in range(t)]
    fit_packed(configs[:1], synthetic_splits(n_train=32, n_val=8, n_test=8))  # warm-up

    def stop(by_member):  # every member, once the time is up
        return list(by_member) if stop_at is not None and time.perf_counter() > stop_at else None

    _sync(cfg.device)
    start, cpu0 = time.perf_counter(), time.process_time()
    history = fit_packed(configs, synthetic_splits(), on_epoch=stop)[0].history
    _sync(cfg.device)
    ran = max(1, len(history))
    wall, cpu = (time.perf_counter() - start) / ran, (time.process_time() - cpu0) / ran
    if len(history) >= 2:
        wall = (history[-1]["elapsed_s"] - history[0]["elapsed_s"]) / (len(history) - 1)
    return wall, cpu


def time_parallel(args, t: int, kernel: str, threads: int) -> float:
    """Seconds per epoch of ``args.parallel`` packs of ``t`` run at once, one process each."""
    cmd = [sys.executable, "-m", "model.benchmark_trials", "--_pack", str(t), "--epochs",
           str(args.epochs), "--threads", str(threads), "--kernel", kernel,
           "--qubits", str(args.qubits), "--device", args.device, "--shots", str(args.shots),
           "--graphs", args.graphs]  # fmt: skip
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(args.parallel)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a parallel pack failed: {cmd}")
    return max(json.loads(o.strip().splitlines()[-1])["epoch_s"] for o in outs)


def packing(args) -> None:
    kernels = ["on", "off"] if args.kernel == "both" else [args.kernel]
    p, threads = args.parallel, args.threads
    print(f"packing: {args.qubits} qubits, {args.epochs} epochs, device {args.device}, "
          f"cuda_graphs {args.graphs}, shots {args.shots}, {'/'.join(map(str, threads))} "
          f"threads per process, {p} pack(s) at once, cpu_kernel {'/'.join(kernels)}")  # fmt: skip
    base: dict[tuple[str, int], float] = {}
    for t in args.pack:
        per_trial = {}
        for kernel in kernels:
            for th in threads:
                torch.set_num_threads(th)
                cfg = TrialConfig(qubits=args.qubits, device=args.device, cuda_graphs=args.graphs,
                                  shots=args.shots, cpu_kernel=kernel)  # fmt: skip
                if p > 1:
                    per_epoch = time_parallel(args, t, kernel, th)
                    cpu = ""
                else:
                    per_epoch, cpu_per_epoch = time_pack(cfg, t, args.epochs)
                    cpu = f" (CPU time {cpu_per_epoch:.2f} s)"
                key = (kernel, th)
                per_trial[key] = per_epoch * 800 / (t * p)
                base.setdefault(key, per_trial[key])
                vs = per_trial[(kernel, threads[0])] / per_trial[key]
                print(
                    f"  T={t:3d} kernel {kernel:4s} {th:2d} thr: {per_epoch:7.2f} s/epoch per pack{cpu}; "
                    f"800 epochs: {per_trial[key] / 60:6.2f} min per trial ({base[key] / per_trial[key]:4.1f}x "
                    f"T={args.pack[0]} per trial, {vs:4.2f}x {threads[0]} thr, "
                    f"{PAPER_HOURS_10Q * 3600 / per_trial[key]:6.0f}x the paper's 6.8 h)",
                    flush=True,
                )  # fmt: skip
        if len(kernels) == 2:
            for th in threads:
                ratio = per_trial[("off", th)] / per_trial[("on", th)]
                print(f"  T={t:3d}: kernel on is {ratio:.2f}x kernel off ({th} thr)")


def circuit_step(qubits: int, kernel: str = "on"):
    """One training step (forward, backward) of the anchor circuit: 5 Rot layers + CNOT
    ring on 16 amplitude-encoded states, Pauli-Z readout, a linear loss."""
    from model.quantum.circuits import CircuitRunner, sqe_spec
    from model.quantum.statevector import readout_signs

    spec = sqe_spec(TrialConfig(qubits=qubits, encoder_layers=5))
    runner = CircuitRunner(spec, cpu_kernel=kernel)
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(spec.n_layers, qubits, 3, generator=gen) * 0.1).requires_grad_()
    x = torch.zeros(16, 2**qubits)
    x[:, :768] = torch.randn(16, min(768, 2**qubits), generator=gen)
    x = x / x.norm(dim=-1, keepdim=True)
    signs, c = readout_signs(qubits), torch.randn(16, qubits, generator=gen)

    def step() -> None:
        (runner(x, w, readout=signs) * c).sum().backward()

    return step


def thread_scaling(qubits: list[int], threads: list[int], kernel: str, rounds: int = 7) -> None:
    """Step times at every thread count, interleaved round by round (min of ``rounds``)."""
    print(f"training step, batch 16, cpu_kernel {kernel}, threads {'/'.join(map(str, threads))}, "
          f"min of {rounds} interleaved rounds")  # fmt: skip
    for q in qubits:
        for name, step in (
            ("circuit", circuit_step(q, kernel)),
            ("head", head_training_step(q, cpu_kernel=kernel)),
        ):
            inner = max(1, 2 ** max(0, 12 - q))  # about the same time per round at every q
            best = dict.fromkeys(threads, float("inf"))
            for th in threads:  # warm-up: libraries, scratch planes
                torch.set_num_threads(th)
                step()
            for _ in range(rounds):
                for th in threads:
                    torch.set_num_threads(th)
                    start = time.perf_counter()
                    for _ in range(inner):
                        step()
                    best[th] = min(best[th], (time.perf_counter() - start) / inner)
            cells = ", ".join(
                f"{th} thr {best[th] * 1e3:8.2f} ms ({best[threads[0]] / best[th]:4.2f}x)"
                for th in threads
            )
            print(f"  {q:2d} qubits {name:7s}: {cells}", flush=True)


def one_step(qubits: int, gradient: str, device: str, kernel: str = "auto") -> dict:
    """One timed training step in this process; returns time and peak memory."""
    from model.heads.quantum import QuantumHead

    cfg = TrialConfig(qubits=qubits, gradient=gradient, cpu_kernel=kernel)
    head = QuantumHead(cfg, 768, adjoint=gradient == "adjoint").to(device)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    x = torch.randn(16, 768, device=device)
    y = torch.randint(0, 2, (16,), device=device)
    times = []
    for _ in range(2):
        _sync(device)
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    out = {
        "step_s": min(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.startswith("cuda"):
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def memory(args) -> None:
    for kernel in ["on", "off"] if args.kernel == "both" else [args.kernel]:
        memory_once(args, kernel)


def memory_once(args, kernel: str) -> None:
    print(f"one training step, {args.qubits} qubits, batch 16, device {args.device}, "
          f"cpu_kernel {kernel}")  # fmt: skip
    rows = {}
    for gradient in ("autograd", "adjoint"):
        cmd = [sys.executable, "-m", "model.benchmark_trials", "--_step", gradient,
               "--qubits", str(args.qubits), "--device", args.device, "--kernel", kernel]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"  {gradient:8s}: failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        rows[gradient] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = rows[gradient]
        extra = f", peak CUDA {r['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in r else ""
        print(
            f"  {gradient:8s}: {r['step_s']:7.3f} s/step, peak RSS {r['peak_rss_mb']:6.0f} MB{extra}"
        )
    if len(rows) == 2:
        a, b = rows["autograd"], rows["adjoint"]
        key = "peak_cuda_mb" if "peak_cuda_mb" in a else "peak_rss_mb"
        print(
            f"  adjoint/autograd: time {b['step_s'] / a['step_s']:.2f}x, memory {b[key] / a[key]:.2f}x"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--qubits", type=int, default=None)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--pack", type=int, nargs="+", default=[1, 8])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch (and kernel) threads; default: 1, 2 and the machine's cores")  # fmt: skip
    p.add_argument("--steps", type=int, nargs="*", default=None,
                   help="qubit counts for the step timing per thread count (default: 10; none: skip)")  # fmt: skip
    p.add_argument("--graphs", default="auto", choices=["auto", "on", "off"],
                   help="trial.cuda_graphs (CUDA only)")  # fmt: skip
    p.add_argument("--shots", type=int, default=0, help="trial.shots (0: exact)")
    p.add_argument("--kernel", default="auto", choices=["auto", "on", "off", "both"],
                   help="trial.cpu_kernel; both: on and off in one run, with the ratio")  # fmt: skip
    p.add_argument("--parallel", type=int, default=1, help="packs at once, one process each")
    p.add_argument("--memory", action="store_true", help="adjoint vs autograd: one step's memory")
    p.add_argument("--_step", help=argparse.SUPPRESS)
    p.add_argument("--_pack", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = sorted({1, 2, os.cpu_count() or 1})
    if min(args.threads) < 1:
        p.error(f"--threads {args.threads}: every thread count must be >= 1")
    torch.set_num_threads(args.threads[0])
    if args._step:
        print(json.dumps(one_step(args.qubits or 18, args._step, args.device, args.kernel)))
        return
    if args._pack:
        cfg = TrialConfig(qubits=args.qubits or 10, device=args.device, cpu_kernel=args.kernel,
                          shots=args.shots, cuda_graphs=args.graphs)  # fmt: skip
        print(json.dumps({"epoch_s": time_pack(cfg, args._pack, args.epochs)[0]}))
        return
    if args.memory:
        args.qubits = args.qubits or 18
        memory(args)
    else:
        args.qubits = args.qubits or 10
        steps = [10] if args.steps is None else args.steps
        for kernel in ["on", "off"] if args.kernel == "both" else [args.kernel]:
            if steps and args.device == "cpu":
                thread_scaling(steps, args.threads, kernel)
        packing(args)


if __name__ == "__main__":
    main()

"""Speed and memory of the simulator. Run: ``python -m model.quantum.benchmark [--quick]``.

Prints, measured in one run:
1. the reference circuit (14 qubits, batch 16, 6 x [RY on every qubit + CNOT ring],
   forward + backward) with our fused simulator vs a plain per-gate float32 baseline
   (one gate at a time, permute-based), and the ratio; per Kronecker block size;
2. one training step (forward + backward + Adam) of the paper's 10-qubit single-sQE head
   (R=4, N=1, M=2, C=1, rot, encoder_layers=5, batch 16, d=768) and the projected time of
   800 epochs x 28 steps;
3. peak RSS of a training step of the 18-qubit head (batch 16) in a fresh subprocess.

Times are the minimum (and median) over repeats: robust when the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from model.config import TrialConfig
from model.quantum.circuits import CircuitRunner, CircuitSpec, Op
from model.quantum.gates import ry_matrix_real
from model.quantum.statevector import probabilities, z_expectations


def _timeit(fn, *, repeats: int, inner: int) -> tuple[float, float]:
    """(min, median) milliseconds per call of ``fn``."""
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        runs.append((time.perf_counter() - start) / inner * 1e3)
    return min(runs), statistics.median(runs)


# --- baseline: one gate at a time, permute-based, float32 ---------------------------------
def _gate_1q(state: torch.Tensor, m: torch.Tensor, k: int) -> torch.Tensor:
    """state (B, 2, ..., 2); apply 2x2 m to qubit k by moving its axis last."""
    moved = state.movedim(k + 1, -1)
    return (moved @ m.T).movedim(-1, k + 1).contiguous()


def _cnot(state: torch.Tensor, c: int, t: int) -> torch.Tensor:
    cnot = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=state.dtype)
    moved = state.movedim((c + 1, t + 1), (-2, -1))
    shape = moved.shape
    out = (moved.reshape(*shape[:-2], 4) @ cnot.T).reshape(shape)
    return out.movedim((-2, -1), (c + 1, t + 1)).contiguous()


def baseline_step(psi: torch.Tensor, w: torch.Tensor, n: int) -> None:
    state = psi.reshape(psi.shape[0], *([2] * n))
    for layer in range(w.shape[0]):
        for k in range(n):
            state = _gate_1q(state, ry_matrix_real(w[layer, k, 0]), k)
        for i in range(n):
            state = _cnot(state, i, (i + 1) % n)
    z = z_expectations(probabilities(state.reshape(psi.shape[0], -1)), n)
    z.sum().backward()


def ours_step(runner: CircuitRunner, psi: torch.Tensor, w: torch.Tensor, n: int) -> None:
    z = z_expectations(probabilities(runner(psi, w)), n)
    z.sum().backward()


def reference_circuit(threads: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    n, batch, layers = 14, 16, 6
    torch.manual_seed(0)
    psi = torch.randn(batch, 2**n)
    psi = psi / psi.norm(dim=1, keepdim=True)
    w = torch.rand(layers, n, 1, requires_grad=True)
    spec = CircuitSpec(
        n, "ry", 1, tuple(op for _ in range(layers) for op in (Op("rotate", _), Op("entangle")))
    )
    out = {"threads": threads}
    out["baseline_ms"] = _timeit(lambda: baseline_step(psi, w, n), repeats=repeats, inner=1)
    for block in (3, 4, 5, 7):
        runner = CircuitRunner(spec, block=block)
        out[f"ours_block{block}_ms"] = _timeit(
            lambda r=runner: ours_step(r, psi, w, n), repeats=repeats, inner=2
        )
    # agreement of the two implementations
    w.grad = None
    z_ours = z_expectations(probabilities(CircuitRunner(spec)(psi, w)), n)
    state = psi.reshape(batch, *([2] * n))
    for layer in range(layers):
        for k in range(n):
            state = _gate_1q(state, ry_matrix_real(w[layer, k, 0]), k)
        for i in range(n):
            state = _cnot(state, i, (i + 1) % n)
    z_base = z_expectations(probabilities(state.reshape(batch, -1)), n)
    out["max_abs_diff"] = float((z_ours - z_base).abs().max().detach())
    return out


def head_training_step(qubits: int, **overrides):
    """A function that runs one training step (forward, backward, Adam) of the paper's
    head (``TrialConfig`` defaults and ``overrides``) on 16 Gaussian 768-d inputs."""
    from model.heads.quantum import QuantumHead

    cfg = TrialConfig.from_dict({"qubits": qubits, **overrides})
    head = QuantumHead(cfg, 768)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    x, y = torch.randn(16, 768), torch.randint(0, 2, (16,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x), y).backward()
        opt.step()

    return step


def head_step(qubits: int, threads: int, repeats: int, steps: int = 5, **overrides) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    step = head_training_step(qubits, **overrides)
    best, median = _timeit(step, repeats=repeats, inner=steps)
    return {"qubits": qubits, "threads": threads, "ms_per_step": (best, median), **overrides}


def peak_memory_18q() -> dict:
    code = (
        "import resource, torch, json;"
        "from model.quantum.benchmark import head_step;"
        "r = head_step(18, 2, repeats=1, steps=1);"
        "print(json.dumps({'ms_per_step': r['ms_per_step'][0], "
        "'max_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def permutation(threads: int, repeats: int) -> dict:
    """The CNOT-ring permutation of a packed 10-qubit state (T=8, B=16, complex64):
    ``index_select`` on the last axis vs the ``gather`` the simulator uses."""
    from model.quantum.circuits import entangler_pairs
    from model.quantum.statevector import cnot_permutation, permute_amplitudes

    torch.set_num_threads(threads)
    perm = cnot_permutation(entangler_pairs(10, 1), 10)
    state = torch.randn(8, 16, 1024, dtype=torch.complex64)
    same = torch.equal(state.index_select(-1, perm), permute_amplitudes(state, perm))
    slow = _timeit(lambda: state.index_select(-1, perm), repeats=repeats, inner=50)
    fast = _timeit(lambda: permute_amplitudes(state, perm), repeats=repeats, inner=50)
    return {"index_select_ms": slow, "gather_ms": fast, "equal": same}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 18-qubit subprocess")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch threads")
    parser.add_argument(
        "--permutation", action="store_true", help="only: index_select vs gather permutation"
    )
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    print(f"torch {torch.__version__}, {torch.get_num_threads()} default threads")
    if args.permutation:
        for threads in args.threads:
            r = permutation(threads, repeats)
            slow, fast = r["index_select_ms"][0], r["gather_ms"][0]
            print(
                f"permutation, (8, 16, 1024) complex64, {threads} thread(s): index_select "
                f"{slow * 1e3:.0f} us, gather {fast * 1e3:.0f} us ({slow / fast:.1f}x), "
                f"same values: {r['equal']}"
            )
        return 0
    for threads in args.threads:
        r = reference_circuit(threads, repeats)
        base = r["baseline_ms"][0]
        print(
            f"\n[1] 14 qubits, batch 16, 6 x (RY layer + CNOT ring), fwd+bwd, {threads} thread(s)"
        )
        print(f"    per-gate float32 baseline: {base:8.1f} ms (median {r['baseline_ms'][1]:.1f})")
        for key in [k for k in r if k.startswith("ours_block")]:
            best, median = r[key]
            if True:
                print(
                    f"    ours, {key[4:-3]:>7}:        {best:8.1f} ms (median {median:.1f})  speed-up x{base / best:.1f}"
                )
        print(f"    max |<Z> ours - baseline| = {r['max_abs_diff']:.2e}")
    for threads in args.threads:
        for rotation in ("rot", "ry"):
            r = head_step(10, threads, repeats, rotation=rotation)
            best, median = r["ms_per_step"]
            print(
                f"\n[2] 10-qubit single-sQE head ({rotation}), training step, {threads} thread(s): "
                f"{best:.2f} ms (median {median:.2f}); 800 epochs x 28 steps = {best * 22400 / 1000 / 60:.1f} min"
            )
    if not args.skip_memory:
        m = peak_memory_18q()
        print(
            f"\n[3] 18-qubit head, batch 16, training step: {m['ms_per_step']:.0f} ms, peak RSS {m['max_rss_mb']:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

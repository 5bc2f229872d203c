"""A compiled CPU kernel for the circuits: eight states in the lanes of one vector.

The torch path (:mod:`model.quantum.statevector`) applies a layer as Kronecker-block
GEMMs over the whole batch: every block, permutation and autograd copy is a pass over
all states in memory (128 states of 10 qubits are 1 MB), and the 10-qubit head ran at
under 10 % of the CPU's arithmetic peak. This kernel takes the batch eight states at a
time and stores them lane by lane (amplitude ``i`` of state ``v`` at ``re[8 i + v]``, real
and imaginary planes apart), so that a 2x2 gate on *any* qubit is a loop over amplitude
pairs whose body is one 8-wide vector operation, each lane with its own coefficients
(shared, per-member and per-sample gates alike), and a permutation moves whole vectors.
Every gate and CNOT-block permutation of the circuit runs on a group (10 qubits: 128 KB,
in L2) before the next group; the loops are C that gcc vectorises (``-O3 -march=native``).

Program
-------
``prog`` is a list of ops: ``k >= 0`` applies gate layer ``k`` (one 2x2 complex matrix per
qubit, from ``gates[s, k]``; the gates of a layer act on different qubits and commute),
``-1`` the fixed permutation ``new[i] = old[perm[i]]``. Gates are given per state
(``(S, K, n, 2, 2)``, broadcast views expanded by the caller), and their gradients come
back per state for autograd to reduce.

Gradients (adjoint differentiation, as in :mod:`model.quantum.adjoint`)
-----------------------------------------------------------------------
The forward keeps only its output (and ``|psi|^2``). The backward walks the program in
reverse from it with the adjoint ``lam = dL/dpsi*`` (PyTorch's convention for complex
gradients): per gate, last to first, one pass un-computes the state (``psi <- G^H
psi``), adds ``lam psi^H`` over the qubit's amplitude pairs to the gate's gradient and
applies ``G^H`` to ``lam``; a permutation is undone on both. Gates must therefore be
unitary (every gate of the circuits is). Memory: six planes of a group per thread,
whatever the depth (20 qubits: 200 MB; the limit, :data:`MAX_QUBITS`).

Build
-----
The source below is compiled once per qubit count and machine type with the system C
compiler into ``$QSWEEP_KERNEL_CACHE`` (default ``~/.cache/qsweep/kernels``), keyed by a
hash of the source, the flags and the CPU's model and flags (a cluster with mixed nodes
keeps one library per CPU type), and loaded with ctypes. The calls release the GIL; a
batch is split over ``torch.get_num_threads()`` Python threads. Without a compiler
:func:`available` is False and the circuits use the torch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "build_error", "run_circuit", "MAX_QUBITS"]

MAX_QUBITS = 20  # six planes of eight states per thread: 200 MB at 20 qubits

SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* V (-DV, LANES in Python): states per group, the lanes of one AVX2 register of floats */
#define HOT static inline __attribute__((always_inline))

/* A group holds V states lane by lane: amplitude i of lane v is re[i * V + v] (and im).
   Every gate, on any qubit, is then a loop over amplitude pairs whose body is one vector
   operation over the V lanes, each lane with its own gate coefficients c[e][v]
   (e = ar, ai, br, bi, cr, ci, dr, di of [[a, b], [c, d]]), and a permutation moves
   whole lane vectors. */

/* GCC vector types: one vf is the V lanes; the coefficients and sums stay in registers */
typedef float vf __attribute__((vector_size(4 * V)));

HOT vf ld(const float *p) { vf x; memcpy(&x, p, sizeof(x)); return x; }
HOT void st_(float *p, vf x) { memcpy(p, &x, sizeof(x)); }

/* one 2x2 gate on the qubit whose amplitudes pair up at distance st, c[e] per lane */
HOT void gate(float *re, float *im, int N, int st, const float c[8][V]) {
    const vf c0 = ld(c[0]), c1 = ld(c[1]), c2 = ld(c[2]), c3 = ld(c[3]);
    const vf c4 = ld(c[4]), c5 = ld(c[5]), c6 = ld(c[6]), c7 = ld(c[7]);
    for (int base = 0; base < N; base += 2 * st)
        for (int j = base; j < base + st; j++) {
            size_t a = (size_t)j * V, b = (size_t)(j + st) * V;
            vf x0r = ld(re + a), x0i = ld(im + a), x1r = ld(re + b), x1i = ld(im + b);
            st_(re + a, c0 * x0r - c1 * x0i + c2 * x1r - c3 * x1i);
            st_(im + a, c0 * x0i + c1 * x0r + c2 * x1i + c3 * x1r);
            st_(re + b, c4 * x0r - c5 * x0i + c6 * x1r - c7 * x1i);
            st_(im + b, c4 * x0i + c5 * x0r + c6 * x1i + c7 * x1r);
        }
}

/* One gate of the backward in one pass, h = G^H per lane: psi (the gate's output) becomes
   its input h psi, acc += lam psi_in^H over the pairs (per lane), lam becomes h lam. */
HOT void gate_back(float *pr, float *pi, float *lr, float *li, int N, int st,
                   const float h[8][V], float acc[8][V]) {
    const vf h0 = ld(h[0]), h1 = ld(h[1]), h2 = ld(h[2]), h3 = ld(h[3]);
    const vf h4 = ld(h[4]), h5 = ld(h[5]), h6 = ld(h[6]), h7 = ld(h[7]);
    vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
    for (int base = 0; base < N; base += 2 * st)
        for (int j = base; j < base + st; j++) {
            size_t a = (size_t)j * V, b = (size_t)(j + st) * V;
            vf y0r = ld(pr + a), y0i = ld(pi + a), y1r = ld(pr + b), y1i = ld(pi + b);
            vf xr = h0 * y0r - h1 * y0i + h2 * y1r - h3 * y1i;
            vf xi = h0 * y0i + h1 * y0r + h2 * y1i + h3 * y1r;
            vf yr = h4 * y0r - h5 * y0i + h6 * y1r - h7 * y1i;
            vf yi = h4 * y0i + h5 * y0r + h6 * y1i + h7 * y1r;
            st_(pr + a, xr); st_(pi + a, xi); st_(pr + b, yr); st_(pi + b, yi);
            vf ar = ld(lr + a), ai = ld(li + a), br = ld(lr + b), bi = ld(li + b);
            s0 += ar * xr + ai * xi; s1 += ai * xr - ar * xi; /* lam0 psi0* */
            s2 += ar * yr + ai * yi; s3 += ai * yr - ar * yi; /* lam0 psi1* */
            s4 += br * xr + bi * xi; s5 += bi * xr - br * xi; /* lam1 psi0* */
            s6 += br * yr + bi * yi; s7 += bi * yr - br * yi; /* lam1 psi1* */
            st_(lr + a, h0 * ar - h1 * ai + h2 * br - h3 * bi);
            st_(li + a, h0 * ai + h1 * ar + h2 * bi + h3 * br);
            st_(lr + b, h4 * ar - h5 * ai + h6 * br - h7 * bi);
            st_(li + b, h4 * ai + h5 * ar + h6 * bi + h7 * br);
        }
    st_(acc[0], s0); st_(acc[1], s1); st_(acc[2], s2); st_(acc[3], s3);
    st_(acc[4], s4); st_(acc[5], s5); st_(acc[6], s6); st_(acc[7], s7);
}

/* new[i] = old[perm[i]] (whole lane vectors) into the spare planes, which then trade places */
HOT void permute(float **re, float **im, float **tr, float **ti, const int32_t *perm, int N) {
    float *a = *re, *b = *im, *c = *tr, *d = *ti;
    for (int i = 0; i < N; i++) {
        const float *sa = a + (size_t)perm[i] * V, *sb = b + (size_t)perm[i] * V;
#pragma omp simd
        for (int v = 0; v < V; v++) { c[(size_t)i * V + v] = sa[v]; d[(size_t)i * V + v] = sb[v]; }
    }
    *re = c; *im = d; *tr = a; *ti = b;
}

/* the coefficients of gate layer k for the lanes of states s0.. (lanes past s1: identity);
   adjoint: G^H = [[a*, c*], [b*, d*]] */
HOT void coefficients(const float *gates, int K, int k, int n, int s0, int s1, int adjoint,
                      float (*c)[8][V]) {
    for (int v = 0; v < V; v++) {
        int s = s0 + v;
        for (int q = 0; q < n; q++) {
            float g[8] = {1, 0, 0, 0, 0, 0, 1, 0};
            if (s < s1) memcpy(g, gates + (((size_t)s * K + k) * n + q) * 8, sizeof(g));
            if (adjoint) {
                float h[8] = {g[0], -g[1], g[4], -g[5], g[2], -g[3], g[6], -g[7]};
                memcpy(g, h, sizeof(g));
            }
            for (int e = 0; e < 8; e++) c[q][e][v] = g[e];
        }
    }
}

static float *planes(int count, int N) {
    void *p = NULL;
    if (posix_memalign(&p, 64, (size_t)count * N * V * sizeof(float))) return NULL;
    return (float *)p;
}

/* states [s0, s1): in (S, N) complex interleaved, or real when real_in; out (S, N) complex;
   probs (S, N) |out|^2 or NULL; gates (S, K, n, 8) */
int qs_forward(int s0, int s1, int n_arg, const float *in, int real_in, float *out,
               float *probs, const float *gates, int K, const int32_t *prog, int n_ops,
               const int32_t *perm) {
    const int n = NQ, N = 1 << n;
    if (n_arg != NQ) return 2;
    float *buf = planes(4, N), (*c)[8][V] = malloc(sizeof(float[NQ][8][V]));
    if (!buf || !c) { free(buf); free(c); return 1; }
    for (int g0 = s0; g0 < s1; g0 += V) {
        int g1 = g0 + V < s1 ? g0 + V : s1;
        float *re = buf, *im = buf + (size_t)N * V, *tr = buf + 2 * (size_t)N * V,
              *ti = buf + 3 * (size_t)N * V;
        memset(re, 0, 2 * (size_t)N * V * sizeof(float));
        for (int s = g0; s < g1; s++)
            for (int i = 0; i < N; i++) {
                size_t at = (size_t)i * V + (s - g0);
                if (real_in) re[at] = in[(size_t)N * s + i];
                else { re[at] = in[2 * ((size_t)N * s + i)]; im[at] = in[2 * ((size_t)N * s + i) + 1]; }
            }
        for (int o = 0; o < n_ops; o++) {
            int k = prog[o];
            if (k < 0) { permute(&re, &im, &tr, &ti, perm, N); continue; }
            coefficients(gates, K, k, n, g0, g1, 0, c);
            for (int q = 0; q < n; q++) gate(re, im, N, 1 << (n - 1 - q), c[q]);
        }
        for (int s = g0; s < g1; s++)
            for (int i = 0; i < N; i++) {
                size_t at = (size_t)i * V + (s - g0), o2 = (size_t)N * s + i;
                out[2 * o2] = re[at];
                out[2 * o2 + 1] = im[at];
                if (probs) probs[o2] = re[at] * re[at] + im[at] * im[at];
            }
    }
    free(buf);
    free(c);
    return 0;
}

/* out: the forward's output (S, N) complex; grad_out (S, N) complex or NULL; grad_probs
   (S, N) real or NULL (the gradient of probs: it adds 2 grad_probs out to lam); grad_in
   (S, N) complex, real (its real part) when real_in, or NULL; grad_gates (S, K, n, 8).
   The state is un-computed from out. */
int qs_backward(int s0, int s1, int n_arg, const float *out, const float *grad_out,
                const float *grad_probs, float *grad_in, int real_in, const float *gates, int K,
                const int32_t *prog, int n_ops, const int32_t *inverse, float *grad_gates) {
    const int n = NQ, N = 1 << n;
    if (n_arg != NQ) return 2;
    float *buf = planes(6, N), (*h)[8][V] = malloc(sizeof(float[NQ][8][V]));
    if (!buf || !h) { free(buf); free(h); return 1; }
    for (int g0 = s0; g0 < s1; g0 += V) {
        int g1 = g0 + V < s1 ? g0 + V : s1;
        size_t P = (size_t)N * V;
        float *pr = buf, *pi = buf + P, *lr = buf + 2 * P, *li = buf + 3 * P;
        float *tr = buf + 4 * P, *ti = buf + 5 * P;
        memset(buf, 0, 4 * P * sizeof(float));
        for (int s = g0; s < g1; s++)
            for (int i = 0; i < N; i++) {
                size_t at = (size_t)i * V + (s - g0), o2 = (size_t)N * s + i;
                pr[at] = out[2 * o2];
                pi[at] = out[2 * o2 + 1];
                if (grad_out) { lr[at] = grad_out[2 * o2]; li[at] = grad_out[2 * o2 + 1]; }
                if (grad_probs) {
                    lr[at] += 2 * grad_probs[o2] * pr[at];
                    li[at] += 2 * grad_probs[o2] * pi[at];
                }
            }
        for (int o = n_ops - 1; o >= 0; o--) {
            int k = prog[o];
            if (k < 0) { /* each permute leaves the planes it read as the spare ones */
                permute(&lr, &li, &tr, &ti, inverse, N);
                permute(&pr, &pi, &tr, &ti, inverse, N);
                continue;
            }
            coefficients(gates, K, k, n, g0, g1, 1, h);
            for (int q = n - 1; q >= 0; q--) {
                float acc[8][V];
                memset(acc, 0, sizeof(acc));
                gate_back(pr, pi, lr, li, N, 1 << (n - 1 - q), h[q], acc);
                for (int s = g0; s < g1; s++) {
                    float *dg = grad_gates + (((size_t)s * K + k) * n + q) * 8;
                    for (int e = 0; e < 8; e++) dg[e] += acc[e][s - g0];
                }
            }
        }
        for (int s = g0; s < g1; s++)
            for (int i = 0; i < N && grad_in; i++) {
                size_t at = (size_t)i * V + (s - g0), o2 = (size_t)N * s + i;
                if (real_in) grad_in[o2] = lr[at];
                else { grad_in[2 * o2] = lr[at]; grad_in[2 * o2 + 1] = li[at]; }
            }
    }
    free(buf);
    free(h);
    return 0;
}
"""

LANES = 8  # V in the source: states per group (eight float32 lanes of an AVX2 register)

FLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp-simd",
    "-std=gnu99",
    "-fPIC",
    "-fno-semantic-interposition",
    "-shared",
]


def _cache_dir() -> Path:
    root = os.environ.get("QSWEEP_KERNEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "qsweep" / "kernels"


def _cpu_key() -> str:
    """The CPU's model and flags (a -march=native library runs only where they match)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return "\n".join(lines) or platform.processor() or platform.machine()


@functools.cache
def _library(n: int) -> tuple[ctypes.CDLL | None, str]:
    """(the library for ``n`` qubits, "") or (None, why it could not be built).

    One library per qubit count: with ``n`` a compile-time constant gcc unrolls and
    specialises the strided loops (2x faster than a runtime ``n`` in this kernel's first,
    one-state-at-a-time version)."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        return None, "no C compiler (gcc or cc) on PATH"
    flags = [*FLAGS, f"-DNQ={n}", f"-DV={LANES}"]
    key = hashlib.sha256("\0".join([SOURCE, " ".join(flags), _cpu_key()]).encode()).hexdigest()
    lib = _cache_dir() / f"qsweep_kernel_{n}q_{key[:16]}.so"
    if not lib.exists():
        try:
            lib.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
                src, out = Path(tmp) / "kernel.c", Path(tmp) / "kernel.so"
                src.write_text(SOURCE)
                done = subprocess.run(
                    [compiler, *flags, str(src), "-o", str(out)], capture_output=True, text=True
                )
                if done.returncode != 0:
                    return None, f"{compiler} failed: {done.stderr.strip()[-500:]}"
                os.replace(out, lib)  # atomic: concurrent trials never load a half-written file
        except OSError as err:
            return None, f"cannot build in {lib.parent}: {err}"
    so = ctypes.CDLL(str(lib))
    p, i = ctypes.c_void_p, ctypes.c_int
    so.qs_forward.argtypes = [i, i, i, p, i, p, p, p, i, p, i, p]
    so.qs_backward.argtypes = [i, i, i, p, p, p, p, i, p, i, p, i, p, p]
    so.qs_forward.restype = so.qs_backward.restype = i
    return so, ""


def available(n: int = 10) -> bool:
    """True when the kernel for ``n`` qubits is built (or can be) on this machine."""
    return _library(n)[0] is not None


def build_error(n: int = 10) -> str:
    """Why the kernel is not available ("" when it is)."""
    return _library(n)[1]


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def warn_unavailable(n: int) -> None:
    """Say once per qubit count that ``cpu_kernel: auto`` falls back to the torch path."""
    if n not in _warned:
        _warned.add(n)
        warnings.warn(
            f"qsweep: the CPU circuit kernel is not available ({build_error(n)}); "
            "noise-free circuits run on the torch path, 3-4x slower. Install gcc, or set "
            "trial.cpu_kernel: off to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )


_warned: set[int] = set()


def _split(total: int, fn) -> None:
    """Run ``fn(s0, s1)`` over ``[0, total)`` in chunks on torch's number of threads;
    chunk edges fall on whole groups of LANES states."""
    workers = max(1, min(torch.get_num_threads(), -(-total // LANES)))
    if workers == 1:
        codes = [fn(0, total)]
    else:
        groups = -(-total // LANES)
        edges = [min(total, groups * w // workers * LANES) for w in range(workers + 1)]
        with ThreadPoolExecutor(workers) as pool:
            codes = list(pool.map(fn, edges[:-1], edges[1:]))
    if any(codes):
        raise RuntimeError(
            f"the CPU circuit kernel failed (code {max(codes)}: 1 out of memory, 2 wrong qubit count)"
        )


class _Circuit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, state, gates, n, prog, perm, inverse):
        so = _library(n)[0]
        s, real = state.shape[0], not state.is_complex()
        out = torch.empty(s, 2**n, dtype=torch.complex64)
        probs = torch.empty(s, 2**n, dtype=torch.float32)
        args = (n, _ptr(state), int(real), _ptr(out), _ptr(probs), _ptr(gates), gates.shape[1])
        _split(s, lambda a, b: so.qs_forward(a, b, *args, _ptr(prog), prog.numel(), _ptr(perm)))
        ctx.save_for_backward(out, gates, prog, inverse)
        ctx.n, ctx.real = n, real
        ctx.set_materialize_grads(False)
        return out, probs

    @staticmethod
    def backward(ctx, grad_out, grad_probs):
        out, gates, prog, inverse = ctx.saved_tensors
        so = _library(ctx.n)[0]
        if grad_out is not None:
            grad_out = grad_out.resolve_conj().contiguous()
        if grad_probs is not None:
            grad_probs = grad_probs.contiguous()
        grad_in = None
        if ctx.needs_input_grad[0]:
            grad_in = (
                torch.empty(out.shape, dtype=torch.float32) if ctx.real else torch.empty_like(out)
            )
        grad_gates = torch.zeros_like(gates)
        args = (ctx.n, _ptr(out), _ptr(grad_out), _ptr(grad_probs), _ptr(grad_in), int(ctx.real))
        rest = (_ptr(gates), gates.shape[1], _ptr(prog), prog.numel(), _ptr(inverse))
        _split(out.shape[0], lambda a, b: so.qs_backward(a, b, *args, *rest, _ptr(grad_gates)))
        return grad_in, grad_gates, None, None, None, None


def run_circuit(
    state: Tensor, gates: Tensor, prog: list[int], perm: Tensor, inverse: Tensor
) -> tuple[Tensor, Tensor]:
    """Run ``prog`` (see the module docstring) on ``state`` ``(S, 2**n)`` (complex64, or
    float32 for a real input) with unitary ``gates`` ``(S, K, n, 2, 2)`` complex64.

    Returns the final state ``(S, 2**n)`` complex64 and its probabilities ``|psi|^2``
    (float32), both differentiable in the state and the gates. CPU only.
    """
    n = state.shape[-1].bit_length() - 1
    if not available(n):
        raise RuntimeError(f"the CPU circuit kernel is not available: {build_error(n)}")
    if state.dtype not in (torch.complex64, torch.float32) or gates.dtype != torch.complex64:
        raise TypeError(
            f"the CPU kernel takes a complex64 or float32 state and complex64 gates, "
            f"got {state.dtype} and {gates.dtype}"
        )
    if state.device.type != "cpu" or n > MAX_QUBITS:
        raise ValueError(f"the CPU kernel runs on the CPU up to {MAX_QUBITS} qubits")
    if gates.shape[0] != state.shape[0] or tuple(gates.shape[2:]) != (n, 2, 2):
        raise ValueError(f"gates {tuple(gates.shape)} do not fit states {tuple(state.shape)}")
    return _Circuit.apply(
        state.resolve_conj().contiguous(),
        gates.resolve_conj().contiguous(),
        n,
        torch.tensor(prog, dtype=torch.int32),
        perm.to(torch.int32).contiguous(),
        inverse.to(torch.int32).contiguous(),
    )

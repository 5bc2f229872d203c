"""A fused CPU kernel for the circuits: one pass per gate on a cache-resident state.

The torch path (:mod:`model.quantum.statevector`) applies a layer as Kronecker-block
GEMMs over the whole batch: every block, permutation and autograd copy is a pass over
all states in memory (128 states of 10 qubits are 1 MB, more than a core's L2), and the
10-qubit head runs at under 10 % of the CPU's arithmetic peak. This kernel instead takes
one state at a time, keeps it in L1 as separate real and imaginary planes, and applies
every 2x2 gate of every layer and every CNOT-block permutation to it before moving on;
the inner loops are plain C that gcc vectorises (``-O3 -march=native``).

Program
-------
``prog`` is a list of ops: ``k >= 0`` applies gate layer ``k`` (one 2x2 complex matrix per
qubit, qubit 0 first, from ``gates[s, k]``), ``-1`` the fixed permutation
``new[i] = old[perm[i]]``. Gates are given per state (``(S, K, n, 2, 2)``, broadcast
views expanded by the caller), so shared, per-member and per-sample matrices are all the
same to the kernel, and their gradients come back per state for autograd to reduce.

Gradients (adjoint differentiation, as in :mod:`model.quantum.adjoint`)
-----------------------------------------------------------------------
The forward keeps only its output. The backward walks the program in reverse from it
with the adjoint ``lam = dL/dpsi*`` (PyTorch's convention for complex gradients): per
gate, last to first, one pass un-computes the state (``psi <- G^H psi``), adds
``lam psi^H`` over the qubit's amplitude pairs to the gate's gradient and applies ``G^H``
to ``lam``; a permutation is undone on both. Gates must therefore be unitary (every
gate of the circuits is). Memory: four states per thread, whatever the depth.

Layout: the last three qubits (amplitude strides 4, 2, 1) are applied as one 8x8 block
per group of 8 neighbouring amplitudes, vectorised over its rows; the others one 2x2
gate at a time, vectorised along the stride.

Build
-----
The source below is compiled once per machine type with the system C compiler into
``$QSWEEP_KERNEL_CACHE`` (default ``~/.cache/qsweep/kernels``), keyed by a hash of the
source, the flags and the CPU's model and flags (a cluster with mixed nodes keeps one
library per CPU type), and loaded with ctypes. The calls release the GIL; a batch is
split over ``torch.get_num_threads()`` Python threads. Without a compiler
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "build_error", "run_circuit", "MAX_QUBITS"]

MAX_QUBITS = 26  # as TrialConfig; the backward keeps four states per thread

SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* one 2x2 complex gate g = [[a, b], [c, d]] (8 floats, re/im interleaved, row-major) on
   the qubit whose amplitudes pair up at distance st; re/im planes of N floats */
static inline __attribute__((always_inline)) void gate(float *re, float *im, int N, int st, const float *g) {
    const float ar = g[0], ai = g[1], br = g[2], bi = g[3];
    const float cr = g[4], ci = g[5], dr = g[6], di = g[7];
    for (int base = 0; base < N; base += 2 * st) {
        float *r0 = re + base, *i0 = im + base, *r1 = re + base + st, *i1 = im + base + st;
#pragma omp simd
        for (int j = 0; j < st; j++) {
            float x0r = r0[j], x0i = i0[j], x1r = r1[j], x1i = i1[j];
            r0[j] = ar * x0r - ai * x0i + br * x1r - bi * x1i;
            i0[j] = ar * x0i + ai * x0r + br * x1i + bi * x1r;
            r1[j] = cr * x0r - ci * x0i + dr * x1r - di * x1i;
            i1[j] = cr * x0i + ci * x0r + dr * x1i + di * x1r;
        }
    }
}

/* the last L = min(3, n) qubits (strides 4, 2, 1) as one 2^L x 2^L block: per group of
   G = 2^L neighbouring amplitudes, y = M x, vectorised over the G rows. m: M transposed,
   planar: m[f][e] real part at m[f * G + e], imaginary part at m[G * G + f * G + e] */
static inline __attribute__((always_inline)) void low_matrix(int L, const float *g, float *m) {
    const int G = 1 << L;
    for (int e = 0; e < G; e++)
        for (int f = 0; f < G; f++) {
            float pr = 1, pi = 0;
            for (int t = 0; t < L; t++) {
                int a = (e >> (L - 1 - t)) & 1, b = (f >> (L - 1 - t)) & 1;
                float gr = g[8 * t + 4 * a + 2 * b], gi = g[8 * t + 4 * a + 2 * b + 1];
                float r = pr * gr - pi * gi;
                pi = pr * gi + pi * gr;
                pr = r;
            }
            m[f * G + e] = pr;
            m[G * G + f * G + e] = pi;
        }
}

static inline __attribute__((always_inline)) void low_apply(float *re, float *im, int N, int L, const float *m) {
    const int G = 1 << L;
    const float *mr = m, *mi = m + G * G;
    for (int base = 0; base < N; base += G) {
        float yr[8] = {0}, yi[8] = {0};
        for (int f = 0; f < G; f++) {
            const float xr = re[base + f], xi = im[base + f];
#pragma omp simd
            for (int e = 0; e < G; e++) {
                yr[e] += mr[f * G + e] * xr - mi[f * G + e] * xi;
                yi[e] += mr[f * G + e] * xi + mi[f * G + e] * xr;
            }
        }
        for (int e = 0; e < G; e++) { re[base + e] = yr[e]; im[base + e] = yi[e]; }
    }
}

/* M^H (transposed planar, like low_matrix) */
static inline __attribute__((always_inline)) void low_adjoint(int L, const float *m, float *h) {
    const int G = 1 << L;
    for (int e = 0; e < G; e++)
        for (int f = 0; f < G; f++) {
            h[f * G + e] = m[e * G + f];
            h[G * G + f * G + e] = -m[G * G + e * G + f];
        }
}

/* dm[e][f] += sum over groups of lam_e psi_f^* (row-major planar: re at e*G+f, im after G*G) */
static inline __attribute__((always_inline)) void low_grad(const float *lr, const float *li, const float *pr, const float *pi, int N,
                     int L, float *dm) {
    const int G = 1 << L;
    for (int base = 0; base < N; base += G)
        for (int e = 0; e < G; e++) {
            const float ar = lr[base + e], ai = li[base + e];
#pragma omp simd
            for (int f = 0; f < G; f++) {
                dm[e * G + f] += ar * pr[base + f] + ai * pi[base + f];
                dm[G * G + e * G + f] += ai * pr[base + f] - ar * pi[base + f];
            }
        }
}

/* the gradients of the L gates of the block from dM = dL/dM (PyTorch's convention:
   dL/dg_t[a][b] += sum over entries with bits a, b at t of dM[e][f] conj(the other factors)) */
static inline __attribute__((always_inline)) void low_chain(int L, const float *g, const float *dm, float *dg) {
    const int G = 1 << L;
    for (int e = 0; e < G; e++)
        for (int f = 0; f < G; f++) {
            const float dr = dm[e * G + f], di = dm[G * G + e * G + f];
            for (int t = 0; t < L; t++) {
                float pr = 1, pi = 0; /* product of the other factors */
                for (int u = 0; u < L; u++) {
                    if (u == t) continue;
                    int a = (e >> (L - 1 - u)) & 1, b = (f >> (L - 1 - u)) & 1;
                    float gr = g[8 * u + 4 * a + 2 * b], gi = g[8 * u + 4 * a + 2 * b + 1];
                    float r = pr * gr - pi * gi;
                    pi = pr * gi + pi * gr;
                    pr = r;
                }
                int a = (e >> (L - 1 - t)) & 1, b = (f >> (L - 1 - t)) & 1;
                dg[8 * t + 4 * a + 2 * b] += dr * pr + di * pi; /* dM * conj(p) */
                dg[8 * t + 4 * a + 2 * b + 1] += di * pr - dr * pi;
            }
        }
}

/* one gate of the backward, in one pass: psi (the gate's output) becomes its input
   G^H psi, dg += lam psi_in^H over the pairs, and lam becomes G^H lam. High qubits only
   (st >= 8): the sums run in 8 lanes, reduced once at the end */
static inline __attribute__((always_inline)) void gate_back(float *pr, float *pi, float *lr,
        float *li, int N, int st, const float *g, float *dg) {
    const float ar = g[0], ai = -g[1], br = g[4], bi = -g[5]; /* G^H = [[a*, c*], [b*, d*]] */
    const float cr = g[2], ci = -g[3], dr = g[6], di = -g[7];
    float acc[8][8] = {{0}};
    for (int base = 0; base < N; base += 2 * st)
        for (int j = base; j < base + st; j += 8) {
            float *p0r = pr + j, *p0i = pi + j, *p1r = pr + j + st, *p1i = pi + j + st;
            float *l0r = lr + j, *l0i = li + j, *l1r = lr + j + st, *l1i = li + j + st;
#pragma omp simd
            for (int v = 0; v < 8; v++) {
                float y0r = p0r[v], y0i = p0i[v], y1r = p1r[v], y1i = p1i[v];
                float xr = ar * y0r - ai * y0i + br * y1r - bi * y1i;
                float xi = ar * y0i + ai * y0r + br * y1i + bi * y1r;
                float yr = cr * y0r - ci * y0i + dr * y1r - di * y1i;
                float yi = cr * y0i + ci * y0r + dr * y1i + di * y1r;
                p0r[v] = xr; p0i[v] = xi; p1r[v] = yr; p1i[v] = yi;
                float l0R = l0r[v], l0I = l0i[v], l1R = l1r[v], l1I = l1i[v];
                acc[0][v] += l0R * xr + l0I * xi; acc[1][v] += l0I * xr - l0R * xi; /* lam0 psi0* */
                acc[2][v] += l0R * yr + l0I * yi; acc[3][v] += l0I * yr - l0R * yi; /* lam0 psi1* */
                acc[4][v] += l1R * xr + l1I * xi; acc[5][v] += l1I * xr - l1R * xi; /* lam1 psi0* */
                acc[6][v] += l1R * yr + l1I * yi; acc[7][v] += l1I * yr - l1R * yi; /* lam1 psi1* */
                l0r[v] = ar * l0R - ai * l0I + br * l1R - bi * l1I;
                l0i[v] = ar * l0I + ai * l0R + br * l1I + bi * l1R;
                l1r[v] = cr * l0R - ci * l0I + dr * l1R - di * l1I;
                l1i[v] = cr * l0I + ci * l0R + dr * l1I + di * l1R;
            }
        }
    for (int t = 0; t < 8; t++)
        for (int v = 0; v < 8; v++) dg[t] += acc[t][v];
}

static inline __attribute__((always_inline)) void load(const float *src, float *re, float *im, int N) {
    for (int i = 0; i < N; i++) { re[i] = src[2 * i]; im[i] = src[2 * i + 1]; }
}

static inline __attribute__((always_inline)) void store(float *dst, const float *re, const float *im, int N) {
    for (int i = 0; i < N; i++) { dst[2 * i] = re[i]; dst[2 * i + 1] = im[i]; }
}

/* new[i] = old[perm[i]] into the spare planes, then the planes trade places (no copy) */
static inline __attribute__((always_inline)) void permute(float **re, float **im, float **tr,
                                                          float **ti, const int32_t *perm, int N) {
    float *a = *re, *b = *im, *c = *tr, *d = *ti;
    for (int i = 0; i < N; i++) { c[i] = a[perm[i]]; d[i] = b[perm[i]]; }
    *re = c; *im = d; *tr = a; *ti = b;
}

/* states [s0, s1): in (S, N) complex interleaved, or real when real_in; out (S, N) complex;
   probs (S, N) |out|^2 or NULL; gates (S, K, n, 8) */
int qs_forward(int s0, int s1, int n_arg, const float *in, int real_in, float *out,
               float *probs, const float *gates, int K, const int32_t *prog, int n_ops,
               const int32_t *perm) {
    const int n = NQ, N = 1 << n, L = n < 3 ? n : 3, H = n - L; /* H high qubits, one by one */
    if (n_arg != NQ) return 2;
    float m[128];
    float *buf = (float *)malloc(4 * (size_t)N * sizeof(float));
    if (!buf) return 1;
    float *re = buf, *im = buf + N, *tr = buf + 2 * N, *ti = buf + 3 * N;
    for (int s = s0; s < s1; s++) {
        if (real_in) {
            memcpy(re, in + (size_t)N * s, N * sizeof(float));
            memset(im, 0, N * sizeof(float));
        } else {
            load(in + 2 * (size_t)N * s, re, im, N);
        }
        for (int o = 0; o < n_ops; o++) {
            int k = prog[o];
            if (k < 0) { permute(&re, &im, &tr, &ti, perm, N); continue; }
            const float *g = gates + ((size_t)s * K + k) * n * 8;
            for (int q = 0; q < H; q++) gate(re, im, N, 1 << (n - 1 - q), g + 8 * q);
            low_matrix(L, g + 8 * H, m);
            low_apply(re, im, N, L, m);
        }
        store(out + 2 * (size_t)N * s, re, im, N);
        if (probs) {
            float *p = probs + (size_t)N * s;
            for (int i = 0; i < N; i++) p[i] = re[i] * re[i] + im[i] * im[i];
        }
    }
    free(buf);
    return 0;
}

/* out: the forward's output (S, N) complex; grad_out (S, N) complex or NULL; grad_probs
   (S, N) real or NULL (the gradient of probs: it adds 2 grad_probs out to lam); grad_in
   (S, N) complex, real (its real part) when real_in, or NULL; grad_gates (S, K, n, 8).
   The state is un-computed from out. */
int qs_backward(int s0, int s1, int n_arg, const float *out, const float *grad_out,
                const float *grad_probs, float *grad_in, int real_in, const float *gates, int K,
                const int32_t *prog, int n_ops, const int32_t *inverse, float *grad_gates) {
    const int n = NQ, N = 1 << n, L = n < 3 ? n : 3, H = n - L;
    float m[128], h[128], dm[128];
    if (n_arg != NQ) return 2;
    float *buf = (float *)malloc(8 * (size_t)N * sizeof(float));
    if (!buf) return 1;
    float *lr = buf, *li = buf + N, *tr = buf + 2 * N, *ti = buf + 3 * N;
    float *pr = buf + 4 * N, *pi = buf + 5 * N, *ur = buf + 6 * N, *ui = buf + 7 * N;
    for (int s = s0; s < s1; s++) {
        load(out + 2 * (size_t)N * s, pr, pi, N);
        if (grad_out) {
            load(grad_out + 2 * (size_t)N * s, lr, li, N);
        } else {
            memset(lr, 0, N * sizeof(float));
            memset(li, 0, N * sizeof(float));
        }
        if (grad_probs) {
            const float *gp = grad_probs + (size_t)N * s;
            for (int i = 0; i < N; i++) { lr[i] += 2 * gp[i] * pr[i]; li[i] += 2 * gp[i] * pi[i]; }
        }
        for (int o = n_ops - 1; o >= 0; o--) {
            int k = prog[o];
            if (k < 0) {
                permute(&lr, &li, &tr, &ti, inverse, N);
                permute(&pr, &pi, &ur, &ui, inverse, N);
                continue;
            }
            const float *g = gates + ((size_t)s * K + k) * n * 8;
            float *dg = grad_gates + ((size_t)s * K + k) * n * 8;
            low_matrix(L, g + 8 * H, m);
            low_adjoint(L, m, h);
            low_apply(pr, pi, N, L, h); /* the input of the low block */
            memset(dm, 0, sizeof(dm));
            low_grad(lr, li, pr, pi, N, L, dm);
            low_chain(L, g + 8 * H, dm, dg + 8 * H);
            low_apply(lr, li, N, L, h);
            for (int q = H - 1; q >= 0; q--)
                gate_back(pr, pi, lr, li, N, 1 << (n - 1 - q), g + 8 * q, dg + 8 * q);
        }
        if (grad_in && real_in) memcpy(grad_in + (size_t)N * s, lr, N * sizeof(float));
        else if (grad_in) store(grad_in + 2 * (size_t)N * s, lr, li, N);
    }
    free(buf);
    return 0;
}
"""

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
    specialises the strided loops (measured 2x faster than one library for every n)."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        return None, "no C compiler (gcc or cc) on PATH"
    flags = [*FLAGS, f"-DNQ={n}"]
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


def _split(total: int, fn) -> None:
    """Run ``fn(s0, s1)`` over ``[0, total)`` in chunks on torch's number of threads."""
    workers = max(1, min(torch.get_num_threads(), total))
    if workers == 1:
        codes = [fn(0, total)]
    else:
        edges = [total * w // workers for w in range(workers + 1)]
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
        probs = torch.empty(s, 2**n)
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
            grad_in = torch.empty(out.shape) if ctx.real else torch.empty_like(out)
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

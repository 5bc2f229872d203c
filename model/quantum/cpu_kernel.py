"""A compiled CPU kernel for the circuits: eight states in the lanes of one vector.

The torch path (:mod:`model.quantum.statevector`) applies a layer as Kronecker-block
GEMMs over the whole batch: every block, permutation and autograd copy is a pass over
all states in memory, and the 10-qubit head ran at under 10 % of the CPU's arithmetic
peak. This kernel (C source and layout: :mod:`model.quantum.kernel_source`) takes the
batch eight states at a time, stored lane by lane, so that a 2x2 gate on *any* qubit is
a loop over amplitude pairs whose body is one 8-wide vector operation with per-lane
coefficients, and runs every gate and permutation of the circuit on a group (10 qubits:
128 KB, in L2) before the next group.

One call runs a whole circuit and its glue: :func:`run_layers` takes the rotation angles
(Rot or RY, one weight set per pack member or encoder), the angle-encoding latent and a
readout table, builds the gate matrices itself, and returns the final state, the
probabilities and the observables (the Pauli-Z readout); its backward returns the
gradients of the angles, the latent and the input directly. :func:`run_circuit` takes
explicit per-state gate matrices (the general form, tested against dense references).

Gradients are adjoint differentiation (as :mod:`model.quantum.adjoint`): the forward keeps
only its output; the backward un-computes the circuit from it with ``G^H`` while carrying
``lam = dL/dpsi*`` (PyTorch's convention). Gates must be unitary (every gate of the
circuits is). Parameter-gradient sums are added in double. Memory: six planes of a group
per thread, whatever the depth (20 qubits: 200 MB; the limit, :data:`MAX_QUBITS`).

Threads: one call uses up to ``torch.get_num_threads()`` OpenMP threads, torch's own
(the library links the libgomp torch loaded): groups are split over the threads, and when
there are fewer groups than threads and the state is large (:func:`thread_plan`), every
gate's amplitude pairs are.

Build: the source is compiled once per qubit count and machine type with the system C
compiler (``-O3 -march=native -fopenmp``; without OpenMP, one thread) into
``$QSWEEP_KERNEL_CACHE`` (default ``~/.cache/qsweep/kernels``), keyed by a hash of the
source, the flags and the CPU's model and flags, and loaded with ctypes (the calls
release the GIL). Without a compiler :func:`available` is False and the circuits use the
torch path.
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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from model.quantum.kernel_source import SOURCE

__all__ = [
    "available",
    "build_error",
    "openmp",
    "thread_plan",
    "KernelProgram",
    "run_layers",
    "run_circuit",
    "MAX_QUBITS",
    "LANES",
]

MAX_QUBITS = 20  # six planes of eight states per thread: 200 MB at 20 qubits
LANES = 8  # V in the source: states per group (eight float32 lanes of an AVX2 register)
ROTATIONS = {"rot": (0, 3), "ry": (1, 1)}  # rotation -> (kind in the source, angles per gate)

FLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp-simd",
    "-std=gnu99",
    "-fPIC",
    "-fno-semantic-interposition",
    "-shared",
]
OPENMP = ["-fopenmp"]  # tried first; a compiler without it builds a one-thread kernel

_P, _I, _L = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64


class _Call(ctypes.Structure):
    """``qs_call`` of the source, field by field."""

    _fields_ = [
        ("S", _I), ("n", _I), ("threads", _I), ("in_kind", _I), ("in_dim", _I), ("in_", _P),
        ("K", _I), ("n_ops", _I), ("prog", _P), ("perm", _P), ("inverse", _P), ("table", _P),
        ("rows", _I), ("layers", _I), ("row_stride", _L), ("layer_stride", _L), ("row", _P),
        ("layer_of", _P), ("enc_of", _P), ("enc", _P), ("trig", _P), ("scale", ctypes.c_float),
        ("angles", _P), ("kind", _I), ("F", _I), ("readout", _P), ("out", _P), ("probs", _P),
        ("obs", _P), ("grad_out", _P), ("grad_probs", _P), ("grad_obs", _P), ("grad_in", _P),
        ("grad_table", _P), ("grad_angles", _P), ("grad_enc", _P),
    ]  # fmt: skip


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


def _compile(compiler: str, flags: list[str], lib: Path) -> str:
    """Build ``lib`` with ``flags``; returns "" or the compiler's complaint."""
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        src, out = Path(tmp) / "kernel.c", Path(tmp) / "kernel.so"
        src.write_text(SOURCE)
        done = subprocess.run(
            [compiler, *flags, str(src), "-o", str(out), "-lm"], capture_output=True, text=True
        )
        if done.returncode != 0:
            return f"{compiler} failed: {done.stderr.strip()[-500:]}"
        os.replace(out, lib)  # atomic: concurrent trials never load a half-written file
    return ""


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
            why = _compile(compiler, [*flags, *OPENMP], lib)
            if why:
                why = _compile(compiler, flags, lib)
            if why:
                return None, why
        except OSError as err:
            return None, f"cannot build in {lib.parent}: {err}"
    so = ctypes.CDLL(str(lib))
    so.qs_forward.argtypes = so.qs_backward.argtypes = [ctypes.POINTER(_Call)]
    so.qs_plan.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    so.qs_forward.restype = so.qs_backward.restype = so.qs_plan.restype = ctypes.c_int
    so.qs_openmp.restype = ctypes.c_int
    return so, ""


def available(n: int = 10) -> bool:
    """True when the kernel for ``n`` qubits is built (or can be) on this machine."""
    return _library(n)[0] is not None


def build_error(n: int = 10) -> str:
    """Why the kernel is not available ("" when it is)."""
    return _library(n)[1]


def openmp(n: int = 10) -> bool:
    """True when the kernel was built with OpenMP (else it runs on one thread)."""
    so = _library(n)[0]
    return so is not None and bool(so.qs_openmp())


def thread_plan(n: int, states: int, threads: int | None = None) -> tuple[int, str]:
    """(threads a call on ``states`` states of ``n`` qubits uses, "groups" | "states"):
    groups of eight states split over the threads, or every gate's amplitude pairs."""
    so = _library(n)[0]
    if so is None:
        return 1, "groups"
    shared = ctypes.c_int(0)
    used = so.qs_plan(states, threads or torch.get_num_threads(), ctypes.byref(shared))
    return used, "states" if shared.value else "groups"


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


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _i32(values) -> Tensor:
    return torch.tensor(list(values), dtype=torch.int32)


@dataclass(frozen=True)
class KernelProgram:
    """A circuit as the kernel runs it: ``prog`` (``k >= 0`` gate layer ``k``, ``-1`` the
    permutation ``new[i] = old[perm[i]]``); gate layer ``k`` is weight layer
    ``layer_of[k]`` (-1: none) times, when ``enc_of[k]``, the encoding ``RY(scale z_q)``
    (applied first). ``rotation``: rot | ry. All index tensors int32."""

    n: int
    rotation: str
    prog: Tensor
    layer_of: Tensor
    enc_of: Tensor
    perm: Tensor
    inverse: Tensor

    @classmethod
    def build(cls, n, rotation, prog, layer_of, enc_of, perm, inverse) -> KernelProgram:
        as32 = [_i32(prog), _i32(layer_of), _i32(enc_of)]
        return cls(n, rotation, *as32, perm.to(torch.int32), inverse.to(torch.int32))


def _call(program: KernelProgram, S: int, state: Tensor | None, *, readout: Tensor | None):
    """The fields every call has: the program, the input, the readout and the threads."""
    c = _Call()
    c.S, c.n, c.threads = S, program.n, torch.get_num_threads()
    c.K, c.n_ops = program.layer_of.numel(), program.prog.numel()
    c.prog, c.perm, c.inverse = _ptr(program.prog), _ptr(program.perm), _ptr(program.inverse)
    c.layer_of, c.enc_of = _ptr(program.layer_of), _ptr(program.enc_of)
    if state is None:
        c.in_kind = 0
    else:
        c.in_kind = 2 if state.is_complex() else 1
        c.in_dim, c.in_ = state.shape[-1], _ptr(state)
    if readout is not None:
        c.F, c.readout = readout.shape[-1], _ptr(readout)
    return c


_REFUSED = {
    2: "the qubit count does not match the library's",
    3: "a state's weight set (rows) is outside the angles' weight sets",
    4: "the program has encoding layers but no latent z was given",
    5: "the program names a weight layer past the angles' layers",
}


def _check(code: int) -> None:
    if code == 1:
        raise MemoryError("the CPU circuit kernel ran out of memory for its planes")
    if code:
        raise ValueError(f"the CPU circuit kernel refused the call: {_REFUSED.get(code, code)}")


def _forward(ctx, c: _Call, program, S, readout, want_probs):
    """Run the forward of call ``c``; returns (state, probs or None, obs or None)."""
    n = program.n
    out = torch.empty(S, 2**n, dtype=torch.complex64)
    probs = torch.empty(S, 2**n) if want_probs else None
    obs = torch.empty(S, readout.shape[-1]) if readout is not None else None
    c.out, c.probs, c.obs = _ptr(out), _ptr(probs), _ptr(obs)
    _check(_library(n)[0].qs_forward(ctypes.byref(c)))
    ctx.set_materialize_grads(False)
    return out, probs, obs


def _backward(c: _Call, program, out, grads, grad_in: Tensor | None) -> None:
    grad_out, grad_probs, grad_obs = grads
    if grad_out is not None:
        grad_out = grad_out.resolve_conj().contiguous()
    grad_probs = None if grad_probs is None else grad_probs.contiguous()
    grad_obs = None if grad_obs is None else grad_obs.contiguous()
    c.out = _ptr(out)
    c.grad_out, c.grad_probs, c.grad_obs = _ptr(grad_out), _ptr(grad_probs), _ptr(grad_obs)
    c.grad_in = _ptr(grad_in)
    _check(_library(program.n)[0].qs_backward(ctypes.byref(c)))


class _Layers(torch.autograd.Function):
    @staticmethod
    def forward(ctx, state, angles, z, rows, readout, program, scale, want_probs):
        S, (L, W, n, _) = rows.numel(), angles.shape
        c = _call(program, S, state, readout=readout)
        work = torch.empty(L * W * n * 8 + 2 * S * n)  # the gate table, the encoding cos/sin
        c.table, c.trig = _ptr(work), _ptr(work) + 4 * L * W * n * 8
        c.rows, c.layers, c.row_stride, c.layer_stride = W, L, 1, W
        c.row, c.angles, c.kind = _ptr(rows), _ptr(angles), ROTATIONS[program.rotation][0]
        c.enc, c.scale = _ptr(z), scale
        out, probs, obs = _forward(ctx, c, program, S, readout, want_probs)
        ctx.save_for_backward(state, angles, z, rows, readout, work, out)
        ctx.program, ctx.scale = program, scale
        return out, probs, obs

    @staticmethod
    def backward(ctx, *grads):
        state, angles, z, rows, readout, work, out = ctx.saved_tensors
        program, S, (L, W, n, _) = ctx.program, rows.numel(), angles.shape
        c = _call(program, S, state, readout=readout)
        c.table, c.trig = _ptr(work), _ptr(work) + 4 * L * W * n * 8
        c.rows, c.layers, c.row_stride, c.layer_stride = W, L, 1, W
        c.row, c.angles, c.kind = _ptr(rows), _ptr(angles), ROTATIONS[program.rotation][0]
        c.enc, c.scale = _ptr(z), ctx.scale
        need_in, need_angles, need_z = ctx.needs_input_grad[:3]
        grad_in = torch.empty_like(state) if need_in else None
        grad_angles = torch.empty_like(angles) if need_angles else None
        grad_z = torch.empty_like(z) if need_z else None
        c.grad_angles, c.grad_enc = _ptr(grad_angles), _ptr(grad_z)
        _backward(c, program, out, grads, grad_in)
        return grad_in, grad_angles, grad_z, None, None, None, None, None


def run_layers(
    state: Tensor | None,
    angles: Tensor,
    rows: Tensor,
    program: KernelProgram,
    *,
    z: Tensor | None = None,
    scale: float = 1.0,
    readout: Tensor | None = None,
    probs: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Run ``program`` on ``S = rows.numel()`` states; gate matrices from ``angles``.

    state: ``(S, d)`` float32 (real, zero-padded to ``2**n``), ``(S, 2**n)`` complex64, or
    None for ``|0..0>``; angles ``(L, W, n, P)`` float32 (P = 3 Rot, 1 RY), state ``s``
    using weight set ``rows[s]`` (int32); z ``(S, n)`` float32, the encoding angles are
    ``scale * z``; readout ``(2**n, F)`` float32. Returns the final state ``(S, 2**n)``
    complex64, its probabilities ``(S, 2**n)`` (with ``probs``) and the observables
    ``|psi|^2 @ readout`` ``(S, F)`` (with a readout), all differentiable in the state,
    the angles and z.
    """
    n = program.n
    S = rows.numel()
    if not available(n):
        raise RuntimeError(f"the CPU circuit kernel is not available: {build_error(n)}")
    for name, t in (("angles", angles), ("z", z), ("readout", readout)):
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            raise TypeError(f"the CPU kernel takes float32 CPU {name}, got {t.dtype} on {t.device}")
    if (
        angles.dim() != 4
        or angles.shape[2] != n
        or angles.shape[3] != ROTATIONS[program.rotation][1]
    ):
        raise ValueError(
            f"angles {tuple(angles.shape)} do not fit {n} qubits of {program.rotation}"
        )
    if state is not None:
        if state.dtype not in (torch.float32, torch.complex64) or state.shape[0] != S:
            raise ValueError(f"state {tuple(state.shape)} {state.dtype} does not fit {S} states")
        if state.shape[-1] > 2**n or (state.is_complex() and state.shape[-1] != 2**n):
            raise ValueError(f"state {tuple(state.shape)} does not fit {n} qubits")
        state = state.resolve_conj().contiguous()
    if z is not None and tuple(z.shape) != (S, n):
        raise ValueError(f"z {tuple(z.shape)} does not fit {S} states of {n} qubits")
    if readout is not None and (readout.dim() != 2 or readout.shape[0] != 2**n):
        raise ValueError(f"readout {tuple(readout.shape)} does not fit {n} qubits: (2**n, F)")
    return _Layers.apply(
        state,
        angles.contiguous(),
        None if z is None else z.contiguous(),
        rows.to(torch.int32).contiguous(),
        None if readout is None else readout.contiguous(),
        program,
        float(scale),
        probs,
    )


class _Gates(torch.autograd.Function):
    @staticmethod
    def forward(ctx, state, gates, program):
        S, K, n = gates.shape[:3]
        c = _call(program, S, state, readout=None)
        c.table, c.rows, c.layers, c.row_stride, c.layer_stride = _ptr(gates), S, K, K, 1
        out, probs, _ = _forward(ctx, c, program, S, None, True)
        ctx.save_for_backward(state, gates, out)
        ctx.program = program
        return out, probs

    @staticmethod
    def backward(ctx, grad_out, grad_probs):
        state, gates, out = ctx.saved_tensors
        S, K, n = gates.shape[:3]
        c = _call(ctx.program, S, state, readout=None)
        c.table, c.rows, c.layers, c.row_stride, c.layer_stride = _ptr(gates), S, K, K, 1
        grad_in = torch.empty_like(state) if ctx.needs_input_grad[0] else None
        grad_gates = torch.empty_like(gates)
        c.grad_table = _ptr(grad_gates)
        _backward(c, ctx.program, out, (grad_out, grad_probs, None), grad_in)
        return grad_in, grad_gates, None


def run_circuit(
    state: Tensor, gates: Tensor, prog: list[int], perm: Tensor, inverse: Tensor
) -> tuple[Tensor, Tensor]:
    """Run ``prog`` (``k >= 0``: gate layer ``k``; ``-1``: the permutation) on ``state``
    ``(S, 2**n)`` (complex64, or float32 for a real input) with unitary ``gates``
    ``(S, K, n, 2, 2)`` complex64, one matrix per state, layer and qubit.

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
    k = gates.shape[1]
    program = KernelProgram.build(n, "rot", prog, range(k), [0] * k, perm, inverse)
    real = torch.view_as_real(gates.resolve_conj().contiguous())  # (S, K, n, 2, 2, 2) float
    out, probs = _Gates.apply(state.resolve_conj().contiguous(), real, program)
    return out, probs

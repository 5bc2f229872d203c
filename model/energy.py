"""Energy of one inference of the PQC head: a trapped-ion QPU versus exact GPU simulation.

    from model.energy import EnergyParams, crossover_qubits, inference_energy
    inference_energy(TrialConfig(qubits=46))   # {"qpu_energy_j": ..., "gpu_energy_j": ...}
    crossover_qubits(TrialConfig())            # 46 with the defaults (the paper's figure)

The paper (Kim et al. 2025, arXiv 2504.08732) gives the constants but not the formula;
this module is a transparent model of it. Every constant is a field of
:class:`EnergyParams`. Scope: the parametrised quantum circuit (PQC) of the head only.
The simulated quantum encoder (sQE) and the final linear layer run classically in both
scenarios, so they cancel out of the comparison and are left out.

Gate counts (q qubits, R re-uploads, N re-uploading layers, M main layers)::

    n_1q = q*R              angle encoding, one RY per qubit per upload
         + q*(R*N + M)      trainable rotations, one per qubit per layer
    n_2q = q*(R*N + M)      one CNOT per qubit per entangling layer (ring i -> i+C); 0 if q = 1

A ``rot`` gate RZ.RY.RZ counts as ONE 1-qubit gate: on trapped ions the Z rotations are
virtual (phase tracking), on a GPU it is one fused 2x2 matrix. ``ry`` counts the same.

QPU (per inference = ``shots`` repetitions; all q Pauli-Z values come from the same shots)::

    t_shot = L_1q*t_1q + n_2q*t_2q + t_overhead    L_1q = R + R*N + M layers of 1-qubit gates
                                                   (parallel across ions; serial: n_1q*t_1q)
    E_qpu  = P_qubit * q * shots * t_shot

Two-qubit (Molmer-Sorensen) gates share the ions' motional bus, so they run one after
another; single-qubit gates address ions individually and run a layer at a time.

GPU (exact statevector, one run per inference, no shots)::

    flops  = 2^q * (n_1q*f_1q + n_2q*f_2q + 3 + n_read)
    n_gpu  = ceil(bytes_per_amplitude * 2^q / gpu_memory)
    t_gpu  = flops / (n_gpu * peak * efficiency)   [max'ed with the bandwidth bound if set]
    E_gpu  = t_gpu * n_gpu * P_gpu

f_1q = 14 real FLOPs per amplitude: a dense 2x2 complex matrix on each amplitude pair is
4 complex multiplications (6 FLOPs) + 2 complex additions (2 FLOPs) = 28 per pair.
f_2q = 30: a dense 4x4 on each group of 4 amplitudes, 16 mult + 12 add = 120 per group
(a simulator that treats CNOT as a permutation does no FLOPs but is then bound by memory
bandwidth; set ``gpu_bandwidth_tb_s`` to model that). The readout is |a|^2 (3 FLOPs per
amplitude) plus one signed addition per amplitude for each of the ``n_read`` measured
qubits (q with the final linear layer, else 1). A state that does not fit one GPU is
split over ``n_gpu`` GPUs: power multiplies by ``n_gpu``, time divides by it (ideal
scaling, communication ignored), so the GPU energy is a lower bound.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from model.config import TrialConfig
from model.errors import ConfigError
from model.heads.registry import QUANTUM_HEADS

__all__ = [
    "EnergyParams",
    "gate_counts",
    "inference_energy",
    "energy_table",
    "crossover_qubits",
]


def _param(default: float | int | bool, help: str) -> Any:
    """A dataclass field whose help text (with unit) the CLI shows."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class EnergyParams:
    """Constants of the QPU and GPU energy model (defaults: the paper's table)."""

    # --- QPU (trapped ions, IonQ Aria gate times) ---------------------------------
    shots: int = _param(8000, "circuit repetitions per inference")
    qubit_power_w: float = _param(300.0, "QPU power per qubit, W (paper's table)")
    t1q_us: float = _param(135.0, "time of a single-qubit gate, us")
    t2q_us: float = _param(600.0, "time of a two-qubit gate, us")
    t_shot_overhead_us: float = _param(0.0, "readout + reset per shot, us (not in the paper)")
    parallel_1q: bool = _param(True, "single-qubit gates of a layer run at once (else serially)")
    # --- GPU (NVIDIA H100 SXM, FP64) ----------------------------------------------
    gpu_tflops: float = _param(34.0, "GPU peak, TFLOP/s (H100 FP64; 67 with tensor cores)")
    gpu_efficiency: float = _param(1.0, "achieved share of the GPU peak, 0..1")
    gpu_power_w: float = _param(700.0, "power per GPU, W")
    gpu_memory_gb: float = _param(80.0, "memory per GPU, GB (1e9 bytes)")
    bytes_per_amplitude: int = _param(16, "16 for complex128, 8 for complex64")
    flops_1q: float = _param(14.0, "real FLOPs per amplitude of a dense 2x2 complex gate")
    flops_2q: float = _param(30.0, "real FLOPs per amplitude of a dense 4x4 complex gate")
    gpu_bandwidth_tb_s: float = _param(
        0.0, "GPU memory bandwidth, TB/s (H100: 3.35); 0 = FLOP-bound only"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"energy.{f.name} = {value!r} is not a boolean.")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"energy.{f.name} = {value!r} is not a number.")
            if f.type in ("int", int) and not isinstance(value, int):
                raise ConfigError(f"energy.{f.name} = {value!r} is not an integer.")
            if not math.isfinite(value):
                raise ConfigError(f"energy.{f.name} = {value!r} must be finite.")
            zero_ok = f.name in ("t_shot_overhead_us", "gpu_bandwidth_tb_s", "flops_1q", "flops_2q")
            if value < 0 or (value == 0 and not zero_ok):
                allowed = ">= 0" if zero_ok else "> 0"
                raise ConfigError(
                    f"energy.{f.name} = {value!r} is not allowed; it must be {allowed}."
                )
        if self.gpu_efficiency > 1.0:
            raise ConfigError(
                f"energy.gpu_efficiency = {self.gpu_efficiency!r} is not allowed; "
                "it is a share of the peak: 0 < efficiency <= 1."
            )

    def replace(self, **changes: float) -> EnergyParams:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _check_quantum(config: TrialConfig) -> None:
    if not config.is_quantum:
        raise ConfigError(
            f"trial.head = {config.head!r} has no quantum circuit; energy estimates apply to "
            f"the heads with a PQC: {', '.join(QUANTUM_HEADS)}."
        )


def _check_qubits(qubits: int) -> None:
    if isinstance(qubits, bool) or not isinstance(qubits, int) or qubits < 1:
        raise ConfigError(f"qubits = {qubits!r} is not allowed; it must be an integer >= 1.")


def gate_counts(config: TrialConfig, qubits: int | None = None) -> dict[str, int]:
    """Gates of the head's PQC for ``qubits`` (default ``config.qubits``; may exceed 26).

    Returns ``n_1q_gates``, ``n_2q_gates``, ``n_1q_layers`` (R + R*N + M),
    ``n_entangling_layers`` (R*N + M) and ``depth`` (1-qubit layers + all CNOTs, one after
    another as an ion trap runs them; with C = 1 the ring's CNOTs share qubits anyway).
    """
    _check_quantum(config)
    q = config.qubits if qubits is None else qubits
    _check_qubits(q)
    trainable_layers = config.reuploads * config.reupload_layers + config.main_layers
    n_1q_layers = config.reuploads + trainable_layers
    cnots_per_layer = q if q > 1 else 0
    n_2q = trainable_layers * cnots_per_layer
    return {
        "n_1q_gates": q * n_1q_layers,
        "n_2q_gates": n_2q,
        "n_1q_layers": n_1q_layers,
        "n_entangling_layers": trainable_layers,
        "depth": n_1q_layers + n_2q,
    }


def inference_energy(
    config: TrialConfig, params: EnergyParams = EnergyParams(), *, qubits: int | None = None
) -> dict[str, float]:
    """Energy (J) and time (s) of classifying ONE input on a QPU and by GPU simulation.

    Quantum heads (``quantum``, ``mlp_encoder``) get the keys ``qpu_energy_j``,
    ``gpu_energy_j``, ``qpu_time_s``, ``gpu_time_s``, ``gpu_to_qpu_energy``,
    ``n_1q_gates``, ``n_2q_gates``, ``depth``, ``n_gpus``, ``gpu_flops``. Classical heads
    (mlp, logreg, svc) have no circuit and get ``{}``.
    """
    if not config.is_quantum:
        return {}
    q = config.qubits if qubits is None else qubits
    gates = gate_counts(config, q)
    n_1q, n_2q = gates["n_1q_gates"], gates["n_2q_gates"]

    # QPU: one shot is one run of the circuit; the per-qubit power covers the whole machine.
    t1q, t2q, t_over = params.t1q_us * 1e-6, params.t2q_us * 1e-6, params.t_shot_overhead_us * 1e-6
    time_1q = gates["n_1q_layers"] * t1q if params.parallel_1q else n_1q * t1q
    t_shot = time_1q + n_2q * t2q + t_over  # s
    qpu_time = params.shots * t_shot
    qpu_energy = params.qubit_power_w * q * qpu_time

    # GPU: exact statevector, every gate touches all 2^q amplitudes.
    amplitudes = 2.0**q
    n_read = q if config.final_linear else 1
    flops = amplitudes * (n_1q * params.flops_1q + n_2q * params.flops_2q + 3 + n_read)
    n_gpus = max(
        1, math.ceil(params.bytes_per_amplitude * amplitudes / (params.gpu_memory_gb * 1e9))
    )
    gpu_time = flops / (n_gpus * params.gpu_tflops * 1e12 * params.gpu_efficiency)
    if params.gpu_bandwidth_tb_s > 0:
        # every gate reads and writes the state once; the readout reads it once
        moved = params.bytes_per_amplitude * amplitudes * (2 * (n_1q + n_2q) + 1)
        gpu_time = max(gpu_time, moved / (n_gpus * params.gpu_bandwidth_tb_s * 1e12))
    gpu_energy = gpu_time * n_gpus * params.gpu_power_w

    return {
        "qpu_energy_j": qpu_energy,
        "gpu_energy_j": gpu_energy,
        "qpu_time_s": qpu_time,
        "gpu_time_s": gpu_time,
        "gpu_to_qpu_energy": gpu_energy / qpu_energy,
        "n_1q_gates": float(n_1q),
        "n_2q_gates": float(n_2q),
        "depth": float(gates["depth"]),
        "n_gpus": float(n_gpus),
        "gpu_flops": flops,
    }


def energy_table(
    config: TrialConfig, qubits: range, params: EnergyParams = EnergyParams()
) -> list[dict[str, float]]:
    """One :func:`inference_energy` row per register size, each with a ``qubits`` key."""
    _check_quantum(config)
    return [{"qubits": q, **inference_energy(config, params, qubits=q)} for q in qubits]


def crossover_qubits(
    config: TrialConfig, params: EnergyParams = EnergyParams(), qubits: range = range(2, 80)
) -> int | None:
    """Smallest register size in ``qubits`` where GPU simulation costs >= the QPU; None if none."""
    _check_quantum(config)
    for q in qubits:
        row = inference_energy(config, params, qubits=q)
        if row["gpu_energy_j"] >= row["qpu_energy_j"]:
            return q
    return None

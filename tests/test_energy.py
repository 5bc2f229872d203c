"""Energy model: hand-counted gates and energies, monotonicity, the paper's crossover, the CLI."""

from __future__ import annotations

import json
import math

import pytest

from model.config import TrialConfig
from model.energy import (
    EnergyParams,
    crossover_qubits,
    energy_table,
    gate_counts,
    inference_energy,
)
from model.errors import ConfigError
from orchestrator.cli import main
from orchestrator.commands.energy import parse_qubit_range

PAPER = TrialConfig()  # R=4, N=1, M=2, C=1, Rot gates


def _circuit(q: int, r: int, n: int, m: int) -> list[tuple[str, tuple[int, ...]]]:
    """The PQC written out gate by gate: uploads with N layers each, then M main layers."""
    gates: list[tuple[str, tuple[int, ...]]] = []

    def layer() -> None:
        gates.extend(("rot", (i,)) for i in range(q))
        if q > 1:
            gates.extend(("cnot", (i, (i + 1) % q)) for i in range(q))

    for _ in range(r):
        gates.extend(("ry", (i,)) for i in range(q))
        for _ in range(n):
            layer()
    for _ in range(m):
        layer()
    return gates


def test_gate_counts_small_config_by_hand():
    # q=3, R=2, N=1, M=1: 2 uploads x 3 RY = 6; 3 trainable layers x 3 Rot = 9 -> 15 one-qubit;
    # 3 entangling layers x 3 CNOTs (ring) = 9 two-qubit.
    config = TrialConfig(qubits=3, reuploads=2, reupload_layers=1, main_layers=1)
    counts = gate_counts(config)
    assert counts["n_1q_gates"] == 15
    assert counts["n_2q_gates"] == 9
    assert counts["n_1q_layers"] == 5
    assert counts["depth"] == 5 + 9


@pytest.mark.parametrize("q,r,n,m", [(1, 3, 2, 1), (2, 1, 0, 3), (5, 4, 1, 2), (7, 2, 3, 0)])
def test_gate_counts_match_written_out_circuit(q, r, n, m):
    config = TrialConfig(qubits=q, reuploads=r, reupload_layers=n, main_layers=m)
    gates = _circuit(q, r, n, m)
    counts = gate_counts(config)
    assert counts["n_1q_gates"] == sum(len(w) == 1 for _, w in gates)
    assert counts["n_2q_gates"] == sum(len(w) == 2 for _, w in gates)


@pytest.mark.parametrize(
    "q,r,n,m,c", [(1, 2, 1, 1, 1), (2, 4, 1, 2, 1), (6, 3, 2, 1, 2), (10, 4, 1, 2, 1)]
)
def test_gate_counts_match_the_simulated_pqc(q, r, n, m, c):
    circuits = pytest.importorskip("model.quantum.circuits")
    config = TrialConfig(qubits=q, reuploads=r, reupload_layers=n, main_layers=m, connectivity=c)
    spec = circuits.pqc_spec(config)
    kinds = [op.kind for op in spec.ops]
    counts = gate_counts(config)
    assert counts["n_1q_gates"] == q * (kinds.count("encode") + kinds.count("rotate"))
    assert counts["n_2q_gates"] == kinds.count("entangle") * len(spec.pairs)


def test_inference_energy_small_config_by_hand():
    config = TrialConfig(qubits=3, reuploads=2, reupload_layers=1, main_layers=1)
    out = inference_energy(config)
    # QPU: 5 one-qubit layers x 135 us + 9 CNOTs x 600 us = 6075 us per shot, 8000 shots.
    assert out["qpu_time_s"] == pytest.approx(8000 * 6075e-6)
    assert out["qpu_energy_j"] == pytest.approx(300 * 3 * 8000 * 6075e-6)
    # GPU: 2^3 amplitudes x (15 x 14 + 9 x 30 + 3 + 3 readout) FLOPs at 34 TFLOP/s, 700 W.
    flops = 8 * (15 * 14 + 9 * 30 + 3 + 3)
    assert out["gpu_flops"] == pytest.approx(flops)
    assert out["gpu_time_s"] == pytest.approx(flops / 34e12)
    assert out["gpu_energy_j"] == pytest.approx(flops / 34e12 * 700)
    assert out["n_gpus"] == 1
    serial = inference_energy(config, EnergyParams(parallel_1q=False))
    assert serial["qpu_time_s"] == pytest.approx(8000 * (15 * 135 + 9 * 600) * 1e-6)


def test_gpus_needed_from_memory_and_energy_independent_of_split():
    # complex128: 2^32 * 16 B = 68.7 GB fits one 80 GB GPU; 2^33 needs two.
    assert inference_energy(PAPER, qubits=32)["n_gpus"] == 1
    assert inference_energy(PAPER, qubits=33)["n_gpus"] == 2
    assert inference_energy(PAPER, EnergyParams(bytes_per_amplitude=8), qubits=33)["n_gpus"] == 1
    for q in (30, 40, 50):
        out = inference_energy(PAPER, qubits=q)
        # ideal split: n GPUs for 1/n of the time -> energy = FLOPs / peak * power
        assert out["gpu_energy_j"] == pytest.approx(out["gpu_flops"] / 34e12 * 700)
        assert out["gpu_time_s"] == pytest.approx(out["gpu_flops"] / 34e12 / out["n_gpus"])


def test_energies_grow_with_qubits():
    rows = energy_table(PAPER, range(2, 61))
    for prev, nxt in zip(rows, rows[1:], strict=False):
        assert nxt["qpu_energy_j"] > prev["qpu_energy_j"]
        assert nxt["gpu_energy_j"] > prev["gpu_energy_j"]
    # the GPU doubles per qubit (times a slowly growing gate count); the QPU grows ~ q^2
    ratio = rows[-1]["gpu_energy_j"] / rows[-2]["gpu_energy_j"]
    assert 2.0 < ratio < 2.1


def test_paper_ansatz_crosses_over_near_46_qubits():
    q = crossover_qubits(PAPER)
    assert q is not None and 44 <= q <= 48
    before, at = (inference_energy(PAPER, qubits=k) for k in (q - 1, q))
    assert before["gpu_energy_j"] < before["qpu_energy_j"]
    assert at["gpu_energy_j"] >= at["qpu_energy_j"]


@pytest.mark.parametrize(
    "change,direction",
    [
        ({"shots": 80000}, +1),  # more shots: the QPU costs more -> later crossover
        ({"qubit_power_w": 3000.0}, +1),
        ({"t2q_us": 6000.0}, +1),
        ({"gpu_tflops": 3.4}, -1),  # slower GPU -> earlier crossover
        ({"gpu_power_w": 7000.0}, -1),
        ({"gpu_efficiency": 0.1}, -1),
        ({"gpu_bandwidth_tb_s": 3.35}, -1),  # memory-bound simulation is slower
        ({"shots": 1000}, -1),
    ],
)
def test_changed_constant_moves_crossover(change, direction):
    base = crossover_qubits(PAPER)
    moved = crossover_qubits(PAPER, EnergyParams(**change))
    assert moved is not None
    assert (moved - base) * direction > 0


def test_crossover_none_when_range_too_small():
    assert crossover_qubits(PAPER, qubits=range(2, 20)) is None


def test_classical_heads_have_no_energy_and_mlp_encoder_has():
    for head in ("mlp", "logreg", "svc"):
        assert inference_energy(TrialConfig(head=head)) == {}
    assert inference_energy(TrialConfig(head="mlp_encoder"))["qpu_energy_j"] > 0
    with pytest.raises(ConfigError, match="mlp"):
        crossover_qubits(TrialConfig(head="mlp"))


@pytest.mark.parametrize(
    "change,name",
    [
        ({"shots": 0}, "shots"),
        ({"gpu_efficiency": 1.5}, "gpu_efficiency"),
        ({"t1q_us": -1.0}, "t1q_us"),
        ({"shots": 10.5}, "shots"),
    ],
)
def test_bad_params_name_the_field(change, name):
    with pytest.raises(ConfigError, match=f"energy.{name}"):
        EnergyParams(**change)


def test_parse_qubit_range():
    assert parse_qubit_range("40:50") == range(40, 51)
    assert parse_qubit_range("10:60:10") == range(10, 61, 10)
    assert parse_qubit_range("12") == range(12, 13)
    for bad in ("50:40", "0:5", "a:b", "1:2:3:4", "5:9:0"):
        with pytest.raises(ConfigError, match=bad):
            parse_qubit_range(bad)


def test_cli_prints_table_and_crossover(capsys):
    assert main(["energy", "--qubits", "40:50"]) == 0
    out = capsys.readouterr().out
    expected = crossover_qubits(PAPER)
    assert f"from {expected} qubits on" in out
    table = [line.split() for line in out.splitlines() if line.strip()[:2].isdigit()]
    assert [int(row[0]) for row in table] == list(range(40, 51))


def test_cli_bad_range_names_value(capsys):
    assert main(["energy", "--qubits", "50:40"]) == 2
    err = capsys.readouterr().err
    assert "50:40" in err and "Traceback" not in err


def test_cli_bad_constant_names_option(capsys):
    assert main(["energy", "--shots", "-5"]) == 2
    assert "--shots" in capsys.readouterr().err


def test_cli_config_set_and_json(tmp_path, capsys):
    spec = tmp_path / "study.yaml"
    spec.write_text(
        "name: demo\nfixed:\n  reuploads: 2\n  main_layers: 1\nsearch:\n  qubits: [4, 6]\n"
    )
    out = tmp_path / "out" / "energy.json"
    argv = ["energy", "--qubits", "10:30:10", "--config", str(spec), "--set", "rotation=ry"]
    argv += ["--shots", "1000", "--no-parallel-1q", "--json", str(out)]
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    config = TrialConfig(reuploads=2, main_layers=1, rotation="ry")
    params = EnergyParams(shots=1000, parallel_1q=False)
    assert payload["config"] == config.to_dict()
    assert [row["qubits"] for row in payload["rows"]] == [10, 20, 30]
    for row in payload["rows"]:
        want = inference_energy(config, params, qubits=int(row["qubits"]))
        assert math.isclose(row["qpu_energy_j"], want["qpu_energy_j"])
        assert math.isclose(row["gpu_energy_j"], want["gpu_energy_j"])
    assert payload["crossover_qubits"] == crossover_qubits(config, params, range(1, 200))


def test_cli_config_uses_the_trials_shots_and_marks_its_qubits(tmp_path, capsys):
    spec = tmp_path / "study.yaml"
    spec.write_text("name: s\nfixed: {shots: 8192, qubits: 10}\nfactors: {}\n")
    out = tmp_path / "e.json"
    argv = ["energy", "--config", str(spec), "--set", "qubits=12", "--qubits", "40:41"]
    assert main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert payload["params"]["shots"] == 8192 and "8192 shots (the trial's shots)" in text
    assert [row["qubits"] for row in payload["rows"]] == [12, 40, 41]  # the trial's size added
    want = inference_energy(TrialConfig(shots=8192, qubits=12), EnergyParams(shots=8192), qubits=12)
    assert math.isclose(payload["rows"][0]["qpu_energy_j"], want["qpu_energy_j"])
    trial_line = next(line for line in text.splitlines() if line.split()[:1] == ["12"])
    assert trial_line.endswith("<- the trial")
    # --shots still wins; a trial without shots says the QPU count is the model's default
    assert main([*argv, "--shots", "1000", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["params"]["shots"] == 1000
    assert "1000 shots (--shots)" in capsys.readouterr().out
    assert main(["energy", "--set", "qubits=12", "--qubits", "40:41"]) == 0
    text = capsys.readouterr().out
    assert "8000 shots (the energy model's default)" in text  # --set qubits: not the shots
    assert "<- the trial" in text
    assert main(["energy", "--set", "shots=4096", "--qubits", "40"]) == 0
    assert "4096 shots (the trial's shots)" in capsys.readouterr().out
    spec.write_text("name: s\nfixed: {qubits: 10}\nfactors: {}\n")  # a trial without shots
    assert main(["energy", "--config", str(spec), "--qubits", "40"]) == 0
    text = capsys.readouterr().out
    assert "8000 shots (the energy model's default; the trial simulates exact" in text


def test_cli_config_unknown_key_names_it(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("trial:\n  reuplods: 2\n")
    assert main(["energy", "--config", str(spec)]) == 2
    assert "reuplods" in capsys.readouterr().err
    assert main(["energy", "--set", "qubits"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["energy", "--set", "head=svc"]) == 2
    assert "trial.head = 'svc'" in capsys.readouterr().err

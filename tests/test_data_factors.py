"""Data factors (``data.encoder``, ``data.split_seed``, ``data.n_per_class``): the spec,
the pack plan, embedding each encoder once, resume identity, and a real study on the
demo set with two tiny local encoders and two split seeds on a real local Ray."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from model.config import DataConfig
from model.errors import ConfigError
from orchestrator.packing import plan_packs
from orchestrator.results import data_columns, same_data
from orchestrator.spec import DATA_FACTORS, data_key, spec_from_dict
from tests.encoders import TINY_DIM, build_tiny_encoder

ROOT = Path(__file__).resolve().parents[1]


def _doc(**kw):
    doc = {
        "name": "datafactors",
        "data": {"source": "demo", "n_per_class": 8},
        "fixed": {"head": "mlp", "epochs": 2, "batch_size": 8, "device": "cpu"},
        "factors": {
            "data.encoder": ["enc_a", "enc_b"],
            "data.split_seed": [0, 1],
            "learning_rate": [0.01, 0.1],
        },
        "seeds": [0, 1],
    }
    doc.update(kw)
    return doc


# --- spec and plan (no Ray, no model) ------------------------------------------------
def test_data_factors_set_the_data_of_each_planned_trial():
    spec = spec_from_dict(_doc())
    planned = spec.planned_trials()
    assert len(planned) == 2 * 2 * 2 * 2
    assert spec.data_factors == ["data.encoder", "data.split_seed"]
    settings = spec.data_settings()
    assert [(d.encoder, d.split_seed) for d in settings] == [
        ("enc_a", 0), ("enc_a", 1), ("enc_b", 0), ("enc_b", 1)
    ]  # fmt: skip
    assert all(d.n_per_class == 8 and d.source == "demo" for d in settings)
    p = planned[0]
    assert (p.data.encoder, p.data.split_seed, p.config.learning_rate) == ("enc_a", 0, 0.01)
    assert "data.encoder" not in p.config.to_dict()
    # trials of different data settings never share a pack; packable ones do
    packs = plan_packs(planned, 8)
    assert len(packs) == 4 and all(len({m.data for m in pk.members}) == 1 for pk in packs)


def test_data_factor_errors_name_the_allowed_data_factors():
    for factors, match in (
        (
            {"data.protocol": ["paper", "splits"]},
            "allowed data factors: " + ", ".join(DATA_FACTORS),
        ),
        ({"encoder_data": [1, 2]}, "data.encoder, data.split_seed, data.n_per_class"),
        ({"data.split_seed": {"low": 0, "high": 3}}, "a data factor needs a list of levels"),
        ({"data.n_per_class": [8, -1]}, "n_per_class = -1"),
        ({"data.split_seed": [1, 1]}, "repeats a level"),
    ):
        with pytest.raises(ConfigError, match=match):
            spec_from_dict(_doc(factors=factors, data={"source": "demo"}))
    with pytest.raises(ConfigError, match="both in data and in factors"):
        spec_from_dict(_doc(data={"source": "demo", "split_seed": 3}))


@pytest.mark.parametrize(
    "search", [{"kind": "fracfact"}, {"kind": "pb"}, {"kind": "lhs", "samples": 6, "seed": 1}]
)
def test_designs_accept_data_factors(search):
    factors = {
        "data.encoder": ["enc_a", "enc_b"],
        "data.n_per_class": [8, 16],
        "learning_rate": [0.01, 0.1],
        "hidden": [4, 8],
    }
    spec = spec_from_dict(_doc(factors=factors, search=search, data={"source": "demo"}))
    planned = spec.planned_trials()
    assert planned and {p.data.encoder for p in planned} <= {"enc_a", "enc_b"}
    assert {p.data.n_per_class for p in planned} <= {8, 16}
    assert len(spec.data_settings()) == len({p.data for p in planned})


def test_optuna_plans_every_data_setting_up_front():
    spec = spec_from_dict(
        _doc(
            factors={
                "data.split_seed": [0, 1, 2],
                "learning_rate": {"low": 1e-3, "high": 1e-1, "log": True},
            },
            search={"kind": "optuna", "trials": 4},
        )
    )
    assert [d.split_seed for d in spec.data_settings()] == [0, 1, 2]
    cfg = spec.trial_config({"data.split_seed": 1, "learning_rate": 0.01}, 0)
    assert cfg.learning_rate == 0.01


def test_resume_identity_includes_the_data_setting():
    data = DataConfig(source="demo", encoder="enc_a", split_seed=1, n_per_class=8)
    row = data_columns(data, "/abs/enc_a")
    assert row == {"data.encoder": "enc_a", "data.encoder_id": "/abs/enc_a",
                   "data.split_seed": 1, "data.n_per_class": 8}  # fmt: skip
    assert same_data(row, data)
    assert not same_data(row, data.replace(encoder="enc_b"))
    assert not same_data(row, data.replace(split_seed=2))
    assert same_data({}, data)  # rows from before data columns: not rerun
    assert data_key(data) != data_key(data.replace(n_per_class=16))


def test_shipped_encoders_x_qubits_dry_run_shows_the_embedding_work(capsys, tmp_path, monkeypatch):
    from orchestrator.cli import main

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # SST-2 from the hub is not cached

    space = ROOT / "search_spaces" / "encoders_x_qubits.yaml"
    mpnet = "sentence-transformers/all-mpnet-base-v2"
    code = main(["run", str(space), "--dry-run", "--results", str(tmp_path / "r"),
                 "--encoder-path", f"{mpnet}={tmp_path}/mpnet"])  # fmt: skip
    out, err = capsys.readouterr()
    # offline here: the plan is printed, then why the run would fail (exit 2)
    assert code == 2 and not (tmp_path / "r").exists()
    assert "data.source hf:SetFit/sst2" in err and f"{tmp_path}/mpnet" in err
    assert "2 encoder load(s), one per encoder" in out
    assert f"{mpnet} (from {tmp_path}/mpnet): 768-d" in out and "minilm: 384-d" in out
    assert (
        "data settings: 6" in out and f"{mpnet} | split_seed=2 | n_per_class=256: 4 trials" in out
    )
    assert "= 24" in out and "before it, embedding ~" in out and "warning" not in out
    # --encoder cannot override a factor; --encoder-path names must be encoders of the study
    assert main(["run", str(space), "--dry-run", "--encoder", "minilm"]) == 2
    assert "--encoder-path NAME=DIR instead" in capsys.readouterr().err
    assert main(["run", str(space), "--dry-run", "--encoder-path", "other=/x"]) == 2
    assert "not an encoder of this study" in capsys.readouterr().err


def test_dry_run_warns_when_qubits_cannot_encode_the_width(capsys, tmp_path, monkeypatch):
    from orchestrator.cli import main

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # SST-2 from the hub is not cached

    space = tmp_path / "narrow.yaml"
    space.write_text(
        "name: narrow\nfixed: {head: quantum, epochs: 1}\n"
        "factors: {data.encoder: [minilm, sentence-transformers/all-mpnet-base-v2], qubits: [9]}\n"
    )
    assert main(["run", str(space), "--dry-run"]) == 2  # offline: the hub's data, mpnet
    out = capsys.readouterr().out
    assert "warning: 1 trials with qubits=9, encoders=1 cannot amplitude-encode the 768-d" in out
    assert "384-d vectors" not in out


# --- embedding: each encoder loaded once (real tiny encoders, demo set) --------------
@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return build_tiny_encoder(root / "tiny_a", seed=0), build_tiny_encoder(root / "tiny_b", seed=1)


def _count_loads(monkeypatch) -> list[str]:
    import model.embeddings as embeddings

    loads: list[str] = []
    real = embeddings._load_model

    def counting(source, device):
        loads.append(str(source))
        return real(source, device)

    monkeypatch.setattr(embeddings, "_load_model", counting)
    return loads


def test_embed_settings_loads_each_encoder_once(tiny_encoders, tmp_path, monkeypatch):
    from model.embeddings import embed_settings

    loads = _count_loads(monkeypatch)
    a, b = (str(p) for p in tiny_encoders)
    cfgs = [
        DataConfig(
            source="demo", n_per_class=8, encoder=enc, split_seed=seed, cache_dir=str(tmp_path)
        )
        for enc in (a, b)
        for seed in (0, 1)
    ]
    out = dict(embed_settings(cfgs, progress=False))
    assert sorted(loads) == sorted(str(Path(p).resolve()) for p in (a, b))
    assert len(out) == 4
    for cfg, emb in out.items():
        assert emb.dim == TINY_DIM and emb.encoder == str(Path(cfg.encoder).resolve())
        assert emb.sizes()["train"] + emb.sizes()["val"] == 16
    # the split seed changes the draw, not the vectors of a sentence
    s0, s1 = out[cfgs[0]], out[cfgs[1]]
    assert not (s0.y_train == s1.y_train).all() or not (s0.x_train == s1.x_train).all()
    # a second study finds every text in the cache: no load at all
    loads.clear()
    dict(embed_settings(cfgs, progress=False))
    assert loads == []


# --- a real study on a local Ray ------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_study_over_two_encoders_and_two_split_seeds(
    ray_session, tiny_encoders, tmp_path, monkeypatch
):
    from mlflow.tracking import MlflowClient

    from orchestrator.report import build_report
    from orchestrator.report.effects import anova
    from orchestrator.report.study import load_study
    from orchestrator.results import ResultsTable
    from orchestrator.tune_driver import run_study

    a, b = (str(p) for p in tiny_encoders)
    spec = spec_from_dict(
        _doc(
            data={"source": "demo", "n_per_class": 8, "cache_dir": str(tmp_path / "cache")},
            fixed={
                "head": "quantum", "epochs": 2, "batch_size": 8, "device": "cpu",
                "encoder_layers": 1, "reuploads": 1, "main_layers": 1,
            },
            factors={"data.encoder": [a, b], "data.split_seed": [0, 1], "qubits": [4, 5]},
            seeds=[0],
            pack_size=1,
        )
    )  # fmt: skip
    loads = _count_loads(monkeypatch)
    study = tmp_path / "study"
    outcome = run_study(spec, study_dir=study, stream=io.StringIO(), max_concurrent=2)
    assert len(loads) == 2  # each encoder embedded once for its two split seeds
    df = pd.read_parquet(study / "trials.parquet").set_index("trial_id")
    assert (outcome.ran, len(df)) == (8, 8)
    for tid, p in {p.trial_id: p for p in spec.planned_trials()}.items():
        row = df.loc[tid]
        assert row["data.encoder"] == p.data.encoder and row["data.split_seed"] == p.data.split_seed
        assert row["data.n_per_class"] == 8 and row["data.encoder_id"] == str(
            Path(p.data.encoder).resolve()
        )
        assert row.qubits == p.config.qubits
    # 32-d inputs do not fit 4 qubits (16 amplitudes): a failed row with the clear error
    small = df[df.qubits == 4]
    assert (small.status == "failed").all() and (small.attempts == 1).all()
    assert small.error.str.contains("too small to amplitude-encode 32 values").all()
    assert (df[df.qubits == 5].status == "completed").all()
    client = MlflowClient(tracking_uri=outcome.tracking_uri)
    exp = client.get_experiment_by_name("datafactors")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    params = {r.info.run_name: r.data.params for r in runs}
    assert params["p000_s0"]["data.encoder"] == a and params["p000_s0"]["data.split_seed"] == "0"
    assert params["p007_s0"]["data.encoder"] == b and params["p007_s0"]["data.n_per_class"] == "8"

    # the report analyses the data factors like any other
    data = load_study(study, metric="val_accuracy")
    assert "data.encoder" in data.factors and "data.split_seed" in data.factors
    table, _ = anova(data.analysed, data.factors, "val_accuracy")
    assert "data.encoder" in set(table["source"])
    build_report(study, metric="val_accuracy")
    text = (study / "report" / "report.md").read_text()
    assert "resampling of the training data" in text

    # resume reruns only the dropped (encoder b, split seed 1) trials, from the cache
    table_ = ResultsTable(study / "trials.parquet", study="datafactors")
    dropped = [t for t, r in table_.rows.items()
               if r["data.encoder"] == b and r["data.split_seed"] == 1]  # fmt: skip
    assert len(dropped) == 2
    for tid in dropped:
        table_.rows.pop(tid)
    table_.write()
    loads.clear()
    resumed = run_study(spec, study_dir=study, stream=io.StringIO(), resume=True)
    assert (resumed.ran, resumed.skipped) == (2, 6) and loads == []
    df2 = pd.read_parquet(study / "trials.parquet").set_index("trial_id")
    assert len(df2) == 8 and set(df2.loc[dropped, "data.split_seed"]) == {1}


def test_paper_views_group_by_encoder_with_its_best_classical_head():
    from orchestrator.report import views

    rows = []
    for enc, base in (("minilm", 0.70), ("mpnet", 0.80)):
        for q in (10, 12):
            rows.append({"data.encoder": enc, "head": "quantum", "encoders": 1, "qubits": q,
                         "trial_id": f"{enc}{q}", "n_params": q, "acc": base + q / 1000})  # fmt: skip
        rows.append({"data.encoder": enc, "head": "svc", "qubits": 10, "trial_id": f"{enc}svc",
                     "n_params": 0, "acc": base + 0.05})  # fmt: skip
    frame = pd.DataFrame(rows)
    best = views.best_by_qubits(frame, "acc")
    assert list(best.columns[:2]) == ["data.encoder", "qubits"] and len(best) == 4
    assert best.set_index(["data.encoder", "qubits"]).loc[("mpnet", 12), "best"] == 0.812
    table, _ = views.model_comparison(frame, "acc")
    mpnet = table[table["data.encoder"] == "mpnet"].set_index("family")
    assert mpnet.loc["svc", "best_classical"] == "svc (0.8500)"
    diffs = mpnet.loc["quantum, single sQE"].diff_to_best_classical.round(3)
    assert sorted(diffs.tolist()) == [-0.04, -0.038]  # against mpnet's svc, not minilm's
    one = views.model_comparison(frame[frame["data.encoder"] == "minilm"], "acc")[0]
    assert "data.encoder" not in one.columns  # one encoder: the view as before


@pytest.mark.integration
@pytest.mark.slow
def test_optuna_suggests_data_factors(ray_session, tiny_encoders, tmp_path):
    from orchestrator.tune_driver import run_study

    spec = spec_from_dict(
        _doc(
            data={"source": "demo", "n_per_class": 8, "cache_dir": str(tmp_path / "cache")},
            factors={
                "data.encoder": [str(p) for p in tiny_encoders],
                "data.split_seed": [0, 1],
                "learning_rate": {"low": 1e-3, "high": 1e-1, "log": True},
            },
            search={"kind": "optuna", "trials": 3, "sampler": "random", "seed": 4},
            seeds=[0],
        )
    )
    study = tmp_path / "opt"
    outcome = run_study(spec, study_dir=study, stream=io.StringIO())
    df = pd.read_parquet(study / "trials.parquet")
    assert outcome.ran == 3 and (df.status == "completed").all()
    assert set(df["data.encoder"]) <= set(spec.factors["data.encoder"])
    assert set(df["data.split_seed"]) <= {0, 1} and (df["data.n_per_class"] == 8).all()

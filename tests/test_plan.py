"""The --dry-run plan and the checks before a run: what is cached, what --resume keeps,
shot noise in the estimate, long studies, and the problems that would fail a start.

Everything real except the trials: the demo set, a tiny local encoder, the real
embedding cache, real study directories.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from model.config import DataConfig, TrialConfig
from orchestrator.cli import main
from orchestrator.plan import (
    DRIVER_S_PER_TRIAL,
    estimate_seconds,
    plan_text,
    seconds_per_epoch,
    shot_seconds_per_epoch,
)
from orchestrator.precheck import DataCheck, run_problems
from orchestrator.results import ResultsTable, prepare_study_dir, trial_row, trials_path
from orchestrator.spec import spec_from_dict


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.encoders import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("enc") / "tiny")


def _spec(tmp_path: Path, encoder: str = "minilm", **changes):
    doc = {
        "name": "p",
        "data": {"source": "demo", "encoder": encoder, "n_per_class": 20,
                 "cache_dir": str(tmp_path / "cache")},
        "fixed": {"epochs": 3, "qubits": 9},
        "factors": {"learning_rate": [0.01, 0.02]},
        "seeds": [0, 1],
    }  # fmt: skip
    return spec_from_dict({**doc, **changes})


def _finish(spec, study_dir: Path, trial_ids: list[str]) -> None:
    """Final rows for ``trial_ids`` in the study's table, as the driver writes them."""
    table = ResultsTable(trials_path(study_dir), study=spec.name)
    planned = {p.trial_id: p for p in spec.planned_trials()}
    for tid in trial_ids:
        p = planned[tid]
        row = trial_row(p.config.to_dict(), trial_id=tid, point_id=p.point_id, seed=p.seed,
                        status="completed", started_at="t0",
                        last={"val_accuracy": 0.5, "epochs_run": 3, "wall_time_s": 3.0})  # fmt: skip
        table.add({**row, "data.encoder": spec.data.encoder, "data.split_seed": 0,
                   "data.n_per_class": spec.data.n_per_class})  # fmt: skip


# --- the embedding cache ------------------------------------------------------------
def test_a_warm_cache_is_reported_as_cached(tiny, tmp_path):
    from model.embeddings import embed_texts

    spec = _spec(tmp_path, encoder=str(tiny))
    cold = plan_text(spec, concurrency=2, study_dir=tmp_path / "r" / "p")
    texts = DataCheck(spec).texts
    assert texts and f"0 of {len(texts)} sentences cached" in cold
    assert "embedding ~" in cold and "of sentences not cached yet" in cold
    embed_texts(texts[:10], str(tiny), cache_dir=tmp_path / "cache", progress=False)
    part = plan_text(spec, concurrency=2, study_dir=tmp_path / "r" / "p")
    assert f"10 of {len(texts)} sentences cached" in part
    embed_texts(texts, str(tiny), cache_dir=tmp_path / "cache", progress=False)
    warm = plan_text(spec, concurrency=2, study_dir=tmp_path / "r" / "p")
    assert f"{len(texts)} of {len(texts)} sentences cached: no embedding" in warm
    assert "no embedding (every sentence is cached)" in warm
    assert "nothing cached" not in warm
    assert f"{spec.data.encoder}: 32-d" in warm  # the width from the model's own files


# --- --resume -------------------------------------------------------------------------
def test_dry_run_resume_counts_finished_trials_as_done(tmp_path, capsys):
    spec = _spec(tmp_path)
    study = tmp_path / "r" / "p"
    _finish(spec, study, ["p000_s0", "p000_s1", "p001_s0"])
    text = plan_text(spec, concurrency=2, study_dir=study, resume=True)
    assert "= 4; 3 finished in" in text and "(kept), 1 to run" in text
    assert "cost estimate: 1 trials to run, 3 epochs in all" in text
    assert "1 Ray trials for 1 trials" in text  # only p001_s1 is packed and estimated
    assert run_problems(spec, study_dir=study, resume=True) == []
    fresh = plan_text(spec, concurrency=2, study_dir=study)
    assert "holds 3 finished trials: the run is refused without --resume" in fresh
    assert "cost estimate: 4 trials," in fresh
    (problem,) = run_problems(spec, study_dir=study, resume=False)
    assert "pass --resume" in problem


def test_a_directory_without_finished_trials_does_not_block_the_retry(tmp_path):
    """A start that failed before its first trial leaves study.json, mlflow.db and an empty
    table: the retry without --resume (the fix the error suggested) is accepted, also
    after the study file changed; finished trials still need --resume."""
    from orchestrator.results import record_study

    spec = _spec(tmp_path)
    study = tmp_path / "r" / "p"
    study.mkdir(parents=True)
    record_study(spec, study)
    (study / "mlflow.db").write_bytes(b"")
    ResultsTable(trials_path(study), study="p").write()  # the empty table
    prepare_study_dir(spec, study, resume=False)  # accepted
    changed = _spec(tmp_path, fixed={"epochs": 5, "qubits": 9})
    prepare_study_dir(changed, study, resume=True)  # nothing to keep consistent with
    _finish(spec, study, ["p000_s0"])
    with pytest.raises(Exception, match="pass --resume"):
        prepare_study_dir(spec, study, resume=False)
    with pytest.raises(Exception, match="study.json has fixed"):
        prepare_study_dir(changed, study, resume=True)


# --- the estimate -------------------------------------------------------------------------
def test_shots_are_part_of_the_estimate_and_not_shared_in_packs(tmp_path):
    cfg = TrialConfig(qubits=10, epochs=800, encoder_layers=5)
    noisy = cfg.replace(shots=8192)
    size = (435, 77)
    per_epoch = shot_seconds_per_epoch(noisy, *size)
    assert shot_seconds_per_epoch(cfg, *size) == 0.0 and per_epoch > 0
    assert shot_seconds_per_epoch(noisy.replace(head="mlp"), *size) == 0.0
    # twice the shots cost more in evaluation only; twice the amplitudes more in training
    assert shot_seconds_per_epoch(noisy.replace(shots=16384), *size) > per_epoch
    assert shot_seconds_per_epoch(noisy.replace(qubits=11), *size) > per_epoch
    spec = _spec(tmp_path)
    alone, _ = estimate_seconds(spec, [cfg], [size], 1, tmp_path / "none")
    alone_noisy, how = estimate_seconds(spec, [noisy], [size], 1, tmp_path / "none")
    assert alone_noisy - alone == pytest.approx(800 * per_epoch)
    assert "shot noise (8192 shots)" in how and "% of the time" in how
    assert alone == pytest.approx(800 * seconds_per_epoch(cfg, *size))


def test_the_driver_bounds_the_estimate_of_many_trivial_trials(tmp_path):
    """100,000 one-epoch MLP trials: the slots' work is seconds, the one driver's 9 ms per
    trial is 15 minutes; the estimate is the larger, and says why."""
    spec = _spec(tmp_path)
    cfg = TrialConfig(head="mlp", epochs=1)
    n = 100_000
    total, how = estimate_seconds(spec, [cfg] * n, [(40, 8)] * n, 2, tmp_path / "none")
    assert total >= n * 0.009  # benchmark_scale: 9.05 ms of driver work per trial
    assert f"the driver bounds it: {n} trials x 9 ms" in how
    # long trials are not driver-bound: the estimate is their work on the slots
    slow = TrialConfig(qubits=12, epochs=100)
    work, how = estimate_seconds(spec, [slow] * 10, [(435, 77)] * 10, 2, tmp_path / "none")
    assert work == pytest.approx(5 * 100 * seconds_per_epoch(slow, 435, 77))
    assert work > 10 * DRIVER_S_PER_TRIAL and "driver" not in how


@pytest.mark.slow
def test_a_100000_trial_dry_run_counts_the_driver(tmp_path, capsys):
    """qsweep run --dry-run of 100,000 trivial trials (1,000 learning rates x 100 seeds,
    packed): the printed estimate is the driver's time, at least 100,000 x 9 ms."""
    from orchestrator.progress import format_duration

    doc = {
        "name": "many",
        "data": {"source": "demo", "encoder": "minilm", "n_per_class": 20,
                 "cache_dir": str(tmp_path / "cache")},
        "fixed": {"epochs": 1, "head": "mlp"},
        "factors": {"learning_rate": [round(1e-6 * (i + 1), 9) for i in range(1000)]},
        "seeds": list(range(100)),
    }  # fmt: skip
    space = tmp_path / "many.yaml"
    space.write_text(yaml.safe_dump(doc))
    assert main(["run", str(space), "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("cost estimate:"))
    assert line.startswith("cost estimate: 100000 trials, 100000 epochs in all"), line
    assert f"~ {format_duration(100_000 * DRIVER_S_PER_TRIAL)} wall time" in line, line
    assert "the driver bounds it: 100000 trials x 9 ms" in line, line


def test_a_long_study_gets_ways_to_shorten_it(tmp_path):
    spec = spec_from_dict(
        {
            "name": "long",
            "data": {"source": "demo", "encoder": "minilm"},
            "fixed": {"qubits": 16, "epochs": 800, "shots": 8192},
            "factors": {"learning_rate": [0.001, 0.002, 0.003]},
            "seeds": list(range(8)),
            "pack_size": 1,
        }
    )
    text = plan_text(spec, concurrency=2, study_dir=tmp_path / "long")
    assert "to shorten it:" in text
    assert "pack trials (pack_size: auto" in text
    assert "GPUs: resources: {gpu: 1}" in text
    assert "qsweep slurm submit" in text and "--max-concurrent K; K = 16" in text
    short = plan_text(_spec(tmp_path), concurrency=2, study_dir=tmp_path / "short")
    assert "to shorten it" not in short


def test_packs_are_described_in_words(tmp_path):
    text = plan_text(_spec(tmp_path, pack_size=2), concurrency=2, study_dir=tmp_path / "x")
    assert "2 Ray trials for 4 trials (2 packs of 2 trials)" in text


# --- problems found before a run -----------------------------------------------------------
def test_data_source_and_encoder_problems_are_found_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty local cache
    missing_dir = tmp_path / "no" / "all-mpnet-base-v2"
    spec = _spec(tmp_path, encoder=str(missing_dir))
    (encoder,) = DataCheck(spec).problems
    assert str(missing_dir) in encoder and "does not exist" in encoder
    assert "'qsweep encoder' assembles it" in encoder
    hub = spec.replace(data=DataConfig(source="hf:SetFit/sst2", encoder="minilm", n_per_class=20))
    (source,) = DataCheck(hub).problems
    assert "hf:SetFit/sst2" in source and "offline mode is declared" in source
    assert "not in the local cache" in source and "--data /path/to/dir" in source
    (tmp_path / "hf" / "hub" / "datasets--SetFit--sst2").mkdir(parents=True)
    assert DataCheck(hub).problems == []  # cached: offline mode reads it
    name = spec.replace(
        data=DataConfig(source="demo", encoder="someone/not-cached", n_per_class=20)
    )
    (model,) = DataCheck(name).problems
    assert "not in the local Hugging Face cache" in model
    local = spec.replace(
        data=DataConfig(source=str(tmp_path / "nowhere"), encoder="minilm", n_per_class=20)
    )
    (where,) = DataCheck(local).problems
    assert "does not exist" in where and str(tmp_path / "nowhere") in where
    assert DataCheck(_spec(tmp_path)).problems == []


def _space(tmp_path: Path, encoder: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(
        "name: retry\ndata: {source: demo, encoder: " + encoder + ", n_per_class: 20}\n"
        "fixed: {epochs: 2, qubits: 9}\nfactors: {learning_rate: [0.01]}\n"
    )
    return path


def test_run_and_dry_run_stop_before_writing_anything(tmp_path, capsys):
    space = _space(tmp_path, str(tmp_path / "missing-encoder"))
    results = tmp_path / "results"
    assert main(["run", str(space), "--results", str(results), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "cost estimate" in captured.out  # the plan is printed all the same
    assert "would fail before its first trial" in captured.err
    assert "missing-encoder" in captured.err and "Traceback" not in captured.err
    assert main(["run", str(space), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "would fail before its first trial (nothing was run)" in err
    assert not results.exists()  # nothing to block the retry
    fixed = _space(tmp_path, "minilm")
    assert main(["run", str(fixed), "--results", str(results), "--dry-run"]) == 0

"""The Ray Tune driver with a real local Ray (one session for the module) and a fake fit.

Expected rows are computed from the fake's own closed form (tests/sweep_fakes.py),
independently of the driver; MLflow is read back through its client.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from model.errors import ConfigError
from orchestrator.spec import spec_from_dict
from tests.sweep_fakes import expected_val, tiny_data

ROOT = Path(__file__).resolve().parents[1]
FAKE = "tests.sweep_fakes:fake_fit"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    os.environ["QSWEEP_FAKE_EPOCH_S"] = "0.01"
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def run(spec, study_dir, **kw):
    from orchestrator.tune_driver import run_study

    return run_study(
        spec, study_dir=study_dir, fit=FAKE, data=tiny_data(), stream=io.StringIO(), **kw
    )


def mlflow_runs(uri: str, study: str) -> list:
    """The client and the study's trial runs (children of its one study run)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("qsweep.kind") == "study"]
    assert parent.info.run_name == study and parent.info.status in ("FINISHED", "KILLED")
    trials = [r for r in runs if r is not parent]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    return client, trials


def test_grid_rows_failures_retries_and_mlflow(ray_session, tmp_path):
    spec = spec_from_dict(
        {
            "name": "grid",
            "fixed": {"epochs": 3, "qubits": 4},
            "factors": {"weight_decay": [0.0, 0.5, 0.25]},
            "seeds": [0, 1],
            "retries": 1,
        }
    )
    study = tmp_path / "grid"
    outcome = run(spec, study)
    assert (outcome.ran, outcome.failed, outcome.interrupted) == (6, 2, False)

    df = pd.read_parquet(study / "trials.parquet")
    assert sorted(df.trial_id) == sorted(p.trial_id for p in spec.planned_trials())
    for planned in spec.planned_trials():
        r = df[df.trial_id == planned.trial_id].iloc[0]
        cfg = planned.config
        assert (r.point_id, r.seed, r.weight_decay, r.epochs, r.qubits) == (
            planned.point_id, cfg.seed, cfg.weight_decay, 3, 4,
        )  # fmt: skip
        assert r.study == "grid" and r.started_at <= r.finished_at
        if cfg.weight_decay == 0.5:  # fails every attempt: 1 + retries attempts, then a failed row
            assert r.status == "failed" and r.attempts == 2
            assert "fake failure for weight_decay=0.5" in r.error
            assert math.isnan(r.val_accuracy)
        else:
            assert r.status == "completed" and pd.isna(r.error)
            assert r.attempts == (2 if cfg.weight_decay == 0.25 else 1)
            assert r.val_accuracy == pytest.approx(expected_val(cfg))
            assert r.test_accuracy == pytest.approx(expected_val(cfg) - 0.01)
            assert (r.best_epoch, r.epochs_run, r.n_params) == (3, 3, 40)
            assert r.qpu_energy_j == pytest.approx(6.0) and r.device == "cpu"
            assert r.engine == "cpu-torch"  # model.types.FINAL_TAGS, from the trial's result

    study_json = (study / "study.json").read_text()
    assert '"n_trials_planned": 6' in study_json and '"qsweep_version"' in study_json

    # MLflow: one run per trial, named by trial id, with tags, epoch history and final metrics
    client, runs = mlflow_runs(outcome.tracking_uri, "grid")
    assert outcome.tracking_uri == f"sqlite:///{study.resolve() / 'mlflow.db'}"
    assert sorted(r.info.run_name for r in runs) == sorted(df.trial_id)
    (parent,) = client.search_runs(
        [runs[0].info.experiment_id], "tags.`qsweep.kind` = 'study'"
    )  # the study's run: counts updated as trials end (at most every few seconds), best trial
    assert parent.data.metrics["trials_done"] == 6 and parent.data.metrics["trials_failed"] == 2
    done_steps = [m.step for m in client.get_metric_history(parent.info.run_id, "trials_done")]
    assert sorted(done_steps)[-1] == 6 and set(done_steps) <= {0, 1, 2, 3, 4, 5, 6}
    best = df[df.status == "completed"].sort_values("val_accuracy").iloc[-1]
    assert parent.data.metrics["best/val_accuracy"] == pytest.approx(best.val_accuracy)
    for mr in runs:
        tags = mr.data.tags
        row = df[df.trial_id == tags["qsweep.trial_id"]].iloc[0]
        assert tags["qsweep.study"] == "grid" and tags["qsweep.point_id"] == row.point_id
        assert tags["qsweep.seed"] == str(row.seed) and tags["qsweep.status"] == row.status
        assert tags["qsweep.code_version"]
        assert mr.data.params["weight_decay"] == str(row.weight_decay)
        if row.status == "failed":
            assert mr.info.status == "FAILED" and "fake failure" in tags["qsweep.error"]
        else:
            assert mr.info.status == "FINISHED"
            assert mr.data.metrics["test_accuracy"] == pytest.approx(row.test_accuracy)
            assert tags["qsweep.engine"] == row.engine  # short trials: written in bulk
            # the runs table shows the best epoch's value, the curve lives under epoch/
            assert mr.data.metrics["val_accuracy"] == pytest.approx(row.val_accuracy)
            history = client.get_metric_history(mr.info.run_id, "epoch/val_accuracy")
            assert sorted(m.step for m in history) == [1, 2, 3]
            assert max(m.value for m in history) == pytest.approx(row.val_accuracy)

    from orchestrator.tracking import load_trial_runs

    loaded = load_trial_runs(outcome.tracking_uri, "grid")
    assert list(loaded.columns) == list(df.columns)
    merged = loaded.merge(df, on="trial_id", suffixes=("_ml", ""))
    assert len(merged) == 6 and (merged.status_ml == merged.status).all()
    assert (merged.weight_decay_ml == merged.weight_decay).all()

    # resume: nothing left to do, nothing duplicated
    again = run(spec, study, resume=True)
    assert (again.ran, again.skipped) == (0, 6)
    assert len(pd.read_parquet(study / "trials.parquet")) == 6
    assert len(mlflow_runs(outcome.tracking_uri, "grid")[1]) == 6

    # without --resume an existing study is an error naming --resume
    with pytest.raises(ConfigError, match="--resume"):
        run(spec, study)
    # resuming with a different search space is refused
    changed = spec.replace(seeds=(0, 1, 2))
    with pytest.raises(ConfigError, match="seeds"):
        run(changed, study, resume=True)


def test_optuna_search_and_resume_warm_start(ray_session, tmp_path):
    spec = spec_from_dict(
        {
            "name": "opt",
            "fixed": {"epochs": 2},
            "factors": {
                "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                "qubits": [4, 5, 6],
            },
            "search": {"kind": "optuna", "trials": 5, "sampler": "random", "seed": 1},
            "seeds": [3],
            "max_concurrent": 2,
        }
    )
    study = tmp_path / "opt"
    outcome = run(spec, study)
    assert outcome.ran == 5
    df = pd.read_parquet(study / "trials.parquet")
    assert sorted(df.trial_id) == [f"o{i:03d}_s3" for i in range(5)]
    assert df.learning_rate.between(1e-4, 1e-2).all() and set(df.qubits) <= {4, 5, 6}
    assert (df.seed == 3).all() and (df.status == "completed").all()
    for _, r in df.iterrows():
        from model.config import TrialConfig

        cfg = TrialConfig(qubits=int(r.qubits), learning_rate=r.learning_rate, seed=3, epochs=2)
        assert r.val_accuracy == pytest.approx(expected_val(cfg))

    # simulate an interruption after three trials: drop two rows, resume
    from orchestrator.results import ResultsTable

    table = ResultsTable(study / "trials.parquet", study="opt")
    for tid in ("o003_s3", "o004_s3"):
        table.rows.pop(tid)
    table.write()
    resumed = run(spec, study, resume=True)
    assert (resumed.ran, resumed.skipped) == (2, 3)
    df2 = pd.read_parquet(study / "trials.parquet")
    assert sorted(df2.trial_id) == [f"o{i:03d}_s3" for i in range(5)]
    runs = mlflow_runs(outcome.tracking_uri, "opt")[1]
    assert sorted(r.info.run_name for r in runs) == sorted(df2.trial_id)  # old runs replaced


def test_asha_stops_poor_trials_early(ray_session, tmp_path):
    spec = spec_from_dict(
        {
            "name": "asha",
            "fixed": {"epochs": 9, "qubits": 4},
            "factors": {"learning_rate": [0.001, 0.01, 0.02, 0.03, 0.035]},
            "early_stopping": {"kind": "asha", "grace_period": 1, "reduction_factor": 3},
            "max_concurrent": 1,
        }
    )
    study = tmp_path / "asha"
    outcome = run(spec, study)
    df = pd.read_parquet(study / "trials.parquet").set_index("trial_id")
    assert len(df) == 5 and outcome.stopped >= 1
    assert df.loc["p000_s0", "status"] == "completed"  # the best trial runs to the end
    stopped = df[df.status == "stopped"]
    assert (stopped.epochs_run < 9).all()
    assert stopped.test_accuracy.isna().all()
    for _tid, r in stopped.iterrows():
        from model.config import TrialConfig

        cfg = TrialConfig(qubits=4, learning_rate=r.learning_rate, epochs=9)
        assert r.val_accuracy == pytest.approx(expected_val(cfg) * r.epochs_run / 9)
        assert r.best_epoch == r.epochs_run

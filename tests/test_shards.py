"""A study split into shards (one per Slurm array task): each shard runs its own points with
its own table and lock; readers, --resume and MLflow see one study. Real local Ray and
MLflow, the fake fit (tests/sweep_fakes.py)."""

from __future__ import annotations

import pytest

from model.errors import ConfigError
from orchestrator.results import ResultsTable, read_trials, shard_dir, shard_of, trials_path
from orchestrator.spec import spec_from_dict
from tests.test_sweep_driver import mlflow_runs, ray_session, run  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = {
    "name": "sharded",
    "fixed": {"epochs": 2, "qubits": 4},
    "factors": {"learning_rate": [0.001, 0.002, 0.003, 0.004, 0.005]},
    "seeds": [0, 1],
    "pack_size": 2,
}


def test_shards_split_the_points_and_readers_see_one_study(ray_session, tmp_path):  # noqa: F811
    spec = spec_from_dict(SPEC)
    study = tmp_path / "sharded"
    outcomes = [run(spec, study, shard=(i, 2), resume=True) for i in (0, 1)]
    # every 2nd point to each shard, all seeds of a point together
    assert [o.ran for o in outcomes] == [6, 4] and outcomes[0].planned == 6
    for i in (0, 1):
        rows = ResultsTable(trials_path(shard_dir(study, (i, 2))), study="sharded").load_rows()
        assert {shard_of(r["point_id"], 2) for r in rows.values()} == {i}
    df = read_trials(study)
    assert len(df) == 10 and df.trial_id.is_unique and (df.status == "completed").all()
    # MLflow: one study run for both shards, finished with the last one, counts summed
    client, runs = mlflow_runs(outcomes[1].tracking_uri, "sharded")
    assert sorted(r.info.run_name for r in runs) == sorted(df.trial_id)
    (parent,) = client.search_runs([runs[0].info.experiment_id], "tags.`qsweep.kind` = 'study'")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_done"] == 10 and parent.data.metrics["trials_planned"] == 10

    # a requeued shard resumes only itself: drop one of shard 1's rows, rerun shard 1
    table = ResultsTable(trials_path(shard_dir(study, (1, 2))), study="sharded")
    dropped = sorted(table.rows)[0]
    table.rows.pop(dropped)
    table.write()
    again = run(spec, study, shard=(1, 2), resume=True)
    assert (again.ran, again.skipped) == (1, 3)
    df2 = read_trials(study)
    assert len(df2) == 10 and dropped in set(df2.trial_id)
    client, runs = mlflow_runs(outcomes[1].tracking_uri, "sharded")
    assert sorted(r.info.run_name for r in runs) == sorted(df2.trial_id)  # no duplicate run


def test_a_shard_refuses_a_changed_plan_and_optuna(ray_session, tmp_path):  # noqa: F811
    study = tmp_path / "sharded"
    run(spec_from_dict(SPEC), study, shard=(0, 2), resume=True)
    changed = spec_from_dict({**SPEC, "fixed": {"epochs": 3, "qubits": 4}})
    with pytest.raises(ConfigError, match="study.json"):
        run(changed, study, shard=(1, 2), resume=True)
    optuna = spec_from_dict(
        {**SPEC, "name": "opt", "search": {"kind": "optuna", "trials": 2},
         "factors": {"learning_rate": {"low": 0.001, "high": 0.01}}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match="Optuna"):
        run(optuna, tmp_path / "opt", shard=(0, 2))

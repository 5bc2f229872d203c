"""Packing in the driver: the pack plan (no Ray) and packed studies on a real local Ray
with the real ``fit_packed`` (small heads, synthetic embeddings)."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.config import TrialConfig
from model.errors import ConfigError
from model.training import fit
from model.types import EmbeddedSplits
from orchestrator.packing import pack_summary, plan_packs, resolve_pack_size
from orchestrator.spec import spec_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _spec(**kw):
    doc = {
        "name": "packed",
        "fixed": {"head": "mlp", "epochs": 3, "batch_size": 8, "device": "cpu"},
        "factors": {"learning_rate": [0.01, 0.03], "hidden": [4, 6]},
        "seeds": [0, 1, 2],
    }
    doc.update(kw)
    return spec_from_dict(doc)


# --- the plan (no Ray) ---------------------------------------------------------------
def test_packs_group_packable_keys_and_keep_plan_order():
    spec = _spec(pack_size=4)
    packs = plan_packs(spec.planned_trials(), resolve_pack_size(spec))
    # hidden differs -> never together; learning_rate and seed do pack (6 per hidden level)
    for pack in packs:
        assert len({m.config.hidden for m in pack.members}) == 1
        assert pack.size <= 4
    assert [p.size for p in packs] == [3, 3, 3, 3]  # 6 per group at <= 4: balanced 3 + 3
    ids = [m.trial_id for p in packs for m in p.members]
    assert sorted(ids) == sorted(t.trial_id for t in spec.planned_trials())
    assert packs[0].pack_id == f"{packs[0].members[0].trial_id}+3"
    assert pack_summary(packs) == "packs: 4 Ray trials for 12 trials (4 packs of 3 trials)"


def test_auto_packs_fill_every_concurrent_slot():
    spec = _spec(factors={"learning_rate": [0.01, 0.02, 0.03, 0.04]}, seeds=[0, 1, 2, 3])
    planned = spec.planned_trials()  # 16 trials, one group
    assert [p.size for p in plan_packs(planned, "auto", slots=1)] == [16]
    assert [p.size for p in plan_packs(planned, "auto", slots=2)] == [8, 8]
    assert [p.size for p in plan_packs(planned, "auto", slots=3)] == [6, 5, 5]
    assert len(plan_packs(planned, "auto", slots=40)) == 16  # never below one member
    assert [p.size for p in plan_packs(planned, 16, slots=2)] == [16]  # explicit: as asked
    two = _spec(pack_size="auto")  # two groups (hidden 4 / 6) of 6 on 2 slots: no split
    assert [p.size for p in plan_packs(two.planned_trials(), "auto", slots=2)] == [6, 6]
    assert sorted(p.size for p in plan_packs(two.planned_trials(), "auto", slots=3)) == [3, 3, 6]


def test_pack_size_one_is_off_and_asha_refuses_explicit_packs():
    spec = _spec(pack_size=1)
    assert all(p.size == 1 for p in plan_packs(spec.planned_trials(), resolve_pack_size(spec)))
    asha = {"kind": "asha", "grace_period": 1}
    assert resolve_pack_size(_spec(early_stopping=asha)) == 1  # auto -> off with ASHA
    with pytest.raises(ConfigError, match="pack_size = 4 cannot be combined with early_stopping"):
        resolve_pack_size(_spec(early_stopping=asha, pack_size=4))
    with pytest.raises(ConfigError, match="--pack-size"):
        resolve_pack_size(_spec(), "zero")


def test_auto_pack_size_follows_qubits_device_and_memory():
    from model.packing import auto_pack_size

    small, big = TrialConfig(qubits=10), TrialConfig(qubits=24)
    assert auto_pack_size(small, gpu=False) == 16
    assert auto_pack_size(small, gpu=True, memory_bytes=80 << 30) == 64
    assert auto_pack_size(big, gpu=True, memory_bytes=80 << 30) < 8
    assert auto_pack_size(TrialConfig(head="svc"), gpu=True) == 1


def test_dry_run_cost_counts_packs_and_fifo_slots(tmp_path):
    from orchestrator.plan import (
        PACK_SHARED,
        _makespan,
        estimate_seconds,
        pack_cost_factor,
        plan_text,
    )

    assert pack_cost_factor(1) == 1.0 and pack_cost_factor(8) < pack_cost_factor(2) < 1.0
    assert _makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0  # the long job sets the wall time
    assert _makespan([1.0] * 5, 2) == 3.0 and _makespan([2.0], 4) == 2.0

    def estimate(size: int) -> tuple[float, str]:
        # 10 qubits: the trials' work, not the driver's 9 ms per trial, sets the wall time
        spec = _spec(pack_size=size, fixed={"head": "quantum", "qubits": 10, "epochs": 3})
        planned = spec.planned_trials()
        configs = [t.config for t in planned]
        return estimate_seconds(
            spec, configs, [(100, 20)] * len(configs), 2, tmp_path / "none", planned=planned
        )

    (alone, how_alone), (packed, how_packed) = estimate(1), estimate(6)
    model = f"packs at {PACK_SHARED:g} + {1 - PACK_SHARED:g}/T"
    assert "packs" not in how_alone and f"2 {model}" in how_packed
    assert "driver" not in how_alone + how_packed
    # 12 equal trials on 2 slots alone: 6 trial-times; 2 packs of 6, one per slot, each
    # (shared + (1 - shared)/6) x 6 trial-times
    assert packed / alone == pytest.approx((PACK_SHARED * 6 + 1 - PACK_SHARED) / 6)
    text = plan_text(_spec(pack_size=6), concurrency=2, study_dir=tmp_path / "none")
    assert model in text


# --- real Ray, real fit_packed ------------------------------------------------------
def _data() -> EmbeddedSplits:
    rng = np.random.default_rng(3)
    w = rng.normal(size=6)

    def split(n):
        x = rng.normal(size=(n, 6)).astype(np.float32)
        return x, (x @ w > 0).astype(np.int64)

    return EmbeddedSplits(*split(32), *split(16), *split(24), encoder="synthetic")


def _run(spec, study_dir, **kw):
    from orchestrator.tune_driver import run_study

    kw.setdefault("stream", io.StringIO())
    return run_study(spec, study_dir=study_dir, data=_data(), **kw)


@pytest.mark.integration
@pytest.mark.slow
def test_packed_study_rows_runs_resume_and_a_member_failing_alone(ray_session, tmp_path):
    from mlflow.tracking import MlflowClient

    from orchestrator.results import ResultsTable

    spec = _spec(
        factors={"learning_rate": [0.01, 1e38], "hidden": [4, 6]},  # 1e38: loss overflows
        seeds=[0, 1],
        pack_size=4,
    )
    study = tmp_path / "packed"
    log = io.StringIO()
    outcome = _run(spec, study, stream=log)
    lines = log.getvalue().splitlines()
    assert any("running in 2 packs" in line for line in lines), lines  # members of 2 packs
    assert sum("8/8 done" in line for line in lines) == 1, lines  # the last line once
    df = pd.read_parquet(study / "trials.parquet").set_index("trial_id")
    assert (outcome.ran, len(df)) == (8, 8)
    assert df.pack_id.nunique() == 2 and (df.groupby("pack_id").size() == 4).all()
    assert set(df.node) == {socket.gethostname()}  # where each member's Ray trial ran
    bad = df[df.learning_rate > 1]
    assert (bad.status == "failed").all() and bad.error.str.contains("not finite").all()
    good = df[df.learning_rate < 1]
    assert (good.status == "completed").all()
    for tid, r in good.iterrows():  # each member is the computation of its own fit
        cfg = spec.trial_config(
            {"learning_rate": r.learning_rate, "hidden": int(r.hidden)}, int(r.seed)
        )
        alone = fit(cfg, _data())
        assert r.val_accuracy == alone.val_accuracy and r.best_epoch == alone.best_epoch, tid
        assert r.test_accuracy == alone.test_accuracy
    client = MlflowClient(tracking_uri=outcome.tracking_uri)
    exp = client.get_experiment_by_name("packed")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    runs = [r for r in runs if r.data.tags.get("qsweep.kind") != "study"]  # the trials
    assert sorted(r.info.run_name for r in runs) == sorted(df.index)
    assert {r.data.tags["qsweep.pack_id"] for r in runs} == set(df.pack_id)
    import mlflow.pytorch
    import torch

    data = _data()
    for run in runs:  # each member's logged model is its own trained head, sliced from the pack
        r = df.loc[run.info.run_name]
        if r.status != "completed":
            assert "qsweep.model_uri" not in run.data.tags
            continue
        head = mlflow.pytorch.load_model(run.data.tags["qsweep.model_uri"])
        with torch.no_grad():
            predicted = head(torch.from_numpy(data.x_test)).argmax(1).numpy()
        assert (predicted == data.y_test).mean() == pytest.approx(r.test_accuracy, abs=1e-12)

    # resume reruns only the members without a row, packed together
    table = ResultsTable(study / "trials.parquet", study="packed")
    dropped = sorted(good.index)[:2]
    for tid in dropped:
        table.rows.pop(tid)
    table.write()
    resumed = _run(spec, study, resume=True)
    assert (resumed.ran, resumed.skipped) == (2, 6)
    df2 = pd.read_parquet(study / "trials.parquet").set_index("trial_id")
    assert len(df2) == 8 and set(df2.loc[dropped, "status"]) == {"completed"}
    assert df2.loc[dropped, "val_accuracy"].tolist() == df.loc[dropped, "val_accuracy"].tolist()


@pytest.mark.integration
@pytest.mark.slow
def test_optuna_packs_the_seeds_of_one_suggestion(ray_session, tmp_path):
    spec = spec_from_dict(
        {
            "name": "opt_packed",
            "fixed": {"head": "mlp", "epochs": 2, "batch_size": 8, "device": "cpu"},
            "factors": {"learning_rate": {"low": 1e-3, "high": 1e-1, "log": True}},
            "search": {"kind": "optuna", "trials": 3, "sampler": "random", "seed": 2},
            "seeds": [0, 1],
        }
    )
    study = tmp_path / "opt"
    outcome = _run(spec, study)
    df = pd.read_parquet(study / "trials.parquet")
    assert outcome.ran == 6 and sorted(df.trial_id) == sorted(
        f"o{i:03d}_s{s}" for i in range(3) for s in (0, 1)
    )
    for point_id, group in df.groupby("point_id"):
        assert set(group.pack_id) == {point_id} and sorted(group.seed) == [0, 1]
        assert group.learning_rate.nunique() == 1

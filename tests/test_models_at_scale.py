"""Models at scale: every completed trial stays loadable, only the best K are registered.

A real local Ray and MLflow (SQLite), the fake fit with real untrained heads as states
(tests/sweep_fakes.py, QSWEEP_FAKE_STATE=1); the expected logits are recomputed from the
fake's own seeded initial state, independently of the driver.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
import torch

from model.config import TrialConfig
from orchestrator.spec import spec_from_dict
from tests.sweep_fakes import _initial_state, tiny_data
from tests.test_sweep_driver import FAKE, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray whose workers see QSWEEP_FAKE_STATE (set before they start)."""
    ray = pytest.importorskip("ray")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    os.environ["QSWEEP_FAKE_STATE"] = "1"
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.pop("QSWEEP_FAKE_STATE", None)


def _study(tmp_path, register: str, top: int = 2, name: str = "models"):
    from orchestrator.results import read_trials
    from orchestrator.tune_driver import run_study

    spec = spec_from_dict(
        {
            "name": name,
            "fixed": {"head": "mlp", "hidden": 3, "epochs": 2},
            "factors": {"learning_rate": [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]},
            "mlflow": {"register": register, "register_top": top},
            "pack_size": 3,
        }
    )
    stream = io.StringIO()
    outcome = run_study(spec, study_dir=tmp_path / name, fit=FAKE, data=tiny_data(),
                        stream=stream)  # fmt: skip
    assert "MLflow refused" not in stream.getvalue(), stream.getvalue()
    return outcome, read_trials(tmp_path / name)


def _versions(uri: str, name: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return {
        v.tags.get("qsweep.trial_id"): v.version
        for v in client.search_model_versions(f"name = '{name}'")
    }


def _logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_best_k_are_registered_and_every_trial_loads(ray_session, tmp_path):
    from orchestrator.tracking import find_trial_model, load_model
    from orchestrator.tracking.models import load_state_file_model

    outcome, df = _study(tmp_path, "best", top=2)
    assert (df.status == "completed").all() and len(df) == 6
    best = set(df.sort_values("val_accuracy", ascending=False).trial_id[:2])
    assert set(_versions(outcome.tracking_uri, "models")) == best  # the registry stays small
    data = tiny_data()
    for row in df.itertuples():
        found = find_trial_model(outcome.tracking_uri, study="models", trial_id=row.trial_id)
        config = TrialConfig(head="mlp", hidden=3, epochs=2, learning_rate=row.learning_rate,
                             seed=row.seed)  # fmt: skip
        from model.heads.factory import restore_head

        expected = _logits(restore_head(config, 4, _initial_state(config, data)), data.x_test)
        from_file = load_state_file_model(found) if not found["model_uri"] else None
        if row.trial_id in best:  # a full MLflow model, and the state file as well
            model = load_model(outcome.tracking_uri, found["model_uri"], "mlp")
            np.testing.assert_allclose(_logits(model, data.x_test), expected, rtol=1e-6)
        else:
            assert found["model_file"].endswith(".pt") and from_file is not None
            np.testing.assert_allclose(_logits(from_file, data.x_test), expected, rtol=1e-6)
    # one state file per pack, in the study directory
    assert len(list((tmp_path / "models" / "models").glob("*.pt"))) == 2


def test_register_none_and_all(ray_session, tmp_path):
    outcome, df = _study(tmp_path, "none", name="none")
    assert _versions(outcome.tracking_uri, "none") == {}
    outcome, df = _study(tmp_path, "all", name="all")
    assert set(_versions(outcome.tracking_uri, "all")) == set(df.trial_id)
    assert isinstance(df, pd.DataFrame)

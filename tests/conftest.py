"""Shared test settings: offline hubs, no telemetry, quiet Ray.

Integration tests (real Ray, MLflow server, Slurm, Chromium) are marked
``integration``. When a service binary is missing they skip with a reason shown by
``-ra``; CI sets ``QSWEEP_REQUIRE_INTEGRATION=1`` so a missing service fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip when a real service is missing, unless CI demands integration tests run."""
    if condition:
        return
    if os.environ.get("QSWEEP_REQUIRE_INTEGRATION"):
        pytest.fail(f"integration prerequisite missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray (2 CPUs) for the tests of one module; trials import qsweep from ROOT."""
    ray = pytest.importorskip("ray")
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()

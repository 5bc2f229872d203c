"""Trained models of trials in MLflow: logging (and registering) them, finding and loading them.

log_trial_model(client, uri, study, run_id, row, state, model_input)  # MLflow model + version
find_trial_model(uri, study="quickstart", trial_id="p000_s0")         # {"model_uri", ...}
load_model(uri, found["model_uri"], found["head"])                     # nn.Module or Pipeline
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

from orchestrator.tracking.store import _all_runs, _client, _config_names

__all__ = ["log_trial_model", "find_trial_model", "load_model", "load_state_file_model"]


def log_trial_model(
    client,
    uri: str,
    study: str,
    run_id: str,
    row: dict[str, Any],
    state: Any,
    model_input: Any,
    *,
    register: bool = True,
) -> str:
    """Log a trial's trained model on its run; returns the model URI (tag ``qsweep.model_uri``).

    nn.Module heads: the head rebuilt from the row's config and ``state`` as an MLflow
    PyTorch model (input: embeddings (n, d) float32, output: logits (n, 2)); quantum heads
    also get their PQC for the first test embedding as ``circuit/pqc.qasm`` (OpenQASM 2.0)
    with its Pauli-Z expectations ``circuit/expval.json``, as ``qsweep circuit`` writes
    them. sklearn baselines: the fitted Pipeline (sklearn flavour, predict_proba output).
    The model is registered as a version of the registered model named after the study
    (version tag ``qsweep.trial_id``).
    """
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from model.config import TrialConfig
    from model.heads import registry

    if model_input is None:
        raise ValueError("no input example (TrialLogger.log_dataset was not called)")
    config = TrialConfig.from_dict(
        {k: row[k] for k in _config_names() if row.get(k) is not None}, where="trial"
    )
    x = np.asarray(model_input, dtype=np.float32)
    mlflow.set_tracking_uri(uri)
    # Pickle is chosen on purpose (a few kB, any batch size); not a warning per trial.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    # mlflow prints "Created version ..." to stderr for every registration: not per trial.
    with mlflow.start_run(run_id=run_id), contextlib.redirect_stderr(io.StringIO()):
        if registry.is_sklearn(config.head):
            import mlflow.sklearn

            signature = infer_signature(x, state.predict_proba(x))
            info = mlflow.sklearn.log_model(
                state, name="model", input_example=x, signature=signature,
                pip_requirements=_requirements("scikit-learn"),
                registered_model_name=study if register else None,
            )  # fmt: skip
        else:
            import mlflow.pytorch
            import torch

            from model.heads.factory import restore_head

            head = restore_head(config, x.shape[1], state)
            with torch.no_grad():
                logits = head(torch.from_numpy(x)).numpy()
            info = mlflow.pytorch.log_model(
                head, name="model", input_example=x,
                signature=infer_signature(x, logits),
                pip_requirements=_requirements("torch"),
                serialization_format="pickle",  # the nn.Module itself; pt2 fixes the batch size
                registered_model_name=study if register else None,
            )  # fmt: skip
            if registry.is_quantum(config.head):
                from model.quantum.qasm import export_pqc

                qasm, z = export_pqc(head, torch.from_numpy(x[:1]))
                mlflow.log_text(qasm, "circuit/pqc.qasm")
                mlflow.log_dict(
                    {"z": [float(v) for v in z], "qubits": config.qubits,
                     "input": "first test embedding"},
                    "circuit/expval.json",
                )  # fmt: skip
    client.set_tag(run_id, "qsweep.model_uri", info.model_uri)
    version = getattr(info, "registered_model_version", None)
    if version is not None:
        client.set_model_version_tag(study, str(version), "qsweep.trial_id", row["trial_id"])
        client.set_tag(run_id, "qsweep.model_version", str(version))
    return info.model_uri


def _requirements(flavour: str) -> list[str]:
    """Pinned requirements of a logged model (qsweep itself must be installed to load it)."""
    from importlib.metadata import version

    from orchestrator.results import qsweep_version

    dist = {"torch": "torch", "scikit-learn": "scikit-learn"}[flavour]
    return [f"{dist}=={version(dist).split('+')[0]}", f"numpy=={version('numpy')}",
            f"qsweep=={qsweep_version()}"]  # fmt: skip


def find_trial_model(
    tracking_uri: str,
    *,
    run_id: str | None = None,
    study: str | None = None,
    trial_id: str | None = None,
) -> dict[str, str]:
    """The logged model of one trial run (by run id, or by study + trial id):
    ``{"run_id", "model_uri", "encoder", "head", "trial_id"}``; ConfigError when absent."""
    from model.errors import ConfigError

    client = _client(tracking_uri)
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST and friends
            raise ConfigError(f"--run {run_id}: no such run in {tracking_uri}.") from None
    else:
        experiment = client.get_experiment_by_name(study or "")
        found = (
            _all_runs(client, experiment.experiment_id, f"tags.`qsweep.trial_id` = '{trial_id}'")
            if experiment is not None
            else []
        )
        found = [r for r in found if r.info.status != "RUNNING"]
        if not found:
            raise ConfigError(
                f"--trial {study}/{trial_id}: no finished trial run {trial_id!r} in experiment "
                f"{study!r} of {tracking_uri}; the study's trial ids are in its trials.parquet."
            )
        run = max(found, key=lambda r: r.info.start_time)
    tags = run.data.tags
    name = tags.get("qsweep.trial_id") or run.info.run_name
    found = {
        "run_id": run.info.run_id,
        "model_uri": tags.get("qsweep.model_uri", ""),
        "encoder": tags.get("qsweep.encoder", ""),
        "head": run.data.params.get("head", ""),
        "trial_id": name,
    }
    if found["model_uri"]:
        return found
    if "qsweep.model_file" in tags:  # not registered: the state file the study directory keeps
        found["model_file"] = tags["qsweep.model_file"]
        found["model_member"] = tags.get("qsweep.model_member", "0")
        found["input_dim"] = tags.get("qsweep.input_dim", "")
        found["params"] = dict(run.data.params)
        return found
    why = tags.get("qsweep.model_error") or f"status {tags.get('qsweep.status', '?')}"
    raise ConfigError(f"trial run {run.info.run_id} ({name}) has no logged model ({why}).")


def load_state_file_model(found: dict[str, Any]):
    """A trial's model from its pack's state file (``found`` from :func:`find_trial_model`
    for a trial without a registered MLflow model): an nn.Module or a fitted Pipeline."""
    from pathlib import Path

    import torch

    from model.config import TrialConfig
    from model.errors import ConfigError
    from model.heads import registry
    from model.heads.factory import restore_head
    from orchestrator.tracking.queries import _typed

    path = Path(found["model_file"])
    if not path.is_file():
        raise ConfigError(
            f"trial {found['trial_id']}: its model file {path} is missing (the study directory "
            "was moved or its models/ folder deleted); only the registered best trials "
            "(mlflow.register) have a model in MLflow itself."
        )
    # our own file: state_dicts of tensors, or fitted sklearn Pipelines (pickled)
    state = torch.load(path, weights_only=False)[int(found["model_member"])]
    if registry.is_sklearn(found["head"]):
        return state
    defaults = TrialConfig().to_dict()
    values = {k: _typed(v, defaults[k]) for k, v in found["params"].items() if k in defaults}
    config = TrialConfig.from_dict(values, where="trial run params")
    return restore_head(config, int(found["input_dim"]), state).eval()


def load_model(tracking_uri: str, model_uri: str, head: str):
    """The logged model: an nn.Module (logits) or a fitted sklearn Pipeline (predict_proba)."""
    import mlflow

    from model.heads import registry

    mlflow.set_tracking_uri(tracking_uri)
    if registry.is_sklearn(head):
        import mlflow.sklearn

        return mlflow.sklearn.load_model(model_uri)
    import mlflow.pytorch

    return mlflow.pytorch.load_model(model_uri, map_location="cpu").eval()

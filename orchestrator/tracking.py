"""MLflow logging for studies: the ONLY module that imports mlflow.

One experiment per study (name = study name, description = the study's). One study run
(the parent; run name = study name, tag ``qsweep.kind=study``) holds the spec, the
running counts, the best trial and the report; one child run per trial (run name = trial
id) holds the trial's config as params, per-epoch curves under ``epoch/<name>`` (step =
epoch), final metrics under their plain names (``val_accuracy`` is the best epoch's, as
in trials.parquet), a description, ``qsweep.*`` tags, the embeddings as dataset input and
the trained model. Everything is logged from the driver with an ``MlflowClient`` (models
with the fluent API on the resumed trial run).

    uri = default_tracking_uri(Path("results/quickstart"))   # sqlite:///.../mlflow.db
    check_tracking_uri(uri)                                 # ServiceError when unreachable
    logger = TrialLogger(uri, "quickstart")
    logger.open_study(spec.study_dict(), spec_file=spec.source, planned=4)  # parent run
    logger.log_dataset(embedded, spec.data.to_dict())       # dataset input, model example
    logger.start("p000_s0", point_id="p000", seed=0, params=config_dict, tags={...})
    logger.log_epoch("p000_s0", {"val_accuracy": 0.7}, step=1)
    logger.finish("p000_s0", row, state=result.state)       # a trials.parquet row + model
    logger.update_study(rows, planned=4, metric="val_accuracy", mode="max")
    logger.close_study(interrupted=False)
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from model.errors import ServiceError
from model.types import FINAL_METRICS as TRIAL_METRICS

__all__ = [
    "default_tracking_uri",
    "check_tracking_uri",
    "code_version",
    "TrialLogger",
    "log_study_artifacts",
    "load_trial_runs",
    "find_trial_model",
    "experiment_id",
    "load_model",
    "FINAL_METRICS",
]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# A trial's final metrics (model.types.FINAL_METRICS) plus the driver's attempt count.
_METRIC_TYPES: dict[str, type] = {**TRIAL_METRICS, "attempts": int}
FINAL_METRICS = tuple(_METRIC_TYPES)
_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "failed": "FAILED"}
_TAG_MAX = 4000


def default_tracking_uri(results_dir: Path) -> str:
    """``sqlite:///<absolute results dir>/mlflow.db`` (the embedded default store)."""
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def check_tracking_uri(uri: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast (before any trial runs) when the tracking store cannot be reached."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status != 200:
                    raise ServiceError(
                        f"MLflow server {uri} answered {response.status} on /health."
                    )
        except (urllib.error.URLError, OSError) as err:
            raise ServiceError(
                f"MLflow tracking server {uri} is unreachable ({getattr(err, 'reason', err)}). "
                "Start it (mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000), "
                "fix --mlflow-uri, or leave --mlflow-uri out to log into <results>/mlflow.db."
            ) from None
        return
    if uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ServiceError(
                f"MLflow store {uri}: directory {parent} does not exist or is not writable."
            )
        return
    if uri.startswith(("file:", "/", "postgresql", "mysql", "databricks")):
        return
    raise ServiceError(
        f"--mlflow-uri {uri!r} is not a tracking URI; allowed: http(s)://HOST:PORT, sqlite:///PATH, file:PATH."
    )


def code_version() -> str:
    """Git sha of the qsweep checkout if available, else the package version."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from orchestrator.results import qsweep_version

    return qsweep_version()


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, study: str) -> str:
    experiment = client.get_experiment_by_name(study)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    artifacts = None
    uri = client.tracking_uri if hasattr(client, "tracking_uri") else ""
    if uri.startswith("sqlite:///"):  # keep artifacts beside the db, not in ./mlruns of the cwd
        artifacts = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(study, artifact_location=artifacts)
    except Exception:  # noqa: BLE001 - created concurrently by another driver
        experiment = client.get_experiment_by_name(study)
        if experiment is None:
            raise
        return experiment.experiment_id


def _all_runs(client, experiment_id: str, filter_string: str = "") -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


EPOCH_PREFIX = "epoch/"  # per-epoch curves; plain names hold the trial's final values
EPOCH_FLUSH_S = 2.0  # per-epoch metrics reach MLflow at most this late while a trial runs
_BATCH_METRICS = 1000  # MLflow's limit of metrics per log_batch


# ------------------------------------------------------------------------------------
class TrialLogger:
    """Driver-side MLflow logging of a study's trials (one run per trial id)."""

    def __init__(self, tracking_uri: str, study: str, *, parent_run_id: str | None = None) -> None:
        self.uri = tracking_uri
        self.study = study
        self.parent_run_id = parent_run_id  # every trial run becomes its child when set
        self.dataset: Any = None  # mlflow Dataset entity logged as each trial's input
        self.model_input: Any = None  # (n, d) float32 rows: the input example of logged models
        self.encoder = ""  # encoder identity, tagged on every trial (qsweep predict embeds with it)
        self.version = code_version()
        try:
            self.client = _client(tracking_uri)
            self.experiment_id = _experiment_id(self.client, study)
        except Exception as err:  # noqa: BLE001 - any backend failure
            raise ServiceError(
                f"MLflow store {tracking_uri} refused the study {study!r}: {err}"
            ) from None
        self.runs: dict[str, str] = {}  # trial_id -> run_id
        # per-epoch metrics wait here and go out in one log_batch per run every
        # EPOCH_FLUSH_S seconds (and when the trial ends): one SQLite transaction per run and
        # flush instead of one per member and epoch
        self._pending: dict[str, list] = {}  # run_id -> [Metric]
        self._flushed = time.monotonic()

    def _existing(self, trial_id: str) -> list:
        return _all_runs(self.client, self.experiment_id, f"tags.`qsweep.trial_id` = '{trial_id}'")

    def start(
        self,
        trial_id: str,
        *,
        point_id: str,
        seed: int,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> str:
        """Create the trial's run (a child of the study run); an unfinished run of the same
        trial id (earlier attempt) is replaced. ``tags`` are added (e.g. a pack id)."""
        for old in self._existing(trial_id):
            self._pending.pop(old.info.run_id, None)
            self.client.delete_run(old.info.run_id)
        from mlflow.entities import Param

        tags = {
            "qsweep.study": self.study,
            "qsweep.trial_id": trial_id,
            "qsweep.point_id": point_id,
            "qsweep.seed": str(seed),
            "qsweep.status": "running",
            "qsweep.code_version": self.version,
            **({"mlflow.parentRunId": self.parent_run_id} if self.parent_run_id else {}),
            **({"qsweep.encoder": self.encoder} if self.encoder else {}),
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        run = self.client.create_run(self.experiment_id, run_name=trial_id, tags=tags)
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        if self.dataset is not None:
            _log_dataset(self.client, run_id, self.dataset)
        self.runs[trial_id] = run_id
        return run_id

    def log_epoch(self, trial_id: str, metrics: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        run_id = self.runs.get(trial_id)
        if run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [
            Metric(f"{EPOCH_PREFIX}{k}", float(v), now, int(step))
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
        ]
        self._pending.setdefault(run_id, []).extend(batch)
        if time.monotonic() - self._flushed >= EPOCH_FLUSH_S:
            self.flush_epochs()

    def flush_epochs(self, run_id: str | None = None) -> None:
        """Send the waiting per-epoch metrics (of one run, or of all)."""
        ids = list(self._pending) if run_id is None else [run_id]
        for rid in ids:
            batch = self._pending.pop(rid, [])
            for lo in range(0, len(batch), _BATCH_METRICS):
                self.client.log_batch(rid, metrics=batch[lo : lo + _BATCH_METRICS])
        if run_id is None:
            self._flushed = time.monotonic()

    def finish(
        self,
        trial_id: str,
        row: dict[str, Any],
        *,
        state: Any = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Final metrics, status, error and description of a trial (``row`` as in
        trials.parquet); with ``state`` (``TrialResult.state``) also its trained model."""
        from mlflow.entities import Metric, RunTag

        run_id = self.runs.pop(trial_id, None)
        if run_id is not None:
            self.flush_epochs(run_id)
        else:
            params = {k: row[k] for k in _config_names() if k in row and row[k] is not None}
            params["seed"] = row.get("seed")
            run_id = self.start(
                trial_id,
                point_id=row.get("point_id") or "",
                seed=row.get("seed") or 0,
                params=params,
                tags=tags,
            )
            self.runs.pop(trial_id, None)
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(row[k]), now, 0)
            for k in FINAL_METRICS
            if isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
        ]
        run_tags = [RunTag("qsweep.status", str(row["status"]))]
        for key in ("started_at", "finished_at", "device"):
            if row.get(key):
                run_tags.append(RunTag(f"qsweep.{key}", str(row[key])))
        if row.get("error"):
            run_tags.append(RunTag("qsweep.error", str(row["error"])[:_TAG_MAX]))
        run_tags.append(RunTag("mlflow.note.content", trial_description(row)))
        run_tags.extend(RunTag(k, str(v)) for k, v in (tags or {}).items())
        self.client.log_batch(run_id, metrics=metrics, tags=run_tags)
        if state is not None and row.get("status") == "completed":
            try:
                self.log_model(run_id, row, state)
            except Exception as err:  # noqa: BLE001 - the trial's numbers are logged; say why the model is not
                why = f"{type(err).__name__}: {err}"
                self.client.set_tag(run_id, "qsweep.model_error", why[:_TAG_MAX])
                print(
                    f"qsweep: trial {trial_id}: model not logged to MLflow: {why}", file=sys.stderr
                )
        self.client.set_terminated(run_id, status=_STATUS.get(row["status"], "FINISHED"))

    def abandon(self, trial_id: str) -> None:
        """A trial cut short by a graceful stop: run KILLED (replaced when --resume reruns it)."""
        run_id = self.runs.pop(trial_id, None)
        if run_id is not None:
            self.flush_epochs(run_id)
            self.client.set_tag(run_id, "qsweep.status", "interrupted")
            self.client.set_terminated(run_id, status="KILLED")

    def reconcile(self, rows: list[dict[str, Any]]) -> int:
        """Log table rows that have no terminated run (driver killed between table and MLflow)."""
        terminated = {
            r.data.tags.get("qsweep.trial_id")
            for r in _all_runs(self.client, self.experiment_id)
            if r.info.status in ("FINISHED", "FAILED") and r.data.tags.get("qsweep.trial_id")
        }
        n = 0
        for row in rows:
            if row["trial_id"] not in terminated:
                self.finish(row["trial_id"], row)
                n += 1
        return n

    # --- the trained model ---------------------------------------------------------------
    def log_model(self, run_id: str, row: dict[str, Any], state: Any) -> str:
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

        if self.model_input is None:
            raise ValueError("no input example (TrialLogger.log_dataset was not called)")
        config = TrialConfig.from_dict(
            {k: row[k] for k in _config_names() if row.get(k) is not None}, where="trial"
        )
        x = np.asarray(self.model_input, dtype=np.float32)
        mlflow.set_tracking_uri(self.uri)
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
                    registered_model_name=self.study,
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
                    registered_model_name=self.study,
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
        self.client.set_tag(run_id, "qsweep.model_uri", info.model_uri)
        version = getattr(info, "registered_model_version", None)
        if version is not None:
            self.client.set_model_version_tag(
                self.study, str(version), "qsweep.trial_id", row["trial_id"]
            )
        return info.model_uri

    # --- the study's parent run -------------------------------------------------------------
    def open_study(
        self, spec: dict[str, Any], *, spec_file: str | Path | None = None, planned: int = 0
    ) -> str:
        """Create the study's parent run (or reuse it: --resume) and make trials its children.

        ``spec`` is ``StudySpec.study_dict()``. The run is named after the study and tagged
        ``qsweep.kind=study``; it holds the spec as flat params (``factors.qubits``,
        ``data.encoder``, ...), ``spec_file`` under ``spec/``, the description (also the
        experiment's) and the running counts of :meth:`update_study`.
        """
        from mlflow.entities import Param

        description = str(spec.get("description") or "")
        params = _flat({k: v for k, v in spec.items() if k not in ("name", "description")})

        if description:
            self.client.set_experiment_tag(self.experiment_id, "mlflow.note.content", description)
        run_id, created = _study_run(self.client, self.experiment_id, self.study, self.version)
        if description:
            self.client.set_tag(run_id, "mlflow.note.content", description)
        have = {} if created else self.client.get_run(run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in (params or {}).items() if k not in have]
        for lo in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[lo : lo + 100])
        if spec_file is not None and Path(spec_file).is_file():
            self.client.log_artifact(run_id, str(spec_file), artifact_path="spec")
        if planned:
            self.client.log_metric(run_id, "trials_planned", planned)
        self.parent_run_id = run_id
        return run_id

    def log_dataset(self, data: Any, data_config: dict[str, Any]) -> None:
        """The embeddings as a dataset input of the study run and of every trial run started
        afterwards; their first test rows become the models' input example."""
        self.dataset = dataset_entity(data, data_config)
        self.encoder = str(getattr(data, "encoder", "") or data_config.get("encoder", ""))
        rows = data.x_test if len(data.x_test) else data.x_val
        self.model_input = rows[:2]
        if self.parent_run_id:
            _log_dataset(self.client, self.parent_run_id, self.dataset)
            self.client.set_tag(self.parent_run_id, "qsweep.encoder", self.encoder)

    def update_study(
        self, rows: list[dict[str, Any]], *, planned: int, metric: str, mode: str
    ) -> None:
        """Counts (planned, done, failed) and the best trial's final metrics on the study run."""
        from mlflow.entities import Metric, RunTag

        if not self.parent_run_id:
            return
        done = len(rows)
        now = int(time.time() * 1000)
        metrics = [
            Metric("trials_planned", planned, now, done),
            Metric("trials_done", done, now, done),
            Metric("trials_failed", sum(r.get("status") == "failed" for r in rows), now, done),
        ]
        tags = []
        best = best_row(rows, metric, mode)
        if best is not None:
            metrics += [
                Metric(f"best/{k}", float(best[k]), now, done)
                for k in TRIAL_METRICS
                if _is_number(best.get(k))
            ]
            tags.append(RunTag("qsweep.best_trial", str(best["trial_id"])))
        self.client.log_batch(self.parent_run_id, metrics=metrics, tags=tags)

    def study_exit(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> bool:
        """Context-manager exit for the driver (``ExitStack.push``): a driver that raises
        ends the study run KILLED (``--resume`` reopens it); the exception propagates."""
        if exc_type is not None:
            self.close_study(interrupted=True)
        return False

    def close_study(self, *, interrupted: bool = False) -> None:
        """End the study run: FINISHED, or KILLED when the driver was stopped (resume reopens it)."""
        self.flush_epochs()
        if self.parent_run_id:
            self.client.set_terminated(
                self.parent_run_id, status="KILLED" if interrupted else "FINISHED"
            )


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"source": "demo"}}`` -> ``{"data.source": "demo"}``; lists and factor
    ranges (``factors.lr = {low, high, log}``) stay whole."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict) and value and prefix != "factors.":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The row with the best ``metric`` (max or min); None when no row has a number."""
    scored = [r for r in rows if _is_number(r.get(metric))]
    if not scored:
        return None
    key = (lambda r: r[metric]) if mode == "max" else (lambda r: -r[metric])
    return max(scored, key=key)


def trial_description(row: dict[str, Any]) -> str:
    """The run's description (``mlflow.note.content``): head, qubits, main settings, best epoch."""
    from model.heads import registry

    head = row.get("head") or "?"
    lines = [f"**{row.get('trial_id', '')}**: {head} head"]
    if head in registry.QUANTUM_HEADS:
        lines[0] += f", {row.get('qubits')} qubits"
    settings = [
        f"{k}={row[k]}"
        for k in _MAIN_SETTINGS.get(registry.family(head) if head in registry.HEADS else "", ())
        if row.get(k) is not None
    ]
    if settings:
        lines.append("settings: " + ", ".join(settings))
    status = row.get("status")
    if _is_number(row.get("val_accuracy")):
        lines.append(
            f"{status}; best epoch {row.get('best_epoch')} of {row.get('epochs_run')}: "
            f"val_accuracy {row['val_accuracy']:.4f}"
            + (
                f", test_accuracy {row['test_accuracy']:.4f}"
                if _is_number(row.get("test_accuracy"))
                else ""
            )
        )
    else:
        lines.append(str(status) + (f": {row['error']}" if row.get("error") else ""))
    return "  \n".join(lines)


_MAIN_SETTINGS = {
    "quantum": ("encoders", "encoder_layers", "reuploads", "main_layers", "rotation",
                "learning_rate", "batch_size", "epochs", "shots", "seed"),
    "torch": ("hidden", "learning_rate", "batch_size", "epochs", "seed"),
    "sklearn": ("seed",),
}  # fmt: skip


def _requirements(flavour: str) -> list[str]:
    """Pinned requirements of a logged model (qsweep itself must be installed to load it)."""
    from importlib.metadata import version

    from orchestrator.results import qsweep_version

    dist = {"torch": "torch", "scikit-learn": "scikit-learn"}[flavour]
    return [f"{dist}=={version(dist).split('+')[0]}", f"numpy=={version('numpy')}",
            f"qsweep=={qsweep_version()}"]  # fmt: skip


def dataset_entity(data: Any, data_config: dict[str, Any]):
    """An MLflow Dataset entity for embedded splits: name, digest and the recipe as its source."""
    import hashlib
    import json

    from mlflow.entities import Dataset

    digest = hashlib.sha256()
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        digest.update(getattr(data, name).tobytes())
    source = {
        "source": data_config.get("source"),
        "protocol": data_config.get("protocol"),
        "split_seed": data_config.get("split_seed"),
        "n_per_class": data_config.get("n_per_class"),
        "encoder": getattr(data, "encoder", "") or data_config.get("encoder"),
        "rows": getattr(data, "source", ""),
    }
    profile = {**data.sizes(), "dim": int(data.dim)}
    return Dataset(
        name=f"{data_config.get('source')}-{data_config.get('protocol')}-embeddings",
        digest=digest.hexdigest()[:16],
        source_type="qsweep",
        source=json.dumps(source, default=str),
        profile=json.dumps(profile),
    )


def _log_dataset(client, run_id: str, dataset) -> None:
    from mlflow.entities import DatasetInput, InputTag

    context = InputTag(key="mlflow.data.context", value="training")
    client.log_inputs(run_id, datasets=[DatasetInput(dataset=dataset, tags=[context])])


def _study_run(
    client, experiment_id: str, study: str, version: str, *, reopen: bool = True
) -> tuple[str, bool]:
    """The study's parent run id (created when missing; set RUNNING when ``reopen``) and
    whether it was created."""
    found = _all_runs(
        client, experiment_id, f"tags.`qsweep.kind` = 'study' and tags.`qsweep.study` = '{study}'"
    )
    if found:
        run = sorted(found, key=lambda r: r.info.start_time)[0]
        if reopen and run.info.status != "RUNNING":
            client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, False
    tags = {"qsweep.kind": "study", "qsweep.study": study, "qsweep.code_version": version}
    return client.create_run(experiment_id, run_name=study, tags=tags).info.run_id, True


def _config_names() -> list[str]:
    import dataclasses

    from model.config import TrialConfig

    return [f.name for f in dataclasses.fields(TrialConfig)]


# ------------------------------------------------------------------------------------
def log_study_artifacts(
    tracking_uri: str,
    study: str,
    files: list[Path],
    *,
    artifact_path: str | None = None,
    tags: dict | None = None,
) -> str:
    """Attach files (e.g. the report) to the study's parent run; returns its run id.

    The run is created when the study has none yet (a report of a table without MLflow
    runs); its status is left as it is (a running driver keeps it RUNNING).
    """
    client = _client(tracking_uri)
    experiment_id = _experiment_id(client, study)
    run_id, created = _study_run(client, experiment_id, study, code_version(), reopen=False)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))
    for path in files:
        path = Path(path)
        if path.is_dir():
            sub = f"{artifact_path}/{path.name}" if artifact_path else path.name
            client.log_artifacts(run_id, str(path), artifact_path=sub)
        else:
            client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    if created:
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def experiment_id(tracking_uri: str, study: str) -> str | None:
    """The id of the study's experiment in the store; None when it has none."""
    experiment = _client(tracking_uri).get_experiment_by_name(study)
    return experiment.experiment_id if experiment is not None else None


def load_trial_runs(tracking_uri: str, study: str):
    """One row per trial run (columns named as in trials.parquet; best effort)."""
    import pandas as pd

    from model.config import TrialConfig
    from orchestrator.results import DATA_COLUMNS, normalise_row

    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return pd.DataFrame([], columns=list(normalise_row({}, study=study)))
    defaults = TrialConfig().to_dict()
    rows = []
    for run in _all_runs(client, experiment.experiment_id):
        tags = run.data.tags
        if "qsweep.trial_id" not in tags:
            continue
        row: dict[str, Any] = {
            "trial_id": tags["qsweep.trial_id"],
            "point_id": tags.get("qsweep.point_id"),
            "seed": int(tags["qsweep.seed"]) if tags.get("qsweep.seed", "").isdigit() else None,
            "status": tags.get("qsweep.status"),
            "error": tags.get("qsweep.error"),
            "device": tags.get("qsweep.device"),
            "started_at": tags.get("qsweep.started_at"),
            "finished_at": tags.get("qsweep.finished_at"),
        }
        for key in FINAL_METRICS:
            if key in run.data.metrics:
                value = run.data.metrics[key]
                row[key] = int(value) if _METRIC_TYPES[key] is int else value
        for key, text in run.data.params.items():
            if key in defaults and key != "seed":
                row[key] = _typed(text, defaults[key])
            elif key in DATA_COLUMNS:  # the trial's data setting
                row[key] = _typed(text, DATA_COLUMNS[key]())
        rows.append(normalise_row(row, study=study))
    return pd.DataFrame(rows, columns=list(normalise_row({}, study=study)))


def _typed(text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return text == "True"
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        return None
    return text


# ------------------------------------------------------------------------------------
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
    if "qsweep.model_uri" not in tags:
        why = tags.get("qsweep.model_error") or f"status {tags.get('qsweep.status', '?')}"
        raise ConfigError(f"trial run {run.info.run_id} ({name}) has no logged model ({why}).")
    return {
        "run_id": run.info.run_id,
        "model_uri": tags["qsweep.model_uri"],
        "encoder": tags.get("qsweep.encoder", ""),
        "head": run.data.params.get("head", ""),
        "trial_id": name,
    }


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

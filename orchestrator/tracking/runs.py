"""Synchronous MLflow logging of a study's runs: the operations the background writer
(:mod:`orchestrator.tracking.writer`) performs, also usable directly (tests, reconcile).

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

import sys
import time
from pathlib import Path
from typing import Any

from model.errors import ServiceError
from model.types import FINAL_METRICS as TRIAL_METRICS
from model.types import FINAL_TAGS
from orchestrator.tracking.store import (
    _BATCH_METRICS,
    _STATUS,
    _TAG_MAX,
    EPOCH_FLUSH_S,
    EPOCH_PREFIX,
    FINAL_METRICS,
    _all_runs,
    _client,
    _config_names,
    _experiment_id,
    _flat,
    _is_number,
    _study_run,
    best_row,
    code_version,
    store_init_lock,
)

__all__ = ["TrialLogger", "trial_description", "dataset_entity", "log_study_artifacts"]


# ------------------------------------------------------------------------------------

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # vs "genai_development"


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
            with store_init_lock(tracking_uri):
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
        self._bulk = True  # finished runs in bulk into a SQL store, until that fails once

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
        self.delete_runs([old.info.run_id for old in self._existing(trial_id)])
        run_id = self.create_run(trial_id, point_id=point_id, seed=seed, params=params, tags=tags)
        self.runs[trial_id] = run_id
        return run_id

    # --- building blocks (the background writer composes them) -------------------------
    def trial_tags(
        self, trial_id: str, *, point_id: str, seed: Any, tags: dict[str, Any] | None = None
    ) -> dict[str, str]:
        """The tags a trial run starts with (status ``running``), plus ``tags``."""
        return {
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

    def create_run(
        self,
        trial_id: str,
        *,
        point_id: str,
        seed: Any,
        params: dict[str, Any],
        tags: dict[str, Any] | None = None,
        start_ms: int | None = None,
    ) -> str:
        """A new RUNNING trial run with its tags, params and dataset input; its run id."""
        from mlflow.entities import Param

        tags = self.trial_tags(trial_id, point_id=point_id, seed=seed, tags=tags)
        run = self.client.create_run(
            self.experiment_id, run_name=trial_id, tags=tags, start_time=start_ms
        )
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        if self.dataset is not None:
            _log_dataset(self.client, run_id, self.dataset)
        return run_id

    def delete_runs(self, run_ids) -> None:
        for run_id in run_ids:
            self._pending.pop(run_id, None)
            self.client.delete_run(run_id)

    def final_entries(
        self, row: dict[str, Any], tags: dict[str, Any] | None = None
    ) -> tuple[list[tuple[str, float, int, int]], dict[str, str]]:
        """A finished trial's final metrics ``(key, value, timestamp_ms, 0)`` and final tags
        (status, times, device, engine, error, description, ``tags``) from its table row."""
        now = int(time.time() * 1000)
        metrics = [(k, float(row[k]), now, 0) for k in FINAL_METRICS if _is_number(row.get(k))]
        final = {"qsweep.status": str(row["status"])}
        for key in ("started_at", "finished_at", *FINAL_TAGS):  # device, engine
            if row.get(key):
                final[f"qsweep.{key}"] = str(row[key])
        if row.get("error"):
            final["qsweep.error"] = str(row["error"])[:_TAG_MAX]
        final["mlflow.note.content"] = trial_description(row)
        final.update({k: str(v) for k, v in (tags or {}).items()})
        return metrics, final

    def finished_run(
        self,
        row: dict[str, Any],
        *,
        params: dict[str, Any] | None = None,
        epochs: list | None = None,
        tags: dict[str, Any] | None = None,
        start_ms: int | None = None,
    ):
        """A finished trial as one :class:`bulk.FinishedRun` (start and final tags, params,
        final metrics and the per-epoch history ``epochs``)."""
        from orchestrator.tracking.bulk import FinishedRun

        metrics, final = self.final_entries(row, tags)
        start = self.trial_tags(
            row["trial_id"], point_id=row.get("point_id") or "", seed=row.get("seed"), tags=tags
        )
        end_ms = int(time.time() * 1000)
        return FinishedRun(
            run_name=row["trial_id"],
            start_ms=start_ms or end_ms,
            end_ms=end_ms,
            status=_STATUS.get(row["status"], "FINISHED"),
            tags={**start, **final},
            params={k: str(v) for k, v in (params or row_params(row)).items()},
            metrics=[*metrics, *(epochs or [])],
        )

    def can_bulk(self) -> bool:
        """Whether finished runs go into the store many per transaction (:mod:`bulk`)."""
        from orchestrator.tracking import bulk

        return self._bulk and bulk.bulk_store(self.client) is not None

    def write_finished(self, runs: list) -> list[str]:
        """Write finished runs: in one transaction into a SQL store (:mod:`bulk`), else (an
        HTTP server, or a store whose schema bulk writing does not know) call by call."""
        from orchestrator.tracking import bulk

        if self.can_bulk():
            dataset = (self.dataset.name, self.dataset.digest) if self.dataset else None
            try:
                return bulk.write_finished_runs(
                    self.client, self.experiment_id, runs, dataset=dataset
                )
            except Exception as err:  # noqa: BLE001 - an unknown schema: the client API instead
                if _transient(err):
                    raise
                self._bulk = False
                print(
                    f"qsweep: MLflow store {self.uri}: bulk writes failed ({type(err).__name__}: "
                    f"{str(err)[:200]}); logging runs one call at a time instead",
                    file=sys.stderr,
                )
        return [self._write_one(run) for run in runs]

    def _write_one(self, run) -> str:
        from mlflow.entities import Metric, Param

        created = self.client.create_run(
            self.experiment_id, run_name=run.run_name, tags=run.tags, start_time=run.start_ms
        )
        run_id = created.info.run_id
        params = [Param(k, v) for k, v in run.params.items()]
        metrics = [Metric(*m) for m in run.metrics]
        for lo in range(0, max(len(params), len(metrics), 1), _BATCH_METRICS):
            self.client.log_batch(
                run_id,
                params=params[lo : lo + _BATCH_METRICS],
                metrics=metrics[lo : lo + _BATCH_METRICS],
            )
        if self.dataset is not None:
            _log_dataset(self.client, run_id, self.dataset)
        self.client.set_terminated(run_id, status=run.status, end_time=run.end_ms)
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
            run_id = self.start(
                trial_id,
                point_id=row.get("point_id") or "",
                seed=row.get("seed") or 0,
                params=row_params(row),
                tags=tags,
            )
            self.runs.pop(trial_id, None)
        metrics, final = self.final_entries(row, tags)
        self.client.log_batch(
            run_id,
            metrics=[Metric(*m) for m in metrics],
            tags=[RunTag(k, v) for k, v in final.items()],
        )
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
        """Log table rows that have no terminated run (the driver was killed between the
        table and MLflow), replacing their unfinished runs; returns how many were logged."""
        runs_of: dict[str, list] = {}
        for run in _all_runs(self.client, self.experiment_id):
            trial = run.data.tags.get("qsweep.trial_id")
            if trial:
                runs_of.setdefault(trial, []).append(run)
        missing = [
            row
            for row in rows
            if not any(
                r.info.status in ("FINISHED", "FAILED") for r in runs_of.get(row["trial_id"], [])
            )
        ]
        self.delete_runs(r.info.run_id for row in missing for r in runs_of.get(row["trial_id"], []))
        for lo in range(0, len(missing), 500):
            self.write_finished([self.finished_run(row) for row in missing[lo : lo + 500]])
        return len(missing)

    def log_model(self, run_id: str, row: dict[str, Any], state: Any) -> str:
        """Log a trial's trained model on its run and register it (:func:`models.log_trial_model`)."""
        from orchestrator.tracking.models import log_trial_model

        return log_trial_model(
            self.client, self.uri, self.study, run_id, row, state, self.model_input
        )

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
        # MLflow 3's UI opens an experiment without this tag on its GenAI (traces) view; a
        # study is model development: the classic runs table
        self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
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
        failed = sum(r.get("status") == "failed" for r in rows)
        self.update_study_counts(
            planned=planned, done=len(rows), failed=failed, best=best_row(rows, metric, mode)
        )

    def update_study_counts(
        self, *, planned: int, done: int, failed: int, best: dict[str, Any] | None
    ) -> None:
        """The study run's ``trials_planned``, ``trials_done``, ``trials_failed`` (step = done)
        and ``best/<metric>`` of the row ``best`` (tag ``qsweep.best_trial``)."""
        from mlflow.entities import Metric, RunTag

        if not self.parent_run_id:
            return
        now = int(time.time() * 1000)
        metrics = [
            Metric("trials_planned", planned, now, done),
            Metric("trials_done", done, now, done),
            Metric("trials_failed", failed, now, done),
        ]
        tags = []
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


def row_params(row: dict[str, Any]) -> dict[str, Any]:
    """A trial run's params from its table row: its TrialConfig settings and seed."""
    params = {k: row[k] for k in _config_names() if k in row and row[k] is not None}
    params["seed"] = row.get("seed")
    return params


def _transient(err: BaseException) -> bool:
    """Whether an MLflow call failed for a reason that may pass (server away, store locked,
    network), so the call is worth retrying; False for refusals (bad value, no such run)."""
    if isinstance(err, (OSError, TimeoutError, ConnectionError)):
        return True
    code = getattr(err, "error_code", None)
    if code is not None:
        return code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED")
    name = type(err).__name__
    return name in ("OperationalError", "ConnectionError", "Timeout", "ReadTimeout")


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

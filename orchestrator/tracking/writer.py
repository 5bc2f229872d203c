"""The driver's MLflow logging, on one background thread: never on Ray Tune's event loop.

    tracker = StudyTracker(uri, "quickstart", study_dir=..., metric="val_accuracy", mode="max")
    tracker.open(spec.study_dict(), spec_file=spec.source, planned=4)   # synchronous, at start
    tracker.log_dataset(embedded, spec.data.to_dict())                  # synchronous, at start
    tracker.reconcile(rows)                                             # synchronous, at start
    tracker.start("p000_s0", point_id="p000", seed=0, params=..., tags=...)   # these four
    tracker.log_epoch("p000_s0", {"val_accuracy": 0.7}, step=1)               # only enqueue
    tracker.finish("p000_s0", row, model=ModelRef(states_file, member=0, pack_id="p000_s0+4"))
    tracker.abandon("p000_s1")
    if tracker.failure: ...                    # MLflow away past the outage limit: stop the study
    tracker.close(interrupted=False)           # drain, final counts, top-K registration, study run

What the thread does with a trial (``orchestrator.tracking.runs.TrialLogger`` does the calls):
- a trial that ends within :data:`LIVE_AFTER_S` of its start is written once, finished, in
  a batch with the others that ended in the last :data:`BULK_FLUSH_S` (one transaction for
  the batch on a SQL store: :mod:`bulk`); a longer trial gets its run while it trains,
  its per-epoch curves every :data:`EPOCH_FLUSH_S`, its final values when it ends;
- the study run's counts and best trial are updated every :data:`STUDY_UPDATE_S`;
- models: every completed trial's state is kept as a small file in the study directory
  (``models/<pack id>.pt``; the run's tags ``qsweep.model_file``, ``qsweep.model_member``,
  which ``qsweep predict`` loads); ``register: best`` logs and registers a full MLflow
  model for the best ``register_top`` trials by the study metric, updated every
  :data:`REGISTER_EVERY_S` and at the end (versions that drop out of the top are deleted),
  ``all`` for every completed trial, ``none`` for none.
- a failed call that may pass (server away, store locked) is retried with back-off, in
  order, while trials go on; the writer says once that it is buffering and once that it
  caught up. Past :data:`OUTAGE_LIMIT_S` :attr:`failure` is set and the driver stops the
  study cleanly (``--resume`` reconciles MLflow from trials.parquet). A refused call (a bad
  value) is reported in one line and skipped: logging never fails or retrains a trial.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from orchestrator.tracking.runs import TrialLogger, _transient, row_params
from orchestrator.tracking.store import EPOCH_PREFIX, _all_runs, _is_number

__all__ = ["StudyTracker", "ModelRef", "REGISTER_CHOICES"]

# An MLflow server's client retries a failed request for minutes by default; the writer
# retries itself (and keeps the study going), so each call gives up quickly.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

LIVE_AFTER_S = 10.0  # a trial still training after this long gets its run while it trains
BULK_FLUSH_S = 1.0  # finished short trials are written in batches at most this far apart
BULK_MAX = 500  # ... and at most this many per transaction
EPOCH_FLUSH_S = 2.0  # per-epoch curves of live runs reach MLflow at most this late
STUDY_UPDATE_S = 5.0  # the study run's counts and best trial
REGISTER_EVERY_S = 60.0  # top-K registration (register: best)
OUTAGE_LIMIT_S = float(os.environ.get("QSWEEP_MLFLOW_OUTAGE_S", "900"))
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
REGISTER_CHOICES = ("best", "all", "none")
MODELS_DIR = "models"


@dataclass(frozen=True)
class ModelRef:
    """Where a completed trial's trained state is: member ``member`` of a pack's states file."""

    states_file: Path  # a pack's final checkpoint file ({member index: state})
    member: int
    pack_id: str


@dataclass
class _Trial:
    trial_id: str
    point_id: str
    seed: Any
    params: dict[str, Any]
    tags: dict[str, Any]
    t0: float  # monotonic start
    start_ms: int
    epochs: list[tuple[str, float, int, int]] = field(default_factory=list)  # not yet sent
    run_id: str | None = None  # set once its run exists (a live trial)
    row: dict[str, Any] | None = None  # set when it finished
    model: ModelRef | None = None
    abandoned: bool = False


class StudyTracker:
    """Driver-side MLflow logging of one study, done by a background thread (module doc)."""

    def __init__(
        self,
        uri: str,
        study: str,
        *,
        study_dir: Path,
        metric: str = "val_accuracy",
        mode: str = "max",
        register: str = "best",
        register_top: int = 10,
        stream: TextIO | None = None,
        progress_file: Path | None = None,
    ) -> None:
        self.logger = TrialLogger(uri, study)  # ServiceError now when the store refuses
        # MLflow's SQL store logs every failed transaction with its traceback; the thread
        # reports a failure in one line itself (and retries what may pass)
        logging.getLogger("mlflow.store").setLevel(logging.CRITICAL)
        self.uri, self.study = uri, study
        self.study_dir = Path(study_dir)
        self.metric, self.mode = metric, mode
        self.register, self.register_top = register, register_top
        self.stream = stream if stream is not None else sys.stderr
        self.failure: str | None = None  # set when MLflow stayed away past OUTAGE_LIMIT_S
        # a shard of a job array: its counts go to this file; the study run sums the shards'
        self.progress_file = Path(progress_file) if progress_file else None
        self.total_planned = 0  # the whole study's trials (all shards)
        self.timings: dict[str, float] = {}  # seconds of MLflow work per kind (benchmarks)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._trials: dict[str, _Trial] = {}
        self._finished: list[_Trial] = []  # ended without a run: written in bulk
        self._existing: dict[str, list[str]] = {}  # trial id -> run ids of earlier attempts
        self._planned = 0
        self._done = self._failed = 0
        self._best: dict[str, Any] | None = None
        self._study_dirty = False
        self._completed: list[tuple[float, str, str]] = []  # (score, trial id, run id)
        self._model_of: dict[str, tuple[ModelRef, dict[str, Any]]] = {}  # trial id -> model
        self._registered: dict[str, str] = {}  # trial id -> registered model version
        self._registered_dirty = False
        self._last = {"bulk": 0.0, "epochs": 0.0, "study": 0.0, "register": time.monotonic()}
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._attempt = 0
        self._closing = threading.Event()
        self._interrupted = False
        self._thread: threading.Thread | None = None

    # --- synchronous, before the first trial -----------------------------------------------
    def open(
        self, spec: dict[str, Any], *, spec_file=None, planned: int = 0, total: int | None = None
    ) -> str:
        """The study run (created or reopened); every run of the experiment is listed once, so
        a trial rerun by --resume replaces its earlier run without a search per trial."""
        self.total_planned = planned if total is None else total  # all shards
        run_id = self.logger.open_study(spec, spec_file=spec_file, planned=self.total_planned)
        self._planned = planned
        for run in _all_runs(self.logger.client, self.logger.experiment_id):
            trial = run.data.tags.get("qsweep.trial_id")
            if trial:
                self._existing.setdefault(trial, []).append(run.info.run_id)
        return run_id

    def log_dataset(self, data: Any, data_config: dict[str, Any]) -> None:
        self.logger.log_dataset(data, data_config)

    def reconcile(self, rows: list[dict[str, Any]]) -> int:
        """Rows of trials.parquet without a terminated run get one (``TrialLogger.reconcile``);
        the rows also seed the study run's counts and best trial."""
        n = self.logger.reconcile(rows)
        for row in rows:
            self._count(row)
            self._existing.pop(row["trial_id"], None)
        return n

    def start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="qsweep-mlflow", daemon=True)
        self._thread.start()

    # --- called on Tune's event loop: enqueue only ---------------------------------------
    def start(self, trial_id: str, *, point_id: str, seed: Any, params: dict, tags=None) -> None:
        self._queue.put(("start", trial_id, point_id, seed, params, dict(tags or {}),
                         time.monotonic(), int(time.time() * 1000)))  # fmt: skip

    def log_epoch(self, trial_id: str, metrics: dict[str, Any], step: int) -> None:
        self._queue.put(("epoch", trial_id, metrics, int(step), int(time.time() * 1000)))

    def finish(self, trial_id: str, row: dict[str, Any], *, model: ModelRef | None = None) -> None:
        self._queue.put(("finish", trial_id, row, model))

    def abandon(self, trial_id: str) -> None:
        self._queue.put(("abandon", trial_id))

    def close(self, *, interrupted: bool = False, timeout_s: float | None = None) -> bool:
        """Drain the queue (at most ``timeout_s``; None: until done or the outage limit), write
        the final counts, register the top trials, end the study run (KILLED when
        ``interrupted``). False when the queue could not be drained in time."""
        self._interrupted = interrupted
        self._closing.set()
        self._queue.put(("wake",))
        if self._thread is None:
            self._run()
            return True
        self._thread.join(timeout_s)
        drained = not self._thread.is_alive()
        if not drained:
            waiting = self._queue.qsize() + len(self._finished)
            print(
                f"qsweep run: MLflow: {waiting} trial record(s) not written after "
                f"{timeout_s:g} s; `qsweep run ... --resume` logs them from trials.parquet",
                file=self.stream,
                flush=True,
            )
        return drained

    def exit_on_error(self, exc_type, exc, tb) -> bool:
        """Context-manager exit for the driver (``ExitStack.push``): when the driver raises,
        what is queued gets a short drain and the study run ends KILLED (``--resume``
        reopens it); the exception propagates."""
        if exc_type is not None:
            self.close(interrupted=True, timeout_s=30.0)
        return False

    # --- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            closing = self._closing.is_set()
            try:
                item = self._queue.get(timeout=0.2 if not closing else 0.01)
                self._apply(item)
                for _ in range(10_000):  # take what else is waiting
                    self._apply(self._queue.get_nowait())
            except queue.Empty:
                pass
            self._tick(closing=closing)
            if closing and self._queue.empty() and self._idle():
                self._final()
                return
            if closing and self.failure:
                return

    def _apply(self, item: tuple) -> None:
        kind = item[0]
        if kind == "start":
            _, tid, point_id, seed, params, tags, t0, start_ms = item
            old = self._trials.get(tid)
            if old is not None and old.run_id:  # restarted by Ray (a lost worker): replaced
                self._existing.setdefault(tid, []).append(old.run_id)
            self._trials[tid] = _Trial(tid, point_id, seed, params, tags, t0, start_ms)
        elif kind == "epoch":
            _, tid, metrics, step, now = item
            trial = self._trials.get(tid)
            if trial is not None:
                trial.epochs += [
                    (f"{EPOCH_PREFIX}{k}", float(v), now, step)
                    for k, v in metrics.items()
                    if _is_number(v) and k != "epoch"
                ]
        elif kind == "finish":
            _, tid, row, model = item
            trial = self._trials.get(tid) or _Trial(
                tid, row.get("point_id") or "", row.get("seed"), row_params(row), {},
                time.monotonic(), int(time.time() * 1000),
            )  # fmt: skip
            trial.row, trial.model = row, model
            self._count(row)
            if trial.run_id is None:
                self._trials.pop(tid, None)
                self._finished.append(trial)
            else:
                self._trials[tid] = trial
        elif kind == "abandon":
            trial = self._trials.get(item[1])
            if trial is not None:
                trial.abandoned = True

    def _count(self, row: dict[str, Any]) -> None:
        self._done += 1
        self._failed += row.get("status") == "failed"
        value = row.get(self.metric)
        if row.get("status") != "failed" and _is_number(value):
            better = self._best is None or (
                value > self._best[self.metric]
                if self.mode == "max"
                else value < self._best[self.metric]
            )
            if better:
                self._best = row
        self._study_dirty = True

    def _idle(self) -> bool:
        """Nothing left to write (trials that neither ended nor got a run are dropped when
        closing: they have no row, so --resume reruns them)."""
        return not self._finished and not any(t.run_id or t.row for t in self._trials.values())

    # --- I/O, with retries -------------------------------------------------------------------
    def _io(self, what: str, action) -> bool:
        """Run one MLflow action; False when it must be retried later (the store is away)."""
        if time.monotonic() < self._retry_at:
            return False
        t0 = time.perf_counter()
        try:
            action()
        except Exception as err:  # noqa: BLE001 - classified below; never raised to the driver
            if not _transient(err):
                print(f"qsweep run: MLflow refused {what}: {type(err).__name__}: "
                      f"{str(err)[:300]}; skipped", file=self.stream, flush=True)  # fmt: skip
                return True
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                print(f"qsweep run: MLflow {self.uri} is unreachable or refuses writes ({type(err).__name__}: "
                      f"{str(err)[:200]}); training goes on and the runs are buffered",
                      file=self.stream, flush=True)  # fmt: skip
            elif now - self._down_since > OUTAGE_LIMIT_S and self.failure is None:
                self.failure = (
                    f"MLflow {self.uri} has been unreachable for {now - self._down_since:.0f} s "
                    f"(limit {OUTAGE_LIMIT_S:g} s, QSWEEP_MLFLOW_OUTAGE_S); the study stops; "
                    "every finished trial is in trials.parquet and `qsweep run ... --resume` "
                    "logs them to MLflow once it is back"
                )
            self._retry_at = now + BACKOFF_S[min(self._attempt, len(BACKOFF_S) - 1)]
            self._attempt += 1
            return False
        finally:
            self.timings[what.split(" ")[0]] = (
                self.timings.get(what.split(" ")[0], 0.0) + time.perf_counter() - t0
            )
        if self._down_since is not None:
            print(f"qsweep run: MLflow {self.uri} is reachable again after "
                  f"{time.monotonic() - self._down_since:.0f} s; catching up",
                  file=self.stream, flush=True)  # fmt: skip
            self._down_since = None
            self._attempt = 0
        return True

    def _tick(self, *, closing: bool) -> None:
        now = time.monotonic()
        log = self.logger
        for trial in list(self._trials.values()):  # live runs: created, curves, ends
            if trial.run_id is None:
                if trial.row is None and (closing or now - trial.t0 < LIVE_AFTER_S):
                    if trial.abandoned or closing:
                        self._trials.pop(trial.trial_id, None)  # never logged: nothing to end
                    continue
                if not self._io(f"create run of {trial.trial_id}", lambda t=trial: self._create(t)):
                    return
            if trial.row is not None:
                if not self._io(f"end run of {trial.trial_id}", lambda t=trial: self._end(t)):
                    return
                self._trials.pop(trial.trial_id, None)
            elif trial.abandoned:
                if not self._io(f"stop run of {trial.trial_id}", lambda t=trial: self._kill(t)):
                    return
                self._trials.pop(trial.trial_id, None)
        if now - self._last["epochs"] >= EPOCH_FLUSH_S or closing:
            for trial in self._trials.values():
                if trial.run_id and trial.epochs:
                    if not self._io(f"epochs of {trial.trial_id}", lambda t=trial: self._epochs(t)):
                        return
            self._last["epochs"] = now
        if self._finished and (
            closing or len(self._finished) >= BULK_MAX or now - self._last["bulk"] >= BULK_FLUSH_S
        ):
            batch = self._finished[:BULK_MAX]
            if not self._io(f"write {len(batch)} finished runs", lambda: self._bulk(batch)):
                return
            self._last["bulk"] = now
        if self._study_dirty and (closing or now - self._last["study"] >= STUDY_UPDATE_S):
            counts = self._study_counts()
            counts.pop("complete", None)
            if not self._io("study counts", lambda: log.update_study_counts(**counts)):
                return
            self._study_dirty = False
            self._last["study"] = now
        if self.register == "best" and self._registered_dirty and not closing:
            if now - self._last["register"] >= REGISTER_EVERY_S:
                self._io("model registry", self._register_best)
                self._last["register"] = now

    def _study_counts(self) -> dict[str, Any]:
        """The study run's counts: this driver's, or for a shard the sum over the shards'
        progress files (this one's written first)."""
        own = dict(planned=self._planned, done=self._done, failed=self._failed, best=self._best)
        if self.progress_file is None:
            return own
        import json

        self.progress_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.progress_file.with_name(f".{self.progress_file.name}.tmp")
        tmp.write_text(json.dumps(own, default=str))
        os.replace(tmp, self.progress_file)
        total = dict(planned=self.total_planned, done=0, failed=0, best=None, complete=True)
        for path in self.progress_file.parent.parent.glob(f"*/{self.progress_file.name}"):
            try:
                part = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            total["done"] += part["done"]
            total["failed"] += part["failed"]
            best = part.get("best")
            if (
                best
                and _is_number(best.get(self.metric))
                and (
                    total["best"] is None
                    or (best[self.metric] > total["best"][self.metric]) == (self.mode == "max")
                )
            ):
                total["best"] = best
        total["complete"] = total["done"] >= self.total_planned
        return total

    def _final(self) -> None:
        if self.register == "best" and self._registered_dirty and not self._interrupted:
            self._io("model registry", self._register_best)
        if self.progress_file is not None:  # a shard ends the study run only with the last one
            counts = self._study_counts()
            if not counts["complete"]:
                return
        self._io("study run", lambda: self.logger.close_study(interrupted=self._interrupted))

    # --- the actions ----------------------------------------------------------------------------
    def _replace_earlier(self, trial_id: str) -> None:
        self.logger.delete_runs(self._existing.pop(trial_id, []))

    def _create(self, trial: _Trial) -> None:
        self._replace_earlier(trial.trial_id)
        trial.run_id = self.logger.create_run(
            trial.trial_id, point_id=trial.point_id, seed=trial.seed, params=trial.params,
            tags=trial.tags, start_ms=trial.start_ms,
        )  # fmt: skip

    def _epochs(self, trial: _Trial) -> None:
        from mlflow.entities import Metric

        batch, trial.epochs = trial.epochs, []
        try:
            for lo in range(0, len(batch), 1000):
                self.logger.client.log_batch(
                    trial.run_id, metrics=[Metric(*m) for m in batch[lo : lo + 1000]]
                )
        except Exception:
            trial.epochs = batch + trial.epochs  # retried with the rest
            raise

    def _end(self, trial: _Trial) -> None:
        from mlflow.entities import Metric, RunTag

        if trial.epochs:
            self._epochs(trial)
        row = trial.row
        assert row is not None and trial.run_id is not None
        tags = {**trial.tags, **self._model_tags(trial)}
        metrics, final = self.logger.final_entries(row, tags)
        self.logger.client.log_batch(
            trial.run_id,
            metrics=[Metric(*m) for m in metrics],
            tags=[RunTag(k, v) for k, v in final.items()],
        )
        self._after_write(trial, trial.run_id)
        status = {"failed": "FAILED"}.get(row["status"], "FINISHED")
        self.logger.client.set_terminated(trial.run_id, status=status)

    def _kill(self, trial: _Trial) -> None:
        if trial.epochs:
            self._epochs(trial)
        self.logger.client.set_tag(trial.run_id, "qsweep.status", "interrupted")
        self.logger.client.set_terminated(trial.run_id, status="KILLED")

    def _bulk(self, batch: list[_Trial]) -> None:
        """Write finished trials: the whole batch in one transaction (a SQL store), or one
        run at a time (a server), each leaving the queue once written (no duplicates when a
        retry follows a failure half-way)."""
        for trial in batch:
            self._replace_earlier(trial.trial_id)

        def record(t: _Trial):
            return self.logger.finished_run(
                t.row, params=t.params, epochs=t.epochs,
                tags={**t.tags, **self._model_tags(t)}, start_ms=t.start_ms,
            )  # fmt: skip

        groups = [batch] if self.logger.can_bulk() else [[t] for t in batch]
        for group in groups:
            ids = self.logger.write_finished([record(t) for t in group])
            for trial, run_id in zip(group, ids, strict=True):
                self._after_write(trial, run_id)
            done = {id(t) for t in group}
            self._finished = [t for t in self._finished if id(t) not in done]

    # --- models -----------------------------------------------------------------------------
    def _model_tags(self, trial: _Trial) -> dict[str, str]:
        """Copy the trial's pack states into models/<pack id>.pt (once per pack); its tags."""
        ref = trial.model
        if ref is None or trial.row is None or trial.row.get("status") != "completed":
            return {}
        target = self.study_dir / MODELS_DIR / f"{ref.pack_id}.pt"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(ref.states_file, tmp)
            os.replace(tmp, target)
        tags = {"qsweep.model_file": str(target.resolve()), "qsweep.model_member": str(ref.member)}
        if self.logger.model_input is not None:
            tags["qsweep.input_dim"] = str(int(self.logger.model_input.shape[1]))
        return tags

    def _after_write(self, trial: _Trial, run_id: str) -> None:
        """A completed trial with a model becomes a candidate for the registry."""
        row = trial.row
        if trial.model is None or row is None or row.get("status") != "completed":
            return
        if trial.trial_id in self._model_of:  # a retried write: already a candidate
            return
        ref = ModelRef(self.study_dir / MODELS_DIR / f"{trial.model.pack_id}.pt",
                       trial.model.member, trial.model.pack_id)  # fmt: skip
        value = row.get(self.metric)
        if self.register == "all":
            self._model_of[trial.trial_id] = (ref, {**row, "_run_id": run_id})
            self._log_model(trial.trial_id)
            del self._model_of[trial.trial_id]
        elif self.register == "best" and _is_number(value):
            score = value if self.mode == "max" else -value
            if len(self._completed) >= 4 * self.register_top and score <= min(self._completed)[0]:
                return  # below every kept candidate: it cannot reach the top
            self._model_of[trial.trial_id] = (ref, {**row, "_run_id": run_id})
            self._completed.append((score, trial.trial_id, run_id))
            self._registered_dirty = True
            if len(self._completed) > 8 * self.register_top:
                self._trim()

    def _state(self, ref: ModelRef) -> Any:
        import torch

        # our own file: state_dicts of tensors, or fitted sklearn Pipelines (pickled)
        return torch.load(ref.states_file, weights_only=False)[ref.member]

    def _log_model(self, trial_id: str) -> str | None:
        from orchestrator.tracking.models import log_trial_model

        ref, row = self._model_of[trial_id]
        run_id = row["_run_id"]
        try:
            log_trial_model(self.logger.client, self.uri, self.study, run_id, row,
                            self._state(ref), self.logger.model_input)  # fmt: skip
        except Exception as err:  # noqa: BLE001 - numbers are logged; say why the model is not
            if _transient(err):
                raise
            why = f"{type(err).__name__}: {err}"
            self.logger.client.set_tag(run_id, "qsweep.model_error", why[:4000])
            print(f"qsweep: trial {trial_id}: model not logged to MLflow: {why}", file=self.stream)
            return None
        return self.logger.client.get_run(run_id).data.tags.get("qsweep.model_version") or None

    def _trim(self) -> None:
        """Keep the best 4 x register_top candidates (and their rows): bounded memory."""
        self._completed.sort(reverse=True)
        for _, tid, _ in self._completed[self.register_top * 4 :]:
            if tid not in self._registered:
                self._model_of.pop(tid, None)
        del self._completed[self.register_top * 4 :]

    def _register_best(self) -> None:
        """Log + register the current top ``register_top`` trials that are not yet; delete
        the registered versions of trials that dropped out of the top."""
        self._trim()
        top = {tid for _, tid, _ in self._completed[: self.register_top]}
        for tid in [t for t in self._registered if t not in top]:
            version = self._registered.pop(tid)
            if version:
                self.logger.client.delete_model_version(self.study, version)
        for _, tid, _ in self._completed[: self.register_top]:
            if tid not in self._registered:
                self._registered[tid] = self._log_model(tid) or ""
        self._registered_dirty = False

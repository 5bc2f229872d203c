"""The Ray Tune driver of a study: the ONLY module that imports ray.

    from orchestrator.spec import load_spec
    from orchestrator.tune_driver import run_study
    outcome = run_study(load_spec("search_spaces/quickstart.yaml"), study_dir=Path("results/quickstart"))

Embeddings are computed once on the driver and shared with every trial through the
object store (``tune.with_parameters``). Each trial is a plain function wrapping
``model.training.fit``; it reports every epoch (so ASHA can stop it) and a final
summary. Test hooks: ``QSWEEP_FIT=module:function`` replaces ``fit`` and
``QSWEEP_TEST_DATA=module:function`` supplies the EmbeddedSplits. A driver-side ``Callback`` writes ``trials.parquet`` rows and MLflow runs as
trials end. Failed trials are retried in the trial (``retries``) and then recorded with
their error; SIGTERM / SIGUSR1 stop the study gracefully (``outcome.interrupted``).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

os.environ.setdefault(
    "RAY_AIR_NEW_OUTPUT", "0"
)  # no experiment banner; qsweep prints its own progress
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune import Callback, RunConfig, Stopper, TuneConfig, Tuner  # noqa: E402

from model.config import TrialConfig
from model.errors import ServiceError
from model.types import EPOCH_METRICS, EmbeddedSplits
from orchestrator.progress import Progress
from orchestrator.results import (
    ResultsTable,
    StudyLock,
    plain,
    prepare_study_dir,
    record_study,
    trial_row,
    trials_path,
    utc_now,
)
from orchestrator.spec import StudySpec
from orchestrator.tracking import TrialLogger, check_tracking_uri, default_tracking_uri

__all__ = ["run_study", "StudyOutcome", "DEFAULT_FIT", "INTERRUPTED_EXIT"]

DEFAULT_FIT = "model.training:fit"
INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: Slurm requeue scripts rerun with --resume
FitRef = str | Callable[..., Any]


@dataclass
class StudyOutcome:
    study_dir: Path
    planned: int
    ran: int  # trials finished by this invocation (any final status)
    skipped: int  # already final in trials.parquet (--resume)
    failed: int
    stopped: int
    interrupted: bool
    wall_time_s: float
    tracking_uri: str


# ------------------------------------------------------------------------------------
def _resolve_fit(ref: FitRef) -> Callable[..., Any]:
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _trial_dict(config: dict[str, Any], fixed: dict[str, Any], seed: int) -> dict[str, Any]:
    if "qsweep" in config:  # explicit grid / DOE point
        return dict(config["qsweep"]["config"])
    return {**fixed, **{k: plain(v) for k, v in config.items()}, "seed": seed}


def _trainable(
    config: dict[str, Any],
    *,
    data: EmbeddedSplits,
    fit_ref: FitRef,
    retries: int,
    cpu: float,
    fixed: dict[str, Any],
    seed: int,
    metric: str,
) -> None:
    """One trial: ``fit`` with per-epoch ``tune.report`` and in-trial retries."""
    import torch

    torch.set_num_threads(max(1, int(cpu)))
    fit = _resolve_fit(fit_ref)
    error, last_tb = "", ""
    for attempt in range(1, retries + 2):
        try:
            cfg = TrialConfig.from_dict(_trial_dict(config, fixed, seed), where="trial")

            def on_epoch(metrics: dict[str, Any], _attempt: int = attempt) -> None:
                tune.report({**{k: plain(v) for k, v in metrics.items()}, "attempt": _attempt})

            result = fit(cfg, data, on_epoch=on_epoch)
        except Exception as err:  # noqa: BLE001 - any failure of the science is recorded
            error = f"{type(err).__name__}: {err}"
            last_tb = traceback.format_exc(limit=3)
            continue
        final = {
            **result.summary(),
            "qsweep_final": 1,
            "qsweep_status": "completed",
            "attempts": attempt,
        }
        if metric not in final:
            best = (
                result.history[result.best_epoch - 1]
                if 0 < result.best_epoch <= len(result.history)
                else {}
            )
            final[metric] = best.get(metric, math.nan)
        tune.report(final)
        return
    tune.report(
        {
            metric: math.nan,
            "qsweep_final": 1,
            "qsweep_status": "failed",
            "attempts": retries + 1,
            "error": error,
            "traceback": last_tb[-2000:],
        }
    )


class _InterruptStopper(Stopper):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.event.is_set()

    def __getstate__(self) -> dict:
        # Tuner pickles its run config for Tuner.restore, which qsweep does not use.
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


@dataclass
class _Live:
    trial_id: str
    point_id: str
    seed: int
    config: dict[str, Any]
    started_at: str
    t0: float
    best: float | None = None
    best_epoch: int | None = None
    last_epoch: int = 0


class _StudyCallback(Callback):
    """Driver side: trial ids, MLflow runs, table rows, progress."""

    def __init__(
        self,
        spec: StudySpec,
        table: ResultsTable,
        logger: TrialLogger,
        progress: Progress,
        interrupted: threading.Event,
        on_signal: Callable[[int, Any], None],
        next_index: int,
    ) -> None:
        self.spec = spec
        self.table = table
        self.logger = logger
        self.progress = progress
        self.interrupted = interrupted
        self.on_signal = on_signal
        self.next_index = next_index
        self.live: dict[str, _Live] = {}
        self.ran = self.failed = self.stopped = 0

    def __getstate__(self) -> dict:
        # Tuner pickles its run config for Tuner.restore, which qsweep does not use.
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # tune.run installs its own SIGUSR1 handler; ours also records that we were interrupted.
        if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) is not self.on_signal:
            signal.signal(signal.SIGUSR1, self.on_signal)
        self.progress.maybe_print()

    def _live(self, trial) -> _Live:
        live = self.live.get(trial.trial_id)
        if live is not None:
            return live
        config = trial.config
        if "qsweep" in config:
            meta = config["qsweep"]
            trial_id, point_id, seed = meta["trial_id"], meta["point_id"], meta["seed"]
        else:
            seed = self.spec.seeds[0]
            point_id = f"o{self.next_index:03d}"
            self.next_index += 1
            trial_id = f"{point_id}_s{seed}"
        values = _trial_dict(config, self.spec.fixed, seed)
        full = {**TrialConfig().to_dict(), **values}
        live = _Live(trial_id, point_id, seed, full, utc_now(), time.monotonic())
        self.live[trial.trial_id] = live
        return live

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        live = self._live(trial)
        self.logger.start(live.trial_id, point_id=live.point_id, seed=live.seed, params=live.config)
        self.progress.started(live.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial, result: dict, **info: Any
    ) -> None:
        live = self._live(trial)
        if result.get("qsweep_final") or "epoch" not in result:
            return
        epoch = int(result["epoch"])
        live.last_epoch = epoch
        value = result.get("val_accuracy")
        if isinstance(value, (int, float)) and (live.best is None or value > live.best):
            live.best, live.best_epoch = float(value), epoch
        metrics = {k: v for k, v in result.items() if k in EPOCH_METRICS}
        self.logger.log_epoch(live.trial_id, metrics, step=epoch)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get("qsweep_final"):
            self._record(trial, last.get("qsweep_status", "completed"), last)
        elif not self.interrupted.is_set():
            self._record(trial, "stopped", last)  # stopped early by the scheduler (ASHA)
        else:
            self._forget(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if self.interrupted.is_set():
            self._forget(trial)
            return
        message = "trial process failed"
        try:
            if trial.error_file and os.path.exists(trial.error_file):
                lines = [x for x in Path(trial.error_file).read_text().splitlines() if x.strip()]
                message = lines[-1] if lines else message
        except Exception:  # noqa: BLE001 - best effort
            pass
        self._record(trial, "failed", {"error": message, "attempts": 1})

    def abandon_all(self) -> None:
        """Trials still running when Tune returned (graceful stop): not rows; runs KILLED."""
        for live in self.live.values():
            self.progress.running.discard(live.trial_id)
            self.logger.abandon(live.trial_id)
        self.live.clear()

    def _forget(self, trial) -> None:
        live = self.live.pop(trial.trial_id, None)
        if live is not None:
            self.progress.running.discard(live.trial_id)
            self.logger.abandon(live.trial_id)

    def _record(self, trial, status: str, last: dict[str, Any]) -> None:
        live = self._live(trial)
        self.live.pop(trial.trial_id, None)
        partial = dict(
            val_accuracy=live.best,
            best_epoch=live.best_epoch,
            epochs_run=live.last_epoch,
            wall_time_s=time.monotonic() - live.t0,
        )
        row = trial_row(
            live.config,
            trial_id=live.trial_id,
            point_id=live.point_id,
            seed=live.seed,
            status=status,
            started_at=live.started_at,
            last=last,
            partial=partial,
        )
        self.table.add(row)
        self.logger.finish(live.trial_id, row)
        self.ran += 1
        self.failed += status == "failed"
        self.stopped += status == "stopped"
        value = row.get(self.spec.metric) if self.spec.metric in row else last.get(self.spec.metric)
        self.progress.finished(live.trial_id, status, plain(value), time.monotonic() - live.t0)


# ------------------------------------------------------------------------------------
def _search_space(spec: StudySpec) -> dict[str, Any]:
    defaults = TrialConfig()
    space: dict[str, Any] = {}
    for name, levels in spec.factors.items():
        if isinstance(levels, list):
            space[name] = tune.choice(levels)
            continue
        low, high, log = levels["low"], levels["high"], levels["log"]
        if isinstance(getattr(defaults, name), int):
            space[name] = tune.lograndint(low, high + 1) if log else tune.randint(low, high + 1)
        else:
            space[name] = tune.loguniform(low, high) if log else tune.uniform(low, high)
    return space


def _optuna_search(spec: StudySpec, table: ResultsTable, max_concurrent: int):
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = spec.search.seed
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
    }
    # Resume: warm-start a fresh, identically seeded sampler with the finished trials.
    points, rewards = table.warm_start(spec.factors, spec.metric)
    searcher = OptunaSearch(
        sampler=samplers[spec.search.sampler](),
        points_to_evaluate=points or None,
        evaluated_rewards=rewards or None,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)


def _init_ray(address: str | None) -> bool:
    """Connect or start Ray; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=False)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **kwargs)
    except Exception as err:  # noqa: BLE001 - connection errors come in many types
        target = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ServiceError(f"could not start or reach {target}: {err}") from None
    return True


# ------------------------------------------------------------------------------------
def run_study(
    spec: StudySpec,
    *,
    study_dir: Path,
    tracking_uri: str | None = None,
    address: str | None = None,
    resume: bool = False,
    max_concurrent: int | None = None,
    fit: FitRef | None = None,
    data: EmbeddedSplits | None = None,
    stream: TextIO | None = None,
    progress_interval_s: float = 30.0,
) -> StudyOutcome:
    """Run (or resume) a study; returns counts. ``data`` skips embedding (tests, benchmarks)."""
    t0 = time.monotonic()
    study_dir = Path(study_dir).resolve()
    fit_ref: FitRef = fit or os.environ.get("QSWEEP_FIT") or DEFAULT_FIT
    concurrency = max_concurrent or spec.max_concurrent
    with StudyLock(study_dir):
        prepare_study_dir(spec, study_dir, resume=resume)
        uri = tracking_uri or default_tracking_uri(study_dir)
        check_tracking_uri(uri)
        logger = TrialLogger(uri, spec.name)
        planned_n = spec.n_trials()
        record_study(spec, study_dir)
        table = ResultsTable(trials_path(study_dir), study=spec.name)
        if not table.path.exists():
            table.write()
        done = table.done_ids()
        if done:
            logger.reconcile([r for r in table.rows.values() if r["trial_id"] in done])

        todo = (
            [p for p in spec.planned_trials() if p.trial_id not in done]
            if not spec.is_optuna
            else []
        )
        remaining = max(0, planned_n - len(done)) if spec.is_optuna else len(todo)
        outcome = StudyOutcome(study_dir, planned_n, 0, len(done), 0, 0, False, 0.0, uri)
        if remaining == 0:
            outcome.wall_time_s = time.monotonic() - t0
            return outcome

        if data is None and os.environ.get("QSWEEP_TEST_DATA"):  # test hook: "module:function"
            data = _resolve_fit(os.environ["QSWEEP_TEST_DATA"])()
        if data is None:
            from model.embeddings import load_and_embed

            data = load_and_embed(spec.data, progress=True)

        progress = Progress(
            spec.name,
            planned_n,
            metric=spec.metric,
            mode=spec.mode,
            concurrency=concurrency,
            already_done=len(done),
            stream=stream,
            interval_s=progress_interval_s,
        )
        interrupted = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            interrupted.set()

        started_ray = _init_ray(address)
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
        for s in handlers:
            signal.signal(s, on_signal)
        try:
            callback = _StudyCallback(
                spec, table, logger, progress, interrupted, on_signal,
                next_index=table.next_optuna_index(),
            )  # fmt: skip
            tuner = _tuner(spec, todo, remaining, concurrency, table, callback, interrupted,
                           study_dir, data, fit_ref)  # fmt: skip
            tuner.fit()
            callback.abandon_all()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if started_ray:
                ray.shutdown()
        outcome.ran, outcome.failed, outcome.stopped = (
            callback.ran,
            callback.failed,
            callback.stopped,
        )
        outcome.interrupted = interrupted.is_set()
        outcome.wall_time_s = time.monotonic() - t0
        progress.maybe_print(force=True)
        return outcome


def _dirname(trial) -> str:
    meta = trial.config.get("qsweep")
    return meta["trial_id"] if meta else f"trial_{trial.trial_id}"


def _tuner(
    spec, todo, remaining, concurrency, table, callback, interrupted, study_dir, data, fit_ref
) -> Tuner:
    from ray.tune import FailureConfig
    from ray.tune.schedulers import ASHAScheduler

    trainable = tune.with_parameters(
        _trainable,
        data=data,
        fit_ref=fit_ref,
        retries=spec.retries,
        cpu=spec.resources["cpu"],
        fixed=dict(spec.fixed),
        seed=spec.seeds[0],
        metric=spec.metric,
    )
    trainable = tune.with_resources(
        trainable, {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}
    )
    scheduler = None
    if spec.early_stopping:
        max_t = (
            max(p.config.epochs for p in todo)
            if todo
            else int(spec.fixed.get("epochs", TrialConfig.epochs))
        )
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=max(max_t + 1, spec.early_stopping["grace_period"] + 1),
            grace_period=spec.early_stopping["grace_period"],
            reduction_factor=spec.early_stopping["reduction_factor"],
        )
    if spec.is_optuna:
        param_space = _search_space(spec)
        tune_config = TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            search_alg=_optuna_search(spec, table, concurrency),
            scheduler=scheduler,
            num_samples=remaining,
            reuse_actors=True,
            trial_dirname_creator=_dirname,
        )
    else:
        points = [
            {
                "trial_id": p.trial_id,
                "point_id": p.point_id,
                "seed": p.seed,
                "config": p.config.to_dict(),
            }
            for p in todo
        ]
        param_space = {"qsweep": tune.grid_search(points)}
        tune_config = TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            scheduler=scheduler,
            num_samples=1,
            max_concurrent_trials=concurrency,
            reuse_actors=True,
            trial_dirname_creator=_dirname,
        )
    run_config = RunConfig(
        name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=str(study_dir / "ray"),
        verbose=0,
        callbacks=[callback],
        stop=_InterruptStopper(interrupted),
        failure_config=FailureConfig(max_failures=0),
    )
    return Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)

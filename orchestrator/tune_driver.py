"""The Ray Tune driver of a study: the ONLY module that imports ray.

    from orchestrator.spec import load_spec
    from orchestrator.tune_driver import run_study
    outcome = run_study(load_spec("search_spaces/quickstart.yaml"), study_dir=Path("results/quickstart"))

Every distinct data setting of the study (``data.*`` factors: encoder, split seed,
sentences per class) is embedded once on the driver (one model load per encoder) and
put into the object store as one object; each trial gets the small map from data key
to object reference and fetches only its own setting. Each trial is a plain function wrapping
``model.training.fit``; it reports every epoch (so ASHA can stop it) and a final
summary. Test hooks: ``QSWEEP_FIT=module:function`` replaces ``fit`` and
``QSWEEP_TEST_DATA=module:function`` supplies the EmbeddedSplits. A driver-side ``Callback`` writes ``trials.parquet`` rows and MLflow runs as
trials end. Failed trials are retried in the trial (``retries``) and then recorded with
their error; SIGTERM / SIGUSR1 stop the study gracefully (``outcome.interrupted``).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

os.environ.setdefault(
    "RAY_AIR_NEW_OUTPUT", "0"
)  # no experiment banner; qsweep prints its own progress
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tune's built-in per-result JSON/CSV/TensorBoard loggers run on the driver for every
# reported epoch (17 s for 9,000 results); qsweep reads none of their files.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Tune saves its whole experiment state (every trial's JSON) every few seconds, O(N) each
# time; qsweep resumes from trials.parquet, never from that state, so it saves once at the end.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1000000")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune import Callback, RunConfig, Stopper, TuneConfig, Tuner  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from model.config import DataConfig, TrialConfig
from model.errors import ConfigError, ServiceError
from model.types import EPOCH_METRICS, EmbeddedSplits
from orchestrator.cluster import ClusterNeed, RayNode, shortfall
from orchestrator.packing import plan_packs, resolve_pack_size, size_for
from orchestrator.progress import Progress
from orchestrator.results import (
    PROGRESS_FILE,
    ResultsTable,
    StudyLock,
    data_columns,
    plain,
    prepare_study_dir,
    record_study,
    same_data,
    shard_dir,
    shard_of,
    trial_row,
    trials_path,
    utc_now,
)
from orchestrator.spec import StudySpec, data_key, split_point
from orchestrator.tracking import check_tracking_uri, default_tracking_uri
from orchestrator.tracking.writer import ModelRef, StudyTracker

__all__ = ["run_study", "StudyOutcome", "DEFAULT_FIT", "INTERRUPTED_EXIT"]

# With Tune's file loggers off, its end-of-run analysis warns that it finds no result files.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
# ... and qsweep never reads that state back, so a failed save of it (a full disk: the
# driver stops the study and says so in one line) is not worth a traceback.
logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)

DEFAULT_FIT = "model.training:fit"
# A Ray trial whose process or node died (not a Python error: those are retried inside
# the trainable) is restarted this many times, e.g. on another node after a node loss.
LOST_TRIAL_RETRIES = 3
INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: Slurm requeue scripts rerun with --resume
CLOSE_TIMEOUT_S = 30.0  # after a stop, MLflow writes still queued get this long
FitRef = str | Callable[..., Any]
# Per-member values travel in lists, not as top-level numbers: Tune keeps min/max/mean/last
# of every top-level number of every result in each trial's state (10 kB a trial).
EPOCHS_KEY = "qsweep_epochs"  # a report's per-epoch metrics since the previous report
MEMBERS_KEY = "qsweep_members"  # a final report's per-member results, in member order
REPORT_EVERY_S = 0.5  # a trial reports to Tune at most this often (unless ASHA needs each epoch)


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
    stop_reason: str = ""  # why the driver stopped the study itself (MLflow away too long)
    phases: dict[str, float] = field(default_factory=dict)  # driver seconds by phase


# ------------------------------------------------------------------------------------
def _resolve_fit(ref: FitRef) -> Callable[..., Any]:
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _member_configs(
    config: dict[str, Any], fixed: dict[str, Any], seeds, plan: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The TrialConfig dicts of a Ray trial's members: a planned pack (``config["qsweep"]``
    is its index in ``plan``), or an Optuna suggestion repeated over the study's seeds."""
    if "qsweep" in config:  # explicit grid / DOE pack
        return [dict(m["config"]) for m in plan[config["qsweep"]]["members"]]
    values, _ = split_point({k: plain(v) for k, v in config.items()})
    return [{**fixed, **values, "seed": seed} for seed in seeds]


def _trial_data(
    config: dict[str, Any], data_base: DataConfig, plan: list[dict[str, Any]]
) -> DataConfig:
    """The data setting of a Ray trial: its pack's, or an Optuna suggestion's ``data.*``."""
    if "qsweep" in config:
        return DataConfig.from_dict(plan[config["qsweep"]]["data"])
    _, values = split_point({k: plain(v) for k, v in config.items()})
    return data_base.replace(**values) if values else data_base


def _fit_members(fit, configs, data, on_epoch, pack_size: int, retries: int) -> list[tuple]:
    """``(result or exception, attempts)`` per config: ``fit_packed`` in chunks of
    ``pack_size`` for the real ``fit`` (a member that fails alone is not retried: a
    non-finite loss repeats); a replacement ``fit`` (test hook) runs member by member,
    each retried up to ``retries`` times like an unpacked trial."""
    from model import training

    if fit is training.fit:
        out: list[tuple] = []
        for lo in range(0, len(configs), pack_size):

            def chunk_cb(by_member, _lo=lo):
                return on_epoch({_lo + m: v for m, v in by_member.items()})

            chunk = training.fit_packed(configs[lo : lo + pack_size], data, on_epoch=chunk_cb)
            out += [(r, 1) for r in chunk]
        return out
    out = []
    for m, cfg in enumerate(configs):
        attempts = 0
        while attempts <= retries:
            attempts += 1
            try:
                result = fit(cfg, data, on_epoch=lambda metrics, _m=m: on_epoch({_m: metrics}))
                break
            except Exception as err:  # noqa: BLE001 - this member alone failed
                result = err
        out.append((result, attempts))
    return out


def _final_report(result: Any, attempt: int, metric: str) -> dict[str, Any]:
    """One member's part of its pack's final report (an entry of ``MEMBERS_KEY``)."""
    if isinstance(result, Exception):
        return {"qsweep_status": "failed", "attempts": attempt,
                "error": f"{type(result).__name__}: {result}"}  # fmt: skip
    final = {**result.summary(), "qsweep_status": "completed", "attempts": attempt,
             "has_state": getattr(result, "state", None) is not None}  # fmt: skip
    if metric not in final:
        best = (
            result.history[result.best_epoch - 1]
            if 0 < result.best_epoch <= len(result.history)
            else {}
        )
        final[metric] = best.get(metric, math.nan)
    return {k: plain(v) for k, v in final.items()}


def _aggregate(values: list[float], mode: str) -> float:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not values:
        return math.nan
    return max(values) if mode == "max" else min(values)


def _trainable(
    config: dict[str, Any],
    *,
    data_refs: dict[str, Any],
    data_base: DataConfig,
    fit_ref: FitRef,
    retries: int,
    cpu: float,
    gpu: float = 0.0,
    fixed: dict[str, Any],
    seeds: tuple[int, ...],
    metric: str,
    mode: str,
    pack_size: int | str,
    plan: list[dict[str, Any]],
    every_epoch: bool = False,
) -> None:
    """One Ray trial = one pack of members, trained together (``fit_packed``).

    Epochs are reported to Tune at most every :data:`REPORT_EVERY_S` (every epoch when
    ``every_epoch``: ASHA counts reports as its time), each report carrying the epochs
    since the last one under :data:`EPOCHS_KEY` (``{member index: metrics}`` per epoch) and,
    for the scheduler, the epoch and the best member's ``metric`` at the top level (a
    pack of one reports its metrics flat too, which ASHA uses). The final report carries
    every member's final metrics or error (a list under :data:`MEMBERS_KEY`); ``metric`` there is the mean over completed
    members (what an Optuna suggestion repeated over seeds is scored by). A failure of
    the whole pack is retried up to ``retries`` times; a member that fails alone (a
    non-finite loss) is recorded as failed while the others go on.
    """
    import torch

    from model.training import resolve_device

    torch.set_num_threads(max(1, int(cpu)))
    fit = _resolve_fit(fit_ref)
    error, last_tb = "", ""
    members = _member_configs(config, fixed, seeds, plan)
    data: EmbeddedSplits = ray.get(data_refs[data_key(_trial_data(config, data_base, plan))])
    epochs: list[dict[int, dict[str, Any]]] = []  # per-epoch metrics not yet reported
    last_report = [0.0]
    for attempt in range(1, retries + 2):
        epochs.clear()
        try:
            configs = [TrialConfig.from_dict(m, where="trial") for m in members]

            def on_epoch(by_member, _attempt: int = attempt, _n: int = len(configs)) -> None:
                epochs.append({m: {k: plain(v) for k, v in metrics.items()}
                               for m, metrics in by_member.items()})  # fmt: skip
                now = time.monotonic()
                if not every_epoch and now - last_report[0] < REPORT_EVERY_S:
                    return  # sent with a later report (the final one at the latest)
                last_report[0] = now
                report: dict[str, Any] = {"attempt": _attempt, EPOCHS_KEY: list(epochs)}
                epochs.clear()
                report["epoch"] = max(int(v["epoch"]) for v in by_member.values())
                if _n == 1:
                    report.update({k: plain(v) for k, v in by_member[0].items()})
                else:
                    report[metric] = _aggregate([v.get(metric) for v in by_member.values()], mode)
                tune.report(report)

            on_gpu = resolve_device(configs[0].device).type == "cuda"
            # resources.gpu 1/k: k Ray trials on one GPU, each packs for 1/k of its memory
            share = gpu if 0 < gpu < 1 else 1.0
            size = size_for(configs[0], pack_size, gpu=on_gpu, share=share)
            results = _fit_members(fit, configs, data, on_epoch, size, retries)
        except Exception as err:  # noqa: BLE001 - a failure of the whole pack: retry it
            error = f"{type(err).__name__}: {err}"
            last_tb = traceback.format_exc(limit=3)
            if isinstance(err, ConfigError):  # the same settings fail the same way
                retries = attempt - 1
                break
            continue
        parts = [_final_report(r, attempt + tries - 1, metric) for r, tries in results]
        done = [p.get(metric) for p in parts if p["qsweep_status"] == "completed"]
        done = [v for v in done if isinstance(v, (int, float)) and not math.isnan(v)]
        final: dict[str, Any] = {
            "qsweep_final": 1, "attempts": attempt, EPOCHS_KEY: epochs, MEMBERS_KEY: parts,
            metric: sum(done) / len(done) if done else math.nan,
        }  # fmt: skip
        tune.report(final, checkpoint=_states_checkpoint([r for r, _ in results]))
        return
    part = {"qsweep_status": "failed", "attempts": retries + 1, "error": error,
            "traceback": last_tb[-2000:]}  # fmt: skip
    tune.report({metric: math.nan, "qsweep_final": 1, "attempts": retries + 1,
                 MEMBERS_KEY: [dict(part) for _ in members]})  # fmt: skip


STATES_FILE = "states.pt"  # {member index: TrialResult.state} in a pack's final checkpoint


def _states_checkpoint(results: list) -> tune.Checkpoint | None:
    """The members' trained models (``TrialResult.state``) as the pack's final Ray
    checkpoint, which Ray persists under the study's storage path where the driver reads
    it back (from any node). None when no member has one."""
    states = {m: r.state for m, r in enumerate(results) if getattr(r, "state", None) is not None}
    if not states:
        return None
    import tempfile

    import torch

    directory = Path(tempfile.mkdtemp(prefix="qsweep-states-"))
    torch.save(states, directory / STATES_FILE)
    return tune.Checkpoint.from_directory(str(directory))


def _states_file(checkpoint: tune.Checkpoint | None) -> Path | None:
    """The states file of a pack's final checkpoint, where Ray persisted it under the
    study's storage path (None without one). The tracker copies it into the study's
    ``models/`` directory; the driver never loads it."""
    if checkpoint is None:
        return None
    path = Path(checkpoint.path) / STATES_FILE
    return path if path.exists() else None


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
    pack_id: str = ""
    best: float | None = None
    best_epoch: int | None = None
    last_epoch: int = 0
    node: str | None = None  # host name of the last report (Ray's "hostname" result key)


def _member(report: dict[str, Any], index: int) -> dict[str, Any]:
    """Member ``index``'s part of a pack's final report ({} in any other report)."""
    parts = report.get(MEMBERS_KEY) or []
    return dict(parts[index]) if index < len(parts) else {}


class _StudyCallback(Callback):
    """Driver side: trial ids, MLflow runs, table rows, progress -- one of each per member."""

    def __init__(
        self,
        spec: StudySpec,
        table: ResultsTable,
        logger: StudyTracker,
        progress: Progress,
        interrupted: threading.Event,
        on_signal: Callable[[int, Any], None],
        next_index: int,
        encoder_ids: dict[str, str],
        plan: list[dict[str, Any]],
    ) -> None:
        self.spec = spec
        self.plan = plan  # the packs of a grid/DOE study; a Ray trial's config["qsweep"] indexes it
        self.encoder_ids = encoder_ids  # data key -> resolved encoder identity
        self.table = table
        self.logger = logger
        self.progress = progress
        self.interrupted = interrupted
        self.on_signal = on_signal
        self.next_index = next_index
        self.live: dict[str, list[_Live]] = {}  # Ray trial id -> its members
        self.checkpoints: dict[str, Any] = {}  # Ray trial id -> its final checkpoint (models)
        self.ran = self.failed = self.stopped = 0
        self.stop_reason = ""  # why the driver stopped the study itself (empty: it did not)
        self.phases = {"row": 0.0, "table": 0.0, "enqueue": 0.0}  # driver seconds (benchmarks)
        self._defaults = TrialConfig().to_dict()

    def __getstate__(self) -> dict:
        # Tuner pickles its run config for Tuner.restore, which qsweep does not use.
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # tune.run installs its own SIGUSR1 handler; ours also records that we were interrupted.
        if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) is not self.on_signal:
            signal.signal(signal.SIGUSR1, self.on_signal)
        if self.logger.failure and not self.interrupted.is_set():
            self.stop_reason = self.logger.failure  # MLflow away too long: stop cleanly
            self.interrupted.set()
        self.progress.maybe_print()

    def _live(self, trial) -> list[_Live]:
        members = self.live.get(trial.trial_id)
        if members is not None:
            return members
        config = trial.config
        data = _trial_data(config, self.spec.data, self.plan)
        columns = data_columns(data, self.encoder_ids.get(data_key(data), ""))
        if "qsweep" in config:
            meta = self.plan[config["qsweep"]]
            # the trainable has its own copy (object store); the driver keeps what it
            # needs in self.live, so a started pack's plan entry is released
            self.plan[config["qsweep"]] = None
            pack_id = meta["pack_id"]
            planned = [
                (m["trial_id"], m["point_id"], m["seed"], m["config"]) for m in meta["members"]
            ]
        else:  # an Optuna suggestion: one point, every seed
            point_id = f"o{self.next_index:03d}"
            self.next_index += 1
            configs = _member_configs(config, self.spec.fixed, self.spec.seeds, self.plan)
            planned = [(f"{point_id}_s{c['seed']}", point_id, c["seed"], c) for c in configs]
            pack_id = point_id if len(planned) > 1 else planned[0][0]
        now, t0 = utc_now(), time.monotonic()
        members = [
            _Live(
                tid, pid, seed, {**self._defaults, **values, **columns}, now, t0, pack_id
            )  # fmt: skip
            for tid, pid, seed, values in planned
        ]
        self.live[trial.trial_id] = members
        return members

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        for live in self._live(trial):
            self.logger.start(
                live.trial_id,
                point_id=live.point_id,
                seed=live.seed,
                params=live.config,
                tags={"qsweep.pack_id": live.pack_id},
            )
            self.progress.started(live.trial_id, pack_id=live.pack_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial, result: dict, **info: Any
    ) -> None:
        members = self._live(trial)
        for live in members:
            live.node = result.get("hostname") or live.node
        # the epochs since the last report ({member index: metrics} each; see _trainable)
        for by_member in result.get(EPOCHS_KEY) or ():
            for index, metrics in by_member.items():
                self._epoch(members[int(index)], metrics)

    def _epoch(self, live: _Live, metrics: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        live.last_epoch = epoch
        value = metrics.get("val_accuracy")
        if isinstance(value, (int, float)) and (live.best is None or value > live.best):
            live.best, live.best_epoch = float(value), epoch
        epoch_metrics = {k: v for k, v in metrics.items() if k in EPOCH_METRICS}
        self.logger.log_epoch(live.trial_id, epoch_metrics, step=epoch)

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info: Any) -> None:
        self.checkpoints[trial.trial_id] = checkpoint

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get("qsweep_final"):
            checkpoint = self.checkpoints.pop(trial.trial_id, None) or trial.checkpoint
            states = _states_file(checkpoint)
            members = self._live(trial)
            for index, live in enumerate(members):
                member = _member(last, index)
                status = member.get("qsweep_status", "failed")
                model = (
                    ModelRef(states, index, live.pack_id)
                    if states is not None and member.get("has_state")
                    else None
                )
                self._record(live, status, member, model=model)
            self.live.pop(trial.trial_id, None)
        elif not self.interrupted.is_set():
            for index, live in enumerate(self._live(trial)):  # stopped early by ASHA
                self._record(live, "stopped", _member(last, index))
            self.live.pop(trial.trial_id, None)
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
        for live in self._live(trial):
            self._record(live, "failed", {"error": message, "attempts": 1})
        self.live.pop(trial.trial_id, None)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        # The Ray trial's process or node died; Ray restarts it (FailureConfig), maybe on
        # another node. Its members keep their ids; their MLflow runs are replaced.
        ids = ", ".join(live.trial_id for live in self._live(trial))
        print(f"qsweep run: lost trial {ids} (its Ray worker or node died); Ray retries it",
              file=self.progress.stream, flush=True)  # fmt: skip

    def abandon_all(self) -> None:
        """Trials still running when Tune returned (graceful stop): not rows; runs KILLED."""
        for members in self.live.values():
            for live in members:
                self.progress.running.discard(live.trial_id)
                self.logger.abandon(live.trial_id)
        self.live.clear()

    def _forget(self, trial) -> None:
        for live in self.live.pop(trial.trial_id, []):
            self.progress.running.discard(live.trial_id)
            self.logger.abandon(live.trial_id)

    def _stop_on_table_error(self, err: OSError, live: _Live) -> None:
        """The table cannot be written: no new trials; this one (and those still running) is
        rerun by --resume; every row written before stays."""
        self.logger.abandon(live.trial_id)
        self.progress.running.discard(live.trial_id)
        if not self.stop_reason:
            where = Path(self.table.journal).parent
            if err.errno == errno.ENOSPC:
                free = shutil.disk_usage(where).free if where.exists() else 0
                self.stop_reason = (
                    f"the disk is full at {where} ({free / 1e6:.1f} MB free): trial "
                    f"{live.trial_id} could not be recorded. Free some space there, then run "
                    "the same command with --resume: every trial recorded so far is kept"
                )
            else:
                self.stop_reason = (
                    f"cannot write the results table in {where} ({err.strerror or err}): "
                    f"trial {live.trial_id} could not be recorded. Fix the directory, then "
                    "run the same command with --resume"
                )
        self.interrupted.set()

    def _record(
        self, live: _Live, status: str, last: dict[str, Any], model: ModelRef | None = None
    ) -> None:
        t0 = time.perf_counter()
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
        row["pack_id"] = live.pack_id
        row["node"] = live.node
        t1 = time.perf_counter()
        try:
            self.table.add(row)
        except OSError as err:  # a full disk, a lost mount: stop cleanly, keep what is written
            self._stop_on_table_error(err, live)
            return
        t2 = time.perf_counter()
        self.logger.finish(live.trial_id, row, model=model if status == "completed" else None)
        self.ran += 1
        self.failed += status == "failed"
        self.stopped += status == "stopped"
        value = row.get(self.spec.metric) if self.spec.metric in row else last.get(self.spec.metric)
        self.progress.finished(live.trial_id, status, plain(value), time.monotonic() - live.t0)
        self.phases["row"] += t1 - t0
        self.phases["table"] += t2 - t1
        self.phases["enqueue"] += time.perf_counter() - t2


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
            temp_dir = _private_ray_files()
            with _single_machine_ray():
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=temp_dir,
                         **kwargs)  # fmt: skip
    except Exception as err:  # noqa: BLE001 - connection errors come in many types
        target = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ServiceError(f"could not start or reach {target}: {err}") from None
    return True


# Ray's own switch for a one-machine Ray (its default on macOS and Windows), read once when
# ray is imported: with it off the node address is 127.0.0.1, and Ray's gRPC servers (GCS,
# raylet, driver, workers) and its runtime-env agent then listen on loopback only; with any
# other node address they listen on every interface. `_node_ip_address="127.0.0.1"` alone
# does not do it: ray.init replaces a loopback address with the machine's network address.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _single_machine_ray():
    """Ray's one-machine mode for the ``ray.init`` that starts a local Ray, and only for it
    (an explicit ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` wins): afterwards Ray asks its node,
    so a later connection to a cluster from this process advertises the real address."""
    from ray._private import ray_constants

    if SINGLE_MACHINE_ENV in os.environ:
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _private_ray_files() -> str:
    """Before a local Ray starts: its token file readable by this user only, and a temp
    directory that other users cannot enter. Returns the temp directory for ``ray.init``.

    Ray writes ``~/.ray/auth_token`` with the default umask (0644) and makes every directory
    it creates 0777 (``/tmp/ray`` by default); the token is written here first, 0600, in
    the format of Ray's own (64 hex digits), and Ray's directory goes inside a 0700 one.
    """
    import secrets
    import stat
    import tempfile

    if os.environ.get("RAY_AUTH_MODE", "token").lower() == "token" and not os.environ.get(
        "RAY_AUTH_TOKEN"
    ):
        token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        if not token.exists():
            token.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another driver won the race
                fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
        with contextlib.suppress(OSError):  # a token of another owner is left alone
            if token.stat().st_mode & 0o077:
                token.chmod(0o600)
    root = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir())
    private = root / f"qsweep-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    info = private.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        private = Path(tempfile.mkdtemp(prefix="qsweep-", dir=root))  # not ours: a fresh one
    private.chmod(0o700)
    return str(private / "ray")


def _alive_nodes() -> list[RayNode]:
    return [
        RayNode(
            n.get("NodeManagerHostname", ""),
            n.get("NodeManagerAddress", ""),
            float(n.get("Resources", {}).get("CPU", 0)),
            float(n.get("Resources", {}).get("GPU", 0)),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]


def _wait_for_cluster(need: ClusterNeed, stream: TextIO, poll_s: float = 1.0) -> None:
    """Block until the cluster meets ``need``; ServiceError naming what is missing after
    ``need.timeout_s``."""
    deadline = time.monotonic() + need.timeout_s
    while (missing := shortfall(need, alive := _alive_nodes())) is not None:
        if time.monotonic() >= deadline:
            joined = ", ".join(f"{n.hostname} ({n.address})" for n in alive) or "none"
            raise ServiceError(
                f"the Ray cluster is incomplete after {need.timeout_s:g} s: {missing}. "
                f"Joined: {joined}. Check the Ray worker lines of the job output for the "
                "missing nodes."
            )
        time.sleep(poll_s)
    hosts = ", ".join(sorted(n.hostname for n in alive))
    print(f"qsweep run: Ray cluster ready: {len(alive)} node(s) ({hosts})", file=stream)


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
    pack_size: int | str | None = None,
    expect: ClusterNeed | None = None,
    shard: tuple[int, int] | None = None,
) -> StudyOutcome:
    """Run (or resume) a study; returns counts. ``data`` skips embedding (tests, benchmarks).

    ``pack_size`` overrides the study's (``auto`` | N; 1 turns packing off). ``expect``:
    wait until the Ray cluster has these nodes and resources before any trial starts.
    ``shard=(i, k)``: run only shard i of k (every k-th point, :func:`results.shard_of`)
    with its own table, lock and Ray state under ``study_dir/shards/``; the shards share
    ``study.json``, the MLflow store and the study run (a Slurm job array).
    """
    t0 = time.monotonic()
    study_dir = Path(study_dir).resolve()
    own_dir = shard_dir(study_dir, shard) if shard else study_dir  # this driver's table and lock
    fit_ref: FitRef = fit or os.environ.get("QSWEEP_FIT") or DEFAULT_FIT
    concurrency = max_concurrent or spec.max_concurrent
    size = resolve_pack_size(spec, pack_size)
    if shard and spec.is_optuna:
        raise ConfigError(
            "--shard: an Optuna study learns from all its trials, so it runs as one driver; "
            "shard grid and design-of-experiments studies only."
        )
    with StudyLock(own_dir), contextlib.ExitStack() as on_exit:
        prepare_study_dir(spec, own_dir, resume=resume, study_json_dir=study_dir)
        uri = tracking_uri or default_tracking_uri(study_dir)
        check_tracking_uri(uri)
        # the table first: a damaged one is an error before MLflow is touched
        table = ResultsTable(trials_path(own_dir), study=spec.name)
        planned = {p.trial_id: p for p in spec.planned_trials()} if not spec.is_optuna else {}
        if shard:
            planned = {
                t: p for t, p in planned.items() if shard_of(p.point_id, shard[1]) == shard[0]
            }
        rows = table.load_rows() if table.index else {}
        check_rows_match_plan(rows, planned, study_dir)
        # a row trained on another data setting (e.g. another --encoder) is rerun
        done = {
            t for t in table.done_ids() if t not in planned or same_data(rows[t], planned[t].data)
        }
        tracker = StudyTracker(
            uri, spec.name, study_dir=study_dir, metric=spec.metric, mode=spec.mode,
            register=spec.mlflow["register"], register_top=spec.mlflow["register_top"],
            stream=stream, progress_file=own_dir / PROGRESS_FILE if shard else None,
        )  # fmt: skip
        planned_n = len(planned) if shard else spec.n_trials()
        tracker.open(spec.study_dict(), spec_file=spec.source or None, planned=planned_n,
                     total=spec.n_trials())  # fmt: skip
        on_exit.push(tracker.exit_on_error)  # a driver that raises ends the study run KILLED
        record_study(spec, study_dir)
        if shard and not trials_path(study_dir).exists():
            ResultsTable(trials_path(study_dir), study=spec.name).compact()  # readers find a study
        on_exit.callback(table.close_and_compact)  # the journal folded into the table at the end
        if not table.path.exists() or table.journal.exists():
            table.compact()  # an empty table to start; or the journal a killed driver left
        if done:
            tracker.reconcile([rows[t] for t in done])
        suggested = {rows[t]["point_id"] for t in done} if spec.is_optuna else set()
        del rows  # the driver keeps the table's index, not its rows

        todo = [p for p in planned.values() if p.trial_id not in done]
        if spec.is_optuna:  # suggestions still to make (each one trains every seed)
            remaining = max(0, spec.search.trials - len(suggested))
        else:
            remaining = len(todo)
        packs = plan_packs(todo, size, gpu=spec.resources.get("gpu", 0) > 0, slots=concurrency)
        outcome = StudyOutcome(own_dir, planned_n, 0, len(done), 0, 0, False, 0.0, uri)
        if remaining == 0:
            tracker.close()
            outcome.wall_time_s = time.monotonic() - t0
            return outcome

        if data is None and os.environ.get("QSWEEP_TEST_DATA"):  # test hook: "module:function"
            data = _resolve_fit(os.environ["QSWEEP_TEST_DATA"])()
        settings = (
            spec.data_settings() if spec.is_optuna else list(dict.fromkeys(p.data for p in todo))
        )

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
        if expect is not None:
            _wait_for_cluster(expect, stream or sys.stderr)
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
        for s in handlers:
            signal.signal(s, on_signal)
        try:
            data_refs, encoder_ids = _put_data(spec, settings, data, tracker)
            tracker.start_thread()
            plan = _plan(packs) if not spec.is_optuna else []
            callback = _StudyCallback(
                spec, table, tracker, progress, interrupted, on_signal,
                next_index=table.next_optuna_index(), encoder_ids=encoder_ids, plan=plan,
            )  # fmt: skip
            tuner = _tuner(spec, packs, plan, remaining, concurrency, table, callback,
                           interrupted, own_dir, data_refs, fit_ref, size)  # fmt: skip
            del packs, todo, planned  # the plan lives on in `plan` (released pack by pack)
            t_fit = time.perf_counter()
            tuner.fit()
            fit_s = time.perf_counter() - t_fit
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
        outcome.stop_reason = callback.stop_reason
        t_close = time.perf_counter()
        # a stop (SIGTERM, a Slurm time limit) leaves little time: what is not written by
        # then is logged from trials.parquet by --resume
        tracker.close(interrupted=outcome.interrupted,
                      timeout_s=CLOSE_TIMEOUT_S if outcome.interrupted else None)  # fmt: skip
        outcome.phases = {
            "tune_fit_s": fit_s,
            "mlflow_drain_s": time.perf_counter() - t_close,
            **{f"driver_{k}_s": v for k, v in callback.phases.items()},
            **{f"mlflow_{k}_s": v for k, v in tracker.timings.items()},
        }
        outcome.wall_time_s = time.monotonic() - t0
        progress.maybe_print(force=True)
        return outcome


# Settings that choose how a trial is computed, not what: a row trained with another value
# still counts as the same trial on --resume.
ENGINE_SETTINGS = ("device", "cuda_graphs", "gradient", "cpu_kernel", "eval_batch_size")


def check_rows_match_plan(rows: dict[str, dict], planned: dict, study_dir: Path) -> None:
    """ConfigError when finished rows were trained with other settings than the plan gives
    their trial ids (e.g. ``fixed.epochs`` changed with study.json gone), naming the keys."""
    differ: dict[str, list[str]] = {}
    for trial_id, row in rows.items():
        planned_trial = planned.get(trial_id)
        if planned_trial is None:
            continue
        want = planned_trial.config.to_dict()
        for key, value in want.items():
            if key in ENGINE_SETTINGS or key == "seed" or row.get(key) is None:
                continue
            if row[key] != value:
                differ.setdefault(key, []).append(f"{trial_id}: {row[key]!r} -> {value!r}")
    if differ:
        keys = ", ".join(f"{k} ({len(v)} rows, e.g. {v[0]})" for k, v in sorted(differ.items()))
        raise ConfigError(
            f"--resume: the rows in {study_dir}/trials.parquet were trained with other settings "
            f"than this search space gives the same trial ids: {keys}. Resume with the search "
            "space they were trained with, or run the changed study into another --results "
            "directory."
        )


def _put_data(
    spec: StudySpec, settings: list[DataConfig], data: EmbeddedSplits | None, logger=None
) -> tuple[dict[str, Any], dict[str, str]]:
    """One object-store object per data setting: ``({data key: ref}, {data key: encoder id})``.

    Each distinct (source, encoder) is embedded once (``model.embeddings.embed_settings``);
    the driver drops its copy of each setting once it is in the object store. ``data``
    (tests, benchmarks) stands for every setting and is put once. Each setting is logged
    as a dataset input of the study run (MLflow); trial runs get the last one logged.
    """
    refs: dict[str, Any] = {}
    ids: dict[str, str] = {}
    if data is not None:
        ref = ray.put(data)
        for cfg in settings:
            refs[data_key(cfg)], ids[data_key(cfg)] = ref, data.encoder
        if logger is not None:
            logger.log_dataset(data, spec.data.to_dict())
        return refs, ids
    from model.embeddings import embed_settings

    for cfg, embedded in embed_settings(settings, encoder_paths=spec.encoder_paths, progress=True):
        refs[data_key(cfg)], ids[data_key(cfg)] = ray.put(embedded), embedded.encoder
        if logger is not None:
            logger.log_dataset(embedded, cfg.to_dict())
        del embedded
    return refs, ids


def _plan(packs) -> list[dict[str, Any]]:
    """The packs of a grid/DOE study as plain dicts: what a Ray trial's index refers to."""
    return [
        {
            "pack_id": pack.pack_id,
            "data": pack.members[0].data.to_dict(),
            "members": [
                {"trial_id": m.trial_id, "point_id": m.point_id, "seed": m.seed,
                 "config": m.config.to_dict()}
                for m in pack.members
            ],
        }
        for pack in packs
    ]  # fmt: skip


class _PlanSearcher(Searcher):
    """Hands out the planned packs one by one: ``{"qsweep": index}`` per Ray trial.

    Not ``tune.grid_search(packs)``: Tune's grid generator deep-copies the whole param
    space for every variant, O(N^2) in the packs (116 of 178 driver CPU seconds for 300
    trials), and keeps every pack's members in each trial's saved state."""

    def __init__(self, pack_ids: list[str], metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.pack_ids, self.n, self.next = pack_ids, len(pack_ids), 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.next >= self.n:
            return Searcher.FINISHED
        self.next += 1
        return {"qsweep": self.next - 1, "qsweep_pack": self.pack_ids[self.next - 1]}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass


def _dirname(trial) -> str:
    """A Ray trial's directory: its pack id (a module-level function: Tune saves it with
    every trial, so it must not hold the plan)."""
    return trial.config.get("qsweep_pack") or f"trial_{trial.trial_id}"


def _tuner(
    spec, packs, plan, remaining, concurrency, table, callback, interrupted, study_dir,
    data_refs, fit_ref, pack_size,
) -> Tuner:  # fmt: skip
    from ray.tune import FailureConfig
    from ray.tune.schedulers import ASHAScheduler

    trainable = tune.with_parameters(
        _trainable,
        data_refs=data_refs,
        data_base=spec.data,
        fit_ref=fit_ref,
        retries=spec.retries,
        cpu=spec.resources["cpu"],
        gpu=spec.resources["gpu"],
        fixed=dict(spec.fixed),
        seeds=tuple(spec.seeds),
        metric=spec.metric,
        mode=spec.mode,
        pack_size=pack_size,
        plan=plan,
        every_epoch=bool(spec.early_stopping),
    )
    trainable = tune.with_resources(
        trainable, {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}
    )
    scheduler = None
    if spec.early_stopping:
        max_t = (
            max(m.config.epochs for p in packs for m in p.members)
            if packs
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
        param_space = {}
        tune_config = TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            search_alg=_PlanSearcher([p["pack_id"] for p in plan], spec.metric, spec.mode),
            scheduler=scheduler,
            num_samples=len(plan),
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
        failure_config=FailureConfig(max_failures=LOST_TRIAL_RETRIES),
    )
    return Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)

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
import importlib
import logging
import math
import os
import signal
import sys
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

from model.config import DataConfig, TrialConfig
from model.errors import ConfigError, ServiceError
from model.types import EPOCH_METRICS, EmbeddedSplits
from orchestrator.cluster import ClusterNeed, RayNode, shortfall
from orchestrator.packing import plan_packs, resolve_pack_size, size_for
from orchestrator.progress import Progress
from orchestrator.results import (
    ResultsTable,
    StudyLock,
    data_columns,
    plain,
    prepare_study_dir,
    record_study,
    same_data,
    trial_row,
    trials_path,
    utc_now,
)
from orchestrator.spec import StudySpec, data_key, split_point
from orchestrator.tracking import TrialLogger, check_tracking_uri, default_tracking_uri

__all__ = ["run_study", "StudyOutcome", "DEFAULT_FIT", "INTERRUPTED_EXIT"]

DEFAULT_FIT = "model.training:fit"
# A Ray trial whose process or node died (not a Python error: those are retried inside
# the trainable) is restarted this many times, e.g. on another node after a node loss.
LOST_TRIAL_RETRIES = 3
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


def _member_configs(config: dict[str, Any], fixed: dict[str, Any], seeds) -> list[dict[str, Any]]:
    """The TrialConfig dicts of a Ray trial's members: a planned pack, or an Optuna
    suggestion repeated over the study's seeds."""
    if "qsweep" in config:  # explicit grid / DOE pack
        return [dict(m["config"]) for m in config["qsweep"]["members"]]
    values, _ = split_point({k: plain(v) for k, v in config.items()})
    return [{**fixed, **values, "seed": seed} for seed in seeds]


def _trial_data(config: dict[str, Any], data_base: DataConfig) -> DataConfig:
    """The data setting of a Ray trial: its pack's, or an Optuna suggestion's ``data.*``."""
    if "qsweep" in config:
        return DataConfig.from_dict(config["qsweep"]["data"])
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


def _final_report(index: int, result: Any, attempt: int, metric: str) -> dict[str, Any]:
    prefix = f"m{index}/"
    if isinstance(result, Exception):
        return {prefix + "qsweep_status": "failed", prefix + "attempts": attempt,
                prefix + "error": f"{type(result).__name__}: {result}"}  # fmt: skip
    final = {**result.summary(), "qsweep_status": "completed", "attempts": attempt}
    if metric not in final:
        best = (
            result.history[result.best_epoch - 1]
            if 0 < result.best_epoch <= len(result.history)
            else {}
        )
        final[metric] = best.get(metric, math.nan)
    return {prefix + k: plain(v) for k, v in final.items()}


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
    fixed: dict[str, Any],
    seeds: tuple[int, ...],
    metric: str,
    mode: str,
    pack_size: int | str,
) -> None:
    """One Ray trial = one pack of members, trained together (``fit_packed``).

    Every epoch is one ``tune.report`` with each member's metrics under ``m<i>/`` and,
    for the scheduler, the epoch and the best member's ``metric`` at the top level (a
    pack of one reports its metrics flat too, which ASHA uses). The final report carries
    every member's final metrics or error; ``metric`` there is the mean over completed
    members (what an Optuna suggestion repeated over seeds is scored by). A failure of
    the whole pack is retried up to ``retries`` times; a member that fails alone (a
    non-finite loss) is recorded as failed while the others go on.
    """
    import torch

    from model.training import resolve_device

    torch.set_num_threads(max(1, int(cpu)))
    fit = _resolve_fit(fit_ref)
    error, last_tb = "", ""
    members = _member_configs(config, fixed, seeds)
    data: EmbeddedSplits = ray.get(data_refs[data_key(_trial_data(config, data_base))])
    for attempt in range(1, retries + 2):
        try:
            configs = [TrialConfig.from_dict(m, where="trial") for m in members]

            def on_epoch(by_member, _attempt: int = attempt, _n: int = len(configs)) -> None:
                report: dict[str, Any] = {"attempt": _attempt}
                for m, metrics in by_member.items():
                    report.update({f"m{m}/{k}": plain(v) for k, v in metrics.items()})
                report["epoch"] = max(int(v["epoch"]) for v in by_member.values())
                if _n == 1:
                    report.update({k: plain(v) for k, v in by_member[0].items()})
                else:
                    report[metric] = _aggregate([v.get(metric) for v in by_member.values()], mode)
                tune.report(report)

            gpu = resolve_device(configs[0].device).type == "cuda"
            size = size_for(configs[0], pack_size, gpu=gpu)
            results = _fit_members(fit, configs, data, on_epoch, size, retries)
        except Exception as err:  # noqa: BLE001 - a failure of the whole pack: retry it
            error = f"{type(err).__name__}: {err}"
            last_tb = traceback.format_exc(limit=3)
            if isinstance(err, ConfigError):  # the same settings fail the same way
                retries = attempt - 1
                break
            continue
        final: dict[str, Any] = {"qsweep_final": 1, "attempts": attempt}
        for m, (result, tries) in enumerate(results):
            final.update(_final_report(m, result, attempt + tries - 1, metric))
        done = [
            final.get(f"m{m}/{metric}")
            for m, (r, _) in enumerate(results)
            if not isinstance(r, Exception)
        ]
        done = [v for v in done if isinstance(v, (int, float)) and not math.isnan(v)]
        final[metric] = sum(done) / len(done) if done else math.nan
        if len(results) == 1:
            final.update({k[3:]: v for k, v in final.items() if k.startswith("m0/")})
        tune.report(final, checkpoint=_states_checkpoint([r for r, _ in results]))
        return
    failed: dict[str, Any] = {metric: math.nan, "qsweep_final": 1, "attempts": retries + 1}
    for m in range(len(members)):
        failed.update({f"m{m}/qsweep_status": "failed", f"m{m}/attempts": retries + 1,
                       f"m{m}/error": error, f"m{m}/traceback": last_tb[-2000:]})  # fmt: skip
    tune.report(failed)


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


def _load_states(checkpoint: tune.Checkpoint | None) -> dict[int, Any]:
    """``{member index: TrialResult.state}`` from a pack's final checkpoint ({} if none)."""
    if checkpoint is None:
        return {}
    import torch

    with checkpoint.as_directory() as directory:
        path = Path(directory) / STATES_FILE
        # Our own file: state_dicts of tensors, or fitted sklearn Pipelines (pickled).
        return torch.load(path, weights_only=False) if path.exists() else {}


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
    """Member ``index``'s part of a pack's report (keys ``m<index>/...``), unprefixed."""
    prefix = f"m{index}/"
    return {k[len(prefix) :]: v for k, v in report.items() if k.startswith(prefix)}


class _StudyCallback(Callback):
    """Driver side: trial ids, MLflow runs, table rows, progress -- one of each per member."""

    def __init__(
        self,
        spec: StudySpec,
        table: ResultsTable,
        logger: TrialLogger,
        progress: Progress,
        interrupted: threading.Event,
        on_signal: Callable[[int, Any], None],
        next_index: int,
        encoder_ids: dict[str, str],
    ) -> None:
        self.spec = spec
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

    def _live(self, trial) -> list[_Live]:
        members = self.live.get(trial.trial_id)
        if members is not None:
            return members
        config = trial.config
        data = _trial_data(config, self.spec.data)
        columns = data_columns(data, self.encoder_ids.get(data_key(data), ""))
        if "qsweep" in config:
            meta = config["qsweep"]
            pack_id = meta["pack_id"]
            planned = [
                (m["trial_id"], m["point_id"], m["seed"], m["config"]) for m in meta["members"]
            ]
        else:  # an Optuna suggestion: one point, every seed
            point_id = f"o{self.next_index:03d}"
            self.next_index += 1
            configs = _member_configs(config, self.spec.fixed, self.spec.seeds)
            planned = [(f"{point_id}_s{c['seed']}", point_id, c["seed"], c) for c in configs]
            pack_id = point_id if len(planned) > 1 else planned[0][0]
        now, t0 = utc_now(), time.monotonic()
        members = [
            _Live(
                tid, pid, seed, {**TrialConfig().to_dict(), **values, **columns}, now, t0, pack_id
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
            self.progress.started(live.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial, result: dict, **info: Any
    ) -> None:
        members = self._live(trial)
        for live in members:
            live.node = result.get("hostname") or live.node
        if result.get("qsweep_final") or "epoch" not in result:
            return
        for index, live in enumerate(members):
            metrics = _member(result, index)
            if "epoch" not in metrics:
                continue
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
            states = _load_states(checkpoint)
            for index, live in enumerate(self._live(trial)):
                member = _member(last, index)
                status = member.get("qsweep_status", "failed")
                self._record(live, status, member, state=states.get(index))
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

    def _record(self, live: _Live, status: str, last: dict[str, Any], state: Any = None) -> None:
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
        self.table.add(row)
        self.logger.finish(live.trial_id, row, state=state if status == "completed" else None)
        self.logger.update_study(
            list(self.table.rows.values()),
            planned=self.spec.n_trials(),
            metric=self.spec.metric,
            mode=self.spec.mode,
        )
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
) -> StudyOutcome:
    """Run (or resume) a study; returns counts. ``data`` skips embedding (tests, benchmarks).

    ``pack_size`` overrides the study's (``auto`` | N; 1 turns packing off). ``expect``:
    wait until the Ray cluster has these nodes and resources before any trial starts.
    """
    t0 = time.monotonic()
    study_dir = Path(study_dir).resolve()
    fit_ref: FitRef = fit or os.environ.get("QSWEEP_FIT") or DEFAULT_FIT
    concurrency = max_concurrent or spec.max_concurrent
    size = resolve_pack_size(spec, pack_size)
    with StudyLock(study_dir), contextlib.ExitStack() as on_error:
        prepare_study_dir(spec, study_dir, resume=resume)
        uri = tracking_uri or default_tracking_uri(study_dir)
        check_tracking_uri(uri)
        logger = TrialLogger(uri, spec.name)
        planned_n = spec.n_trials()
        logger.open_study(spec.study_dict(), spec_file=spec.source or None, planned=planned_n)
        on_error.push(logger.study_exit)  # a driver that raises ends the study run KILLED
        record_study(spec, study_dir)
        table = ResultsTable(trials_path(study_dir), study=spec.name)
        on_error.callback(table.compact)  # the journal folded into trials.parquet, even on error
        if not table.path.exists() or table.journal.exists():
            table.compact()  # an empty table to start; or the journal a killed driver left
        planned = {p.trial_id: p for p in spec.planned_trials()} if not spec.is_optuna else {}
        # a row trained on another data setting (e.g. another --encoder) is rerun
        done = {
            t
            for t in table.done_ids()
            if t not in planned or same_data(table.rows[t], planned[t].data)
        }
        if done:
            logger.reconcile([r for r in table.rows.values() if r["trial_id"] in done])

        todo = [p for p in planned.values() if p.trial_id not in done]
        if spec.is_optuna:  # suggestions still to make (each one trains every seed)
            suggested = {table.rows[t]["point_id"] for t in done if t in table.rows}
            remaining = max(0, spec.search.trials - len(suggested))
        else:
            remaining = len(todo)
        packs = plan_packs(todo, size, gpu=spec.resources.get("gpu", 0) > 0, slots=concurrency)
        outcome = StudyOutcome(study_dir, planned_n, 0, len(done), 0, 0, False, 0.0, uri)
        if remaining == 0:
            logger.close_study()
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
            data_refs, encoder_ids = _put_data(spec, settings, data, logger)
            callback = _StudyCallback(
                spec, table, logger, progress, interrupted, on_signal,
                next_index=table.next_optuna_index(), encoder_ids=encoder_ids,
            )  # fmt: skip
            tuner = _tuner(spec, packs, remaining, concurrency, table, callback, interrupted,
                           study_dir, data_refs, fit_ref, size)  # fmt: skip
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
        logger.close_study(interrupted=outcome.interrupted)
        outcome.wall_time_s = time.monotonic() - t0
        progress.maybe_print(force=True)
        return outcome


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


def _dirname(trial) -> str:
    meta = trial.config.get("qsweep")
    return meta["pack_id"] if meta else f"trial_{trial.trial_id}"


def _tuner(
    spec, packs, remaining, concurrency, table, callback, interrupted, study_dir, data_refs,
    fit_ref, pack_size,
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
        fixed=dict(spec.fixed),
        seeds=tuple(spec.seeds),
        metric=spec.metric,
        mode=spec.mode,
        pack_size=pack_size,
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
        points = [
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
        failure_config=FailureConfig(max_failures=LOST_TRIAL_RETRIES),
    )
    return Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)

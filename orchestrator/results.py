"""A study's results directory: ``trials.parquet`` (one row per finished trial),
``study.json`` (what was planned) and ``.lock`` (one driver at a time).

    with StudyLock(study_dir):
        table = ResultsTable(study_dir / "trials.parquet", study="quickstart")
        table.add(row)          # rewrites the file atomically (temp file + rename)

Rows have the columns of :data:`RESULT_COLUMNS`, every ``TrialConfig`` field under its
plain name, then the trial's data setting (:data:`DATA_COLUMNS`: encoder as named in the
study, its resolved identity, split seed, sentences per class). No Ray or MLflow here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.config import TrialConfig
from model.errors import ConfigError, DataError, ServiceError
from model.types import FINAL_METRICS

if TYPE_CHECKING:
    from orchestrator.spec import StudySpec

__all__ = [
    "RESULT_COLUMNS",
    "CONFIG_COLUMNS",
    "DATA_COLUMNS",
    "data_columns",
    "same_data",
    "FINAL_STATUSES",
    "ResultsTable",
    "StudyLock",
    "prepare_study_dir",
    "record_study",
    "trial_row",
    "plain",
    "trials_path",
    "study_dir_in",
    "read_trials",
    "write_study_json",
    "read_study_json",
    "study_name",
    "utc_now",
    "qsweep_version",
]

FINAL_STATUSES = ("completed", "failed", "stopped")
RESULT_COLUMNS = (
    "study",
    "trial_id",
    "point_id",
    "seed",
    "status",
    "error",
    "attempts",
    "pack_id",
    *FINAL_METRICS,  # model.types: val_accuracy, test_accuracy, ..., gpu_energy_j
    "device",
    "node",  # host name where the trial's Ray trial last ran
    "started_at",
    "finished_at",
)
# seed and device are result columns already (device: the resolved one, e.g. cpu / cuda:0).
CONFIG_COLUMNS = tuple(
    f.name for f in dataclasses.fields(TrialConfig) if f.name not in ("seed", "device")
)
# The data setting of a trial, name -> type. data.encoder is the name as the study gives
# it (a data.encoder level), data.encoder_id what it resolved to (hub name or absolute path).
DATA_COLUMNS: dict[str, type] = {
    "data.encoder": str,
    "data.encoder_id": str,
    "data.split_seed": int,
    "data.n_per_class": int,
}
TABLE_FILE = "trials.parquet"
STUDY_FILE = "study.json"
LOCK_FILE = ".lock"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def qsweep_version() -> str:
    try:
        from importlib.metadata import version

        return version("qsweep")
    except Exception:  # noqa: BLE001 - not installed: source checkout
        return "0+unknown"


# ------------------------------------------------------------------------------------
class ResultsTable:
    """The rows of ``trials.parquet``, kept in memory and rewritten atomically on every add."""

    def __init__(self, path: Path, *, study: str) -> None:
        self.path = Path(path)
        self.study = study
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            import pyarrow.parquet as pq

            for row in pq.read_table(self.path).to_pylist():
                self.rows[row["trial_id"]] = row

    def done_ids(self) -> set[str]:
        """Trials with a final status: never run again on --resume."""
        return {tid for tid, row in self.rows.items() if row.get("status") in FINAL_STATUSES}

    def add(self, row: dict[str, Any]) -> None:
        if row.get("status") not in FINAL_STATUSES:
            raise ValueError(f"status {row.get('status')!r} is not one of {FINAL_STATUSES}")
        self.rows[row["trial_id"]] = normalise_row(row, study=self.study)
        self.write()

    def write(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [normalise_row(r, study=self.study) for r in self.rows.values()]
        table = pa.Table.from_pylist(rows, schema=_schema()) if rows else _schema().empty_table()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(
            [normalise_row(r, study=self.study) for r in self.rows.values()],
            columns=list(_schema().names),
        )

    def next_optuna_index(self) -> int:
        """Index of the next optuna point id (``o000``, ``o001``, ...) after the rows held."""
        ids = [
            r["point_id"] for r in self.rows.values() if str(r.get("point_id", "")).startswith("o")
        ]
        return 1 + max((int(i[1:]) for i in ids if i[1:].isdigit()), default=-1)

    def warm_start(self, factors, metric: str) -> tuple[list[dict[str, Any]], list[float]]:
        """(factor settings, metric values) of the finished, not failed trials with a value.

        On --resume, a fresh, identically seeded Optuna sampler is told these trials first.
        """
        by_point: dict[str, tuple[dict[str, Any], list[float]]] = {}
        for row in self.rows.values():
            value = row.get(metric)
            if row["status"] != "failed" and value is not None and not math.isnan(value):
                point = by_point.setdefault(row["point_id"], ({n: row.get(n) for n in factors}, []))
                point[1].append(value)
        # a suggestion repeated over seeds is scored by its mean, as the driver reports it
        points = [p for p, _ in by_point.values()]
        rewards = [sum(v) / len(v) for _, v in by_point.values()]
        return points, rewards


def plain(value: Any) -> Any:
    """numpy scalars (from Tune domains and reports) -> Python scalars."""
    return (
        value.item()
        if hasattr(value, "item") and not isinstance(value, (list, dict, str))
        else value
    )


def trial_row(
    config: dict[str, Any],
    *,
    trial_id: str,
    point_id: str,
    seed: int,
    status: str,
    started_at: str,
    last: dict[str, Any],
    partial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One trials.parquet row of a finished trial.

    ``config`` is the trial's full TrialConfig dict, ``last`` its final report (the
    :data:`FINAL_METRICS`, the resolved device, ``attempts``, ``error``). A trial stopped
    early has no final report: ``partial`` gives what was seen of it (best
    ``val_accuracy`` so far, its ``best_epoch``, ``epochs_run``, ``wall_time_s``).
    """
    # seed is a result column; device stays the setting until a final report resolves it
    row: dict[str, Any] = {k: v for k, v in config.items() if k != "seed"}
    row.update(
        trial_id=trial_id,
        point_id=point_id,
        seed=seed,
        status=status,
        error=last.get("error") if status == "failed" else None,
        attempts=int(last.get("attempts") or last.get("attempt") or 1),
        started_at=started_at,
        finished_at=utc_now(),
    )
    if status == "completed":
        for key in (*FINAL_METRICS, "device"):
            row[key] = plain(last.get(key))
    elif status == "stopped":
        row.update(partial or {})
    return row


def data_columns(data, encoder_id: str = "") -> dict[str, Any]:
    """The :data:`DATA_COLUMNS` of a trial trained on ``data`` (a ``DataConfig``)."""
    return {
        "data.encoder": data.encoder,
        "data.encoder_id": encoder_id or None,
        "data.split_seed": data.split_seed,
        "data.n_per_class": data.n_per_class,
    }


def same_data(row: dict[str, Any], data) -> bool:
    """False when a stored row was trained on another data setting than ``data``
    (--resume reruns it); rows written before data columns existed match anything."""
    expected = data_columns(data)
    return all(
        row.get(name) is None or row.get(name) == expected[name]
        for name in ("data.encoder", "data.split_seed", "data.n_per_class")
    )


def normalise_row(row: dict[str, Any], *, study: str) -> dict[str, Any]:
    """Every column present, in order; unknown keys dropped."""
    out = {name: row.get(name) for name in _schema().names}
    out["study"] = study
    return out


_SCHEMA = None


def _schema():
    global _SCHEMA
    if _SCHEMA is None:
        import pyarrow as pa

        arrow = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
        kinds = {"seed": pa.int64(), "attempts": pa.int64()}
        kinds.update({name: arrow[kind] for name, kind in FINAL_METRICS.items()})
        fields = [pa.field(name, kinds.get(name, pa.string())) for name in RESULT_COLUMNS]
        for f in dataclasses.fields(TrialConfig):
            if f.name in CONFIG_COLUMNS:
                fields.append(pa.field(f.name, arrow[type(f.default)]))
        fields += [pa.field(name, arrow[kind]) for name, kind in DATA_COLUMNS.items()]
        _SCHEMA = pa.schema(fields)
    return _SCHEMA


# ------------------------------------------------------------------------------------
def trials_path(study_dir: Path) -> Path:
    """``<study_dir>/trials.parquet``."""
    return Path(study_dir) / TABLE_FILE


def study_dir_in(results_root: Path, study: str) -> Path:
    """``<results_root>/<study>``: ``--results`` names the results root (``qsweep run`` and
    ``qsweep slurm submit`` alike). A root that is itself a study directory (the old
    meaning of ``qsweep run --results``) is a ConfigError saying what to pass instead."""
    root = Path(results_root)
    for marker in (TABLE_FILE, STUDY_FILE):
        if (root / marker).is_file():
            fix = (
                f"pass --results {root.parent} to use it"
                if root.name == study
                else f"move it to <root>/{study}/ and pass --results <root>"
            )
            raise ConfigError(
                f"--results {root} is a study directory (it holds {marker}), but --results "
                f"names the results root: the study {study!r} goes to {root / study}. "
                f"This is the old layout of `qsweep run --results`; {fix}."
            )
    return root / study


def read_trials(study_dir: Path):
    """``trials.parquet`` of a study as a pandas DataFrame, columns as written.

    DataError when the directory or the file is missing (naming what the directory holds).
    """
    import pandas as pd

    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise DataError(
            f"study directory {str(study_dir)!r} does not exist; give a directory with "
            "trials.parquet (e.g. results/<study>) or use --mlflow-uri."
        )
    path = trials_path(study_dir)
    if not path.is_file():
        present = sorted(p.name for p in study_dir.iterdir())[:20]
        raise DataError(
            f"{path} does not exist; the study directory holds: {', '.join(present) or 'nothing'}. "
            "Run the study first (qsweep run SPACE.yaml) or use --mlflow-uri."
        )
    return pd.read_parquet(path)


def prepare_study_dir(spec: StudySpec, study_dir: Path, *, resume: bool) -> None:
    """Refuse to overwrite a study without --resume; refuse to resume a different study."""
    contents = [p for p in study_dir.iterdir() if p.name != ".lock"] if study_dir.is_dir() else []
    if contents and not resume:
        raise ConfigError(
            f"results directory {study_dir} is not empty (it holds {', '.join(sorted(p.name for p in contents)[:4])}); "
            "pass --resume to continue that study, or pick another --results directory."
        )
    old = read_study_json(study_dir)
    if resume and old is not None:
        new = spec.study_dict()
        for key in ("name", "factors", "fixed", "search", "seeds"):
            if old.get(key) != new.get(key):
                raise ConfigError(
                    f"--resume: {study_dir}/study.json has {key} = {old.get(key)!r} but the search space says "
                    f"{new.get(key)!r}; resume with the same file, or pick another --results directory."
                )


def record_study(spec: StudySpec, study_dir: Path) -> None:
    """Write study.json (the plan; ``created_at`` kept from an earlier run)."""
    old = read_study_json(study_dir) or {}
    write_study_json(
        study_dir,
        {
            **spec.study_dict(),
            "created_at": old.get("created_at") or utc_now(),
            "qsweep_version": qsweep_version(),
            "n_trials_planned": spec.n_trials(),
        },
    )


def write_study_json(study_dir: Path, info: dict[str, Any]) -> Path:
    path = Path(study_dir) / STUDY_FILE
    tmp = path.with_name(f".{STUDY_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_study_json(study_dir: Path) -> dict[str, Any] | None:
    path = Path(study_dir) / STUDY_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path} is not valid JSON ({err}); move it away or pick another --results."
        ) from None


def study_name(study_dir: Path, meta: dict[str, Any] | None = None) -> str:
    """The study's name: ``name`` in study.json (``meta`` when given), else the directory name.

    An unreadable study.json counts as absent here.
    """
    if meta is None:
        try:
            meta = read_study_json(study_dir) or {}
        except ConfigError:
            meta = {}
    return str(meta.get("name") or Path(study_dir).resolve().name)


# ------------------------------------------------------------------------------------
class StudyLock:
    """``fcntl.flock`` on ``<study_dir>/.lock``; the holder's PID is written into the file.

    The kernel releases the lock when the holding process dies, so a lock file left by a
    killed driver never blocks.
    """

    def __init__(self, study_dir: Path) -> None:
        self.path = Path(study_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ServiceError(
                f"another qsweep driver is running this study: lock file {self.path} is held by PID {holder}. "
                "Wait for it to finish (or stop it), or pass a different --results directory."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

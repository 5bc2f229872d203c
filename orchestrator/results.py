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

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.config import TrialConfig
from model.errors import ConfigError, DataError, ServiceError
from model.types import FINAL_METRICS, FINAL_TAGS

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
    "has_table",
    "shard_of",
    "shard_dir",
    "table_dirs",
    "damaged_table_message",
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
    *FINAL_TAGS,  # model.types: device, engine
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
JOURNAL_FILE = "trials.journal"  # rows finished since the last compaction, one JSON line each
COMPACT_ROWS = 1000  # the journal is folded into the table at max(this, half the table)
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
    """A study's rows: ``trials.parquet`` plus ``trials.journal`` (one JSON line per trial
    finished since the table was last compacted).

    ``add`` appends one line to the journal (O(1) per finished trial, never the whole table);
    the journal is folded into ``trials.parquet`` (temp file + fsync + rename, then the
    journal is removed) when it grows past half the table (at least :data:`COMPACT_ROWS`
    lines: amortised O(1)) and when the driver calls :meth:`compact` at the end of a study.
    Every reader (:meth:`load_rows`, :func:`read_trials`) merges both, the journal's line
    winning for a trial id, so a reader sees one table at any moment. A process killed
    mid-append leaves a torn last line, which readers skip and the next writer cuts off.

    The object keeps only a small index (status, point id) of every row, so a driver's
    memory does not grow with the rows' width; :attr:`rows` loads the full rows on demand
    (tools and tests; edits to it are written by :meth:`write`).
    """

    def __init__(self, path: Path, *, study: str | None) -> None:
        self.path = Path(path)
        self.journal = self.path.with_name(JOURNAL_FILE)
        self.study = study
        self.index: dict[str, tuple[str | None, str | None]] = {}  # trial_id -> (status, point_id)
        self._rows: dict[str, dict[str, Any]] | None = None
        self._journal_lines = 0
        self._fd: int | None = None
        for row in self._table_rows(columns=("trial_id", "status", "point_id")):
            self.index[row["trial_id"]] = (row.get("status"), row.get("point_id"))
        for row in self._journal_rows():
            self.index[row["trial_id"]] = (row.get("status"), row.get("point_id"))
            self._journal_lines += 1

    # --- reading ------------------------------------------------------------------------
    def _table_rows(self, columns: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        import pyarrow.parquet as pq

        try:
            schema_names = set(pq.read_schema(self.path).names)
            wanted = [c for c in columns if c in schema_names] if columns else None
            return pq.read_table(self.path, columns=wanted).to_pylist()
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for damaged files
            raise DataError(damaged_table_message(self.path, err)) from None

    def _journal_rows(self) -> list[dict[str, Any]]:
        """The journal's complete lines (a torn last line, from a killed writer, is skipped)."""
        if not self.journal.exists():
            return []
        rows = []
        with open(self.journal, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # torn by a kill mid-append: the trial is rerun by --resume
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
        return rows

    def load_rows(self) -> dict[str, dict[str, Any]]:
        """Every row, by trial id: the table's, then the journal's (later lines win)."""
        if self._rows is not None:
            return self._rows
        rows = {r["trial_id"]: r for r in self._table_rows()}
        rows.update((r["trial_id"], r) for r in self._journal_rows())
        return {t: normalise_row(r, study=self.study or r.get("study")) for t, r in rows.items()}

    @property
    def rows(self) -> dict[str, dict[str, Any]]:
        """The full rows (loaded once on first use; :meth:`write` saves edits to them)."""
        if self._rows is None:
            self._rows = self.load_rows()
        return self._rows

    def done_ids(self) -> set[str]:
        """Trials with a final status: never run again on --resume."""
        return {tid for tid, (status, _) in self.index.items() if status in FINAL_STATUSES}

    # --- writing ------------------------------------------------------------------------
    def add(self, row: dict[str, Any]) -> None:
        """Append a finished trial's row to the journal (replacing any earlier row of its id)."""
        if row.get("status") not in FINAL_STATUSES:
            raise ValueError(f"status {row.get('status')!r} is not one of {FINAL_STATUSES}")
        row = normalise_row(row, study=self.study)
        line = (json.dumps(row, default=str) + "\n").encode()
        if self._fd is None:
            self._open_journal()
        assert self._fd is not None
        written = os.write(self._fd, line)
        if written != len(line):  # a short write: the disk filled up mid-line
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.journal))
        self._journal_lines += 1
        self.index[row["trial_id"]] = (row["status"], row.get("point_id"))
        if self._rows is not None:
            self._rows[row["trial_id"]] = row
        if self._journal_lines >= max(COMPACT_ROWS, len(self.index) // 2):
            self.compact()

    def _open_journal(self) -> None:
        """Open the journal for appending; a torn last line (killed writer) is cut off first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.journal, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(fd).st_size
        if size:
            tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
            cut = tail.rfind(b"\n") + 1
            if cut < len(tail):  # the last line is incomplete
                os.ftruncate(fd, size - (len(tail) - cut))
        self._fd = fd

    def compact(self) -> None:
        """Fold the journal into ``trials.parquet`` (atomically) and remove the journal."""
        if self._rows is not None or not self._compact_columnar():  # edited rows: write them
            self._write_table(list(self.load_rows().values()))
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal)
        self._journal_lines = 0

    write = compact  # the pre-journal name; also saves edits made to :attr:`rows`

    def close_and_compact(self) -> None:
        """At the end of a study: fold the journal in; if that fails (a full disk), the
        journal stays and readers still merge it."""
        try:
            if self.journal.exists() or not self.path.exists():
                self.compact()
        except OSError:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _compact_columnar(self) -> bool:
        """The driver's compaction: the table stays in Arrow's columns (only the journal's
        rows become Python dicts), so a compaction's memory is the table's compact size, not
        every row as a dict (which grew the driver by ~250 MB per 10,000 trials). False when
        the table's schema is not the current one (an older table): the row path rewrites it."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        journal = {r["trial_id"]: r for r in self._journal_rows()}
        fresh = [normalise_row(r, study=self.study or r.get("study")) for r in journal.values()]
        new = pa.Table.from_pylist(fresh, schema=_schema()) if fresh else _schema().empty_table()
        if self.path.exists():
            try:
                old = pq.read_table(self.path)
            except Exception as err:  # noqa: BLE001 - pyarrow raises several types
                raise DataError(damaged_table_message(self.path, err)) from None
            if not old.schema.equals(_schema()):
                return False
            if journal:
                replaced = pc.is_in(old["trial_id"], value_set=pa.array(list(journal), pa.string()))
                old = old.filter(pc.invert(replaced))
            new = pa.concat_tables([old, new])
        self._write_arrow(new)
        return True

    def _write_table(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        rows = [normalise_row(r, study=self.study or r.get("study")) for r in rows]
        table = pa.Table.from_pylist(rows, schema=_schema()) if rows else _schema().empty_table()
        self._write_arrow(table)

    def _write_arrow(self, table) -> None:
        """Write ``table`` as trials.parquet: a temp file, fsync, then one rename."""
        import pyarrow.parquet as pq

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(list(self.load_rows().values()), columns=list(_schema().names))

    def next_optuna_index(self) -> int:
        """Index of the next optuna point id (``o000``, ``o001``, ...) after the rows held."""
        ids = [str(p) for _, p in self.index.values() if str(p or "").startswith("o")]
        return 1 + max((int(i[1:]) for i in ids if i[1:].isdigit()), default=-1)

    def warm_start(self, factors, metric: str) -> tuple[list[dict[str, Any]], list[float]]:
        """(factor settings, metric values) of the finished, not failed trials with a value.

        On --resume, a fresh, identically seeded Optuna sampler is told these trials first.
        """
        by_point: dict[str, tuple[dict[str, Any], list[float]]] = {}
        for row in self.load_rows().values():
            value = row.get(metric)
            if row["status"] != "failed" and value is not None and not math.isnan(value):
                point = by_point.setdefault(row["point_id"], ({n: row.get(n) for n in factors}, []))
                point[1].append(value)
        # a suggestion repeated over seeds is scored by its mean, as the driver reports it
        points = [p for p, _ in by_point.values()]
        rewards = [sum(v) / len(v) for _, v in by_point.values()]
        return points, rewards


def damaged_table_message(path: Path, err: BaseException) -> str:
    """The one-paragraph error for a trials table that cannot be read."""
    return (
        f"{path} is damaged and cannot be read ({type(err).__name__}: {str(err)[:200]}). "
        "Restore it from a backup, or move it away and run the study again with --resume: "
        "the trials it held are then trained again (their MLflow runs stay)."
    )


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
        for key in (*FINAL_METRICS, *FINAL_TAGS):
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


def normalise_row(row: dict[str, Any], *, study: str | None) -> dict[str, Any]:
    """Every column present, in order; unknown keys dropped; ``study`` set unless None."""
    out = {name: row.get(name) for name in _schema().names}
    if study is not None:
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


def has_table(study_dir: Path) -> bool:
    """Whether ``study_dir`` holds a trials table (``trials.parquet`` or its journal)."""
    return trials_path(study_dir).is_file() or (Path(study_dir) / JOURNAL_FILE).is_file()


SHARDS_DIR = "shards"
PROGRESS_FILE = "progress.json"  # a shard's counts, for the study run of a sharded study


def shard_of(point_id: str, shards: int) -> int:
    """The shard (0 .. shards-1) of a grid/DOE point: point number modulo ``shards``, so
    every shard gets every shards-th point and all the seeds of its points (packs stay whole)."""
    return int(point_id.lstrip("p")) % shards


def shard_dir(study_dir: Path, shard: tuple[int, int]) -> Path:
    """``<study_dir>/shards/<i>-of-<k>``: a shard's own table, journal, lock and Ray state."""
    index, shards = shard
    return Path(study_dir) / SHARDS_DIR / f"{index:02d}-of-{shards:02d}"


def table_dirs(study_dir: Path) -> list[Path]:
    """The directories whose tables make up a study: itself and each of its shards."""
    study_dir = Path(study_dir)
    shards = sorted(p for p in (study_dir / SHARDS_DIR).glob("*-of-*") if has_table(p))
    return [study_dir, *shards]


def frames_empty():
    import pandas as pd

    return pd.DataFrame([], columns=list(_schema().names))


def read_trials(study_dir: Path):
    """A study's rows as a pandas DataFrame: ``trials.parquet`` with the rows of its journal
    (a running or killed driver's latest trials) merged in.

    DataError when the directory or the file is missing (naming what the directory holds),
    or the table is damaged (naming the file and what to do).
    """
    import pandas as pd

    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise DataError(
            f"study directory {str(study_dir)!r} does not exist; give a directory with "
            "trials.parquet (e.g. results/<study>) or use --mlflow-uri."
        )
    path = trials_path(study_dir)
    if not has_table(study_dir):
        present = sorted(p.name for p in study_dir.iterdir())[:20]
        raise DataError(
            f"{path} does not exist; the study directory holds: {', '.join(present) or 'nothing'}. "
            "Run the study first (qsweep run SPACE.yaml) or use --mlflow-uri."
        )
    dirs = table_dirs(study_dir)
    if len(dirs) > 1:  # a sharded study (a Slurm job array): every shard's rows
        frames = [ResultsTable(trials_path(d), study=None).to_pandas() for d in dirs]
        frames = [f for f in frames if len(f)]
        frame = pd.concat(frames, ignore_index=True) if frames else frames_empty()
        return frame.drop_duplicates("trial_id", keep="last").reset_index(drop=True)
    table = ResultsTable(path, study=None)  # DataError naming the file when it is damaged
    if not table.journal.exists():
        return pd.read_parquet(path) if path.exists() else table.to_pandas()
    return table.to_pandas()  # rows finished since the last compaction are in the journal


def prepare_study_dir(
    spec: StudySpec, study_dir: Path, *, resume: bool, study_json_dir: Path | None = None
) -> None:
    """Refuse to overwrite finished trials without --resume; refuse to resume a different
    study. A directory that holds no finished trial (a start that failed before its first
    trial leaves study.json, mlflow.db and an empty table) counts as empty: the retry
    needs no --resume, and its study.json is rewritten. The trials of a sharded study's
    shards (``shards/*/``) count as its finished trials.

    ``study_json_dir``: where study.json is when it is not ``study_dir`` (a shard of a job
    array: its own directory under ``shards/``, the plan in the study's directory, which
    the other shards share, so a shard is always checked against it).
    """
    contents = [p for p in study_dir.iterdir() if p.name != ".lock"] if study_dir.is_dir() else []
    finished: set[str] = set()  # the study's own and, of a sharded study, its shards'
    for directory in table_dirs(study_dir):
        finished |= ResultsTable(trials_path(directory), study=spec.name).done_ids()
    if contents and finished and not resume:
        raise ConfigError(
            f"results directory {study_dir} holds {len(finished)} finished "
            f"trial{'s' if len(finished) != 1 else ''} (and "
            f"{', '.join(sorted(p.name for p in contents)[:4])}); pass --resume to continue "
            "that study, or pick another --results directory."
        )
    old = read_study_json(study_json_dir or study_dir)
    if old is not None and (study_json_dir is not None or (resume and finished)):
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
    """``fcntl.flock`` on ``<study_dir>/.lock``; the holder writes ``PID HOST`` into the file.

    The kernel releases the lock when the holding process dies, so a lock file left by a
    killed driver never blocks. A driver that is refused names the holder: the file may
    still name a dead driver (or be half rewritten) for the moment between the new
    holder's ``flock`` and its write, so the refused one reads it again until it names a
    live process (or one on another host, which it cannot check), trying the lock again
    each time, for up to ``wait_s`` seconds.
    """

    def __init__(self, study_dir: Path, *, wait_s: float = 2.0) -> None:
        self.path = Path(study_dir) / LOCK_FILE
        self.wait_s = wait_s
        self._fd: int | None = None

    def acquire(self) -> StudyLock:
        import socket
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder, settled = self._holder(os.pread(fd, 256, 0), socket.gethostname())
                if settled or time.monotonic() > deadline:
                    os.close(fd)
                    raise ServiceError(
                        f"another qsweep driver is running this study: lock file {self.path} "
                        f"is held by {holder}. Wait for it to finish (or stop it), or pass a "
                        "different --results directory."
                    ) from None
                time.sleep(0.01)
        # write, then cut: a reader sees the old line or the new one, never an empty file
        line = f"{os.getpid()} {socket.gethostname()}\n".encode()
        os.pwrite(fd, line, 0)
        os.ftruncate(fd, len(line))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a finished study's lock names no one
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def _holder(content: bytes, this_host: str) -> tuple[str, bool]:
        """Who the lock file's first line names, and whether that is settled: a live process
        here or one on another host. Unsettled (no full line yet, a dead PID) the caller
        reads it again."""
        first, newline, _ = content.decode(errors="replace").partition("\n")
        pid, _, host = first.strip().partition(" ")
        if not newline or not pid.isdigit():
            return f"an unknown process (the lock file says {first[:80]!r})", False
        if host and host != this_host:
            return f"PID {pid} on {host}", True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return f"PID {pid}, which has exited (a process it started may hold the lock)", False
        except PermissionError:  # alive, another user's
            pass
        return f"PID {pid}", True

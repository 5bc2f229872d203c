"""trials.parquet, study.json, the study lock and the progress line (no Ray, no MLflow)."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from model.config import TrialConfig
from model.errors import ConfigError, DataError, ServiceError
from orchestrator.progress import Progress, format_duration
from orchestrator.results import (
    RESULT_COLUMNS,
    ResultsTable,
    StudyLock,
    read_study_json,
    read_trials,
    write_study_json,
)


def row(trial_id: str, status: str = "completed", **extra):
    cfg = TrialConfig(qubits=5, learning_rate=0.01).to_dict()
    cfg.pop("seed")
    return {
        **cfg,
        "trial_id": trial_id,
        "point_id": trial_id[:4],
        "seed": 0,
        "status": status,
        **extra,
    }


def test_table_columns_roundtrip_and_replace(tmp_path):
    path = tmp_path / "trials.parquet"
    table = ResultsTable(path, study="s")
    table.add(row("p000_s0", val_accuracy=0.75, n_params=12, attempts=1))
    table.add(row("p001_s0", status="failed", error="boom", attempts=2))
    table.add(row("p000_s0", val_accuracy=0.8, n_params=12, attempts=1))  # same trial: replaced
    # rows are appended to the journal, not written into the table one by one
    assert not path.exists() and len(table.journal.read_text().splitlines()) == 3
    assert set(read_trials(tmp_path)["trial_id"]) == {"p000_s0", "p001_s0"}  # readers merge
    table.compact()
    assert not table.journal.exists()
    arrow = pq.read_table(path)
    names = arrow.column_names
    assert names[: len(RESULT_COLUMNS)] == list(RESULT_COLUMNS)
    expected_config = {f.name for f in dataclasses.fields(TrialConfig)} - {"seed", "device"}
    assert expected_config <= set(names)
    rows = {r["trial_id"]: r for r in arrow.to_pylist()}
    assert set(rows) == {"p000_s0", "p001_s0"}
    assert rows["p000_s0"]["val_accuracy"] == 0.8 and rows["p000_s0"]["study"] == "s"
    assert rows["p001_s0"]["error"] == "boom" and rows["p001_s0"]["val_accuracy"] is None
    assert rows["p000_s0"]["qubits"] == 5 and rows["p000_s0"]["final_linear"] is True
    # reopening sees the same rows and done ids; no temp files left behind
    again = ResultsTable(path, study="s")
    assert again.done_ids() == {"p000_s0", "p001_s0"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.parquet"]
    df = again.to_pandas()
    assert list(df.columns) == names and len(df) == 2


def test_journal_and_table_merge_with_the_journal_winning(tmp_path):
    path = tmp_path / "trials.parquet"
    table = ResultsTable(path, study="s")
    table.add(row("p000_s0", val_accuracy=0.5))
    table.add(row("p001_s0", val_accuracy=0.6))
    table.compact()
    table.add(row("p001_s0", val_accuracy=0.9))  # rerun after the compaction
    table.add(row("p002_s0", status="failed", error="x"))
    table.close()
    merged = ResultsTable(path, study="s")
    assert merged.done_ids() == {"p000_s0", "p001_s0", "p002_s0"}
    rows = merged.load_rows()
    assert rows["p001_s0"]["val_accuracy"] == 0.9 and rows["p000_s0"]["val_accuracy"] == 0.5
    frame = read_trials(tmp_path).set_index("trial_id")
    assert frame.loc["p001_s0", "val_accuracy"] == 0.9 and len(frame) == 3


def test_columnar_compaction_equals_the_row_path(tmp_path):
    """The driver folds the journal into the table in Arrow's columns; the result is the
    table the row-by-row path writes (a rerun row replaces its id, new ids are added)."""
    tables = {}
    for kind in ("columnar", "rows"):
        path = tmp_path / kind / "trials.parquet"
        table = ResultsTable(path, study="s")
        for i in range(6):
            table.add(row(f"p{i:03d}_s0", val_accuracy=i / 10))
        table.compact()
        table.add(row("p002_s0", val_accuracy=0.99))
        table.add(row("p007_s0", status="failed", error="boom"))
        table.add(row("p007_s0", val_accuracy=0.7))  # the journal's later line wins
        if kind == "rows":
            assert len(table.rows) == 7  # loaded rows: compact writes them row by row
        table.compact()
        assert not table.journal.exists()
        tables[kind] = pq.read_table(path).to_pandas().sort_values("trial_id", ignore_index=True)
    a, b = tables["columnar"], tables["rows"]
    assert list(a.columns) == list(b.columns) and len(a) == 7
    assert a.equals(b)
    assert a.set_index("trial_id").loc["p002_s0", "val_accuracy"] == 0.99
    assert a.set_index("trial_id").loc["p007_s0", "status"] == "completed"


def test_compaction_rewrites_a_table_of_an_older_schema_row_by_row(tmp_path):
    import pyarrow as pa

    path = tmp_path / "trials.parquet"
    old = pa.Table.from_pylist([{"trial_id": "p000_s0", "point_id": "p000", "status": "completed",
                                 "val_accuracy": 0.5, "seed": 0}])  # fmt: skip
    pq.write_table(old, path)
    table = ResultsTable(path, study="s")
    table.add(row("p001_s0", val_accuracy=0.6))
    table.compact()
    written = pq.read_table(path)
    assert sorted(written["trial_id"].to_pylist()) == ["p000_s0", "p001_s0"]
    assert set(RESULT_COLUMNS) <= set(written.schema.names)


def test_torn_journal_line_is_skipped_and_cut_off_by_the_next_writer(tmp_path):
    """A driver SIGKILLed mid-append leaves half a line: readers skip that trial (--resume
    reruns it) and the next writer cuts it off before appending."""
    path = tmp_path / "trials.parquet"
    table = ResultsTable(path, study="s")
    table.add(row("p000_s0", val_accuracy=0.5))
    table.close()
    whole = table.journal.read_bytes()
    with open(table.journal, "ab") as handle:
        handle.write(whole[: len(whole) // 2].replace(b"p000_s0", b"p001_s0"))  # torn line
    reader = ResultsTable(path, study="s")
    assert reader.done_ids() == {"p000_s0"}
    reader.add(row("p002_s0", val_accuracy=0.7))
    reader.close()
    lines = reader.journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2 and all(line.endswith(b"\n") for line in lines)
    assert ResultsTable(path, study="s").done_ids() == {"p000_s0", "p002_s0"}


def test_journal_is_compacted_when_it_outgrows_half_the_table(tmp_path, monkeypatch):
    import orchestrator.results as results

    monkeypatch.setattr(results, "COMPACT_ROWS", 4)
    path = tmp_path / "trials.parquet"
    table = ResultsTable(path, study="s")
    compactions = []
    original = table.compact
    monkeypatch.setattr(
        table, "compact", lambda: (compactions.append(len(table.index)), original())[1]
    )
    for i in range(40):
        table.add(row(f"p{i:03d}_s0", val_accuracy=i / 40))
    # at 4 rows, then whenever the journal holds half as many rows as the table: the table
    # roughly doubles between compactions, so the rows rewritten are O(1) per added row
    assert compactions == [4, 8, 15, 29]
    assert pq.read_table(path).num_rows == 29 and len(table.journal.read_text().splitlines()) == 11
    table.compact()  # what the driver does when the study ends
    assert pq.read_table(path).num_rows == 40 and not table.journal.exists()


def test_damaged_table_is_a_clear_error(tmp_path):
    path = tmp_path / "trials.parquet"
    table = ResultsTable(path, study="s")
    for i in range(5):
        table.add(row(f"p{i:03d}_s0", val_accuracy=0.5))
    table.compact()
    os.truncate(path, path.stat().st_size // 2)
    for read in (lambda: ResultsTable(path, study="s"), lambda: read_trials(tmp_path)):
        with pytest.raises(DataError) as err:
            read()
        message = str(err.value)
        assert str(path) in message and "damaged" in message and "--resume" in message


def test_table_rejects_non_final_status(tmp_path):
    with pytest.raises(ValueError):
        ResultsTable(tmp_path / "t.parquet", study="s").add(row("x", status="running"))


def test_empty_table_has_schema(tmp_path):
    table = ResultsTable(tmp_path / "t.parquet", study="s")
    table.write()
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 0
    assert "qubits" in pq.read_table(tmp_path / "t.parquet").column_names


def test_study_json_roundtrip(tmp_path):
    write_study_json(tmp_path, {"name": "s", "n_trials_planned": 3})
    assert read_study_json(tmp_path) == {"name": "s", "n_trials_planned": 3}
    assert read_study_json(tmp_path / "missing") is None


# --- lock ---------------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from orchestrator.results import StudyLock
lock = StudyLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _holder(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_holder_is_refused_with_pid_and_file(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(ServiceError) as err:
            StudyLock(tmp_path).acquire()
        message = str(err.value)
        assert str(tmp_path / ".lock") in message and f"PID {proc.pid}" in message
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".lock").exists()
    with StudyLock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    with StudyLock(tmp_path):  # released on exit, so it can be taken again
        pass


def test_run_refuses_a_locked_study(tmp_path, capsys):
    from orchestrator.cli import main

    space = tmp_path / "s.yaml"
    space.write_text(
        "name: s\ndata: {source: demo, encoder: minilm, n_per_class: 20}\n"
        "fixed: {epochs: 1}\nfactors: {qubits: [9]}\n"
    )
    study = tmp_path / "s"  # --results is the root: the study goes to <root>/s
    proc = _holder(study)
    try:
        assert main(["run", str(space), "--results", str(tmp_path)]) == 2
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err
    assert str(study / ".lock") in err and f"PID {proc.pid}" in err


# --- progress -----------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_counts_best_and_remaining():
    clock, out = Clock(), io.StringIO()
    p = Progress(
        "s",
        6,
        metric="val_accuracy",
        mode="max",
        concurrency=2,
        stream=out,
        clock=clock,
        interval_s=1e9,
    )
    p.started("a")
    p.started("b")
    clock.t = 10.0
    p.finished("a", "completed", 0.7, 10.0)
    p.finished("b", "failed", None, 20.0)
    p.started("c")
    clock.t = 25.0
    p.finished("c", "completed", 0.9, 15.0)
    line = p.line()
    assert "3/6 done" in line and "1 failed" in line and "0 running" in line
    assert "best val_accuracy 0.9000 (c)" in line
    # mean 15 s x 3 left / 2 concurrent = 22.5 s
    assert p.remaining_s() == pytest.approx(15.0 * 3 / 2)
    assert "25s elapsed" in line and "~22s left" in line  # 22.5 rounds half to even
    # the first start prints at once, later starts are throttled, a finish prints unless
    # another line went out less than a second before ("b" ended in the same second as "a")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + 2 and "1/6 done" in lines[1] and "3/6 done" in lines[2]


def test_progress_counts_packs_and_does_not_repeat_the_last_line():
    clock, out = Clock(), io.StringIO()
    p = Progress("s", 4, metric="val_accuracy", mode="max", concurrency=2, stream=out,
                 clock=clock, interval_s=1e9)  # fmt: skip
    for trial, pack in (("a", "a+2"), ("b", "a+2"), ("c", "c+2"), ("d", "c+2")):
        p.started(trial, pack_id=pack)
    assert "0/4 done, 4 running in 2 packs" in p.line()
    clock.t = 100.0
    p.finished("a", "completed", 0.8, 100.0)
    assert "1/4 done, 3 running in 2 packs" in p.line()
    # two packs of two on two slots: the pack still running needs one more pack time at most
    assert p.remaining_s() == pytest.approx(100.0 * 3 / 2 / 2)
    p.finished("b", "completed", 0.7, 100.0)
    assert "2/4 done, 2 running in 1 pack" in p.line()
    clock.t = 150.0
    p.finished("c", "completed", 0.6, 100.0)
    p.finished("d", "completed", 0.9, 100.0)  # the same second: held back by the rate limit
    assert "4/4 done, 0 running" in p.line()
    assert "4/4 done" not in out.getvalue()
    clock.t = 151.0
    p.maybe_print(force=True)  # the driver's closing call: the last state, once
    lines = out.getvalue().splitlines()
    assert sum("4/4 done" in line for line in lines) == 1
    clock.t = 152.0
    p.maybe_print(force=True)  # a second forced call: nothing new, so nothing printed
    assert out.getvalue().splitlines() == lines
    p.started("e")  # trials alone: no pack count
    assert ", 1 running |" in p.line()


def test_progress_min_mode_and_resume_offset():
    p = Progress(
        "s", 4, metric="val_loss", mode="min", concurrency=1, already_done=2, stream=io.StringIO()
    )
    p.finished("x", "completed", 0.5, 1.0)
    p.finished("y", "stopped", 0.3, 1.0)
    assert p.best == (0.3, "y")
    assert "4/4 done" in p.line() and "2 from before" in p.line() and "1 stopped early" in p.line()


def test_format_duration():
    assert [format_duration(s) for s in (5, 65, 3700)] == ["5s", "1m05s", "1h01m"]
    assert format_duration(47 * 3600 + 120) == "47h02m" and format_duration(860 * 3600) == "35d20h"


# --- the study directory and row building, without Ray -------------------------------
def _spec(**changes):
    from orchestrator.spec import spec_from_dict

    doc = {"name": "s", "factors": {"qubits": [2, 3]}, "fixed": {"epochs": 2}}
    return spec_from_dict({**doc, **changes})


def test_prepare_study_dir_refuses_overwrite_and_a_different_study(tmp_path):
    from model.errors import ConfigError
    from orchestrator.results import prepare_study_dir, record_study

    study_dir = tmp_path / "s"
    prepare_study_dir(_spec(), study_dir, resume=False)  # missing directory: fine
    study_dir.mkdir()
    (study_dir / ".lock").write_text("")
    prepare_study_dir(_spec(), study_dir, resume=False)  # only the lock: fine
    record_study(_spec(), study_dir)
    first = read_study_json(study_dir)
    assert first["n_trials_planned"] == 2 and first["factors"] == {"qubits": [2, 3]}
    # study.json without a finished trial (a failed start): no --resume needed
    prepare_study_dir(_spec(), study_dir, resume=False)
    prepare_study_dir(_spec(factors={"qubits": [2, 4]}), study_dir, resume=True)
    ResultsTable(study_dir / "trials.parquet", study="s").add(row("p000_s0"))
    with pytest.raises(ConfigError, match="holds 1 finished trial "):
        prepare_study_dir(_spec(), study_dir, resume=False)
    prepare_study_dir(_spec(), study_dir, resume=True)
    with pytest.raises(ConfigError, match="has factors"):
        prepare_study_dir(_spec(factors={"qubits": [2, 4]}), study_dir, resume=True)
    record_study(_spec(), study_dir)  # rewritten: created_at kept
    assert read_study_json(study_dir)["created_at"] == first["created_at"]


def test_prepare_study_dir_of_a_sharded_study(tmp_path):
    """A shard without finished trials is still held to the study.json its siblings share;
    a study whose finished trials are all in its shards is not empty."""
    from orchestrator.results import prepare_study_dir, record_study, shard_dir

    study_dir = tmp_path / "s"
    study_dir.mkdir()
    record_study(_spec(), study_dir)
    ResultsTable(study_dir / "trials.parquet", study="s").write()  # the study's empty table
    first, second = shard_dir(study_dir, (0, 2)), shard_dir(study_dir, (1, 2))
    prepare_study_dir(_spec(), second, resume=True, study_json_dir=study_dir)
    with pytest.raises(ConfigError, match="has factors"):
        prepare_study_dir(
            _spec(factors={"qubits": [2, 4]}), second, resume=True, study_json_dir=study_dir
        )
    first.mkdir(parents=True)
    ResultsTable(first / "trials.parquet", study="s").add(row("p000_s0"))
    with pytest.raises(ConfigError, match="holds 1 finished trial "):
        prepare_study_dir(_spec(), study_dir, resume=False)  # an unsharded rerun over it
    with pytest.raises(ConfigError, match="has factors"):
        prepare_study_dir(_spec(factors={"qubits": [2, 4]}), study_dir, resume=True)


def test_trial_row_by_status():
    import numpy as np

    from orchestrator.results import trial_row

    config = TrialConfig(qubits=3).to_dict()
    ids = dict(trial_id="p000_s0", point_id="p000", seed=0, started_at="t0")
    final = {"val_accuracy": np.float64(0.75), "n_params": 9, "device": "cpu", "attempts": 2}
    done = trial_row(config, status="completed", last=final, **ids)
    assert done["val_accuracy"] == 0.75 and type(done["val_accuracy"]) is float
    assert done["n_params"] == 9 and done["device"] == "cpu" and done["attempts"] == 2
    assert done["test_accuracy"] is None and "seed" in done and done["qubits"] == 3
    assert done["error"] is None and done["finished_at"]
    partial = {"val_accuracy": 0.6, "best_epoch": 2, "epochs_run": 3, "wall_time_s": 1.5}
    stopped = trial_row(config, status="stopped", last={"attempt": 1}, partial=partial, **ids)
    assert {k: stopped[k] for k in partial} == partial and stopped["device"] == "auto"
    failed = trial_row(config, status="failed", last={"error": "boom"}, partial=partial, **ids)
    assert failed["error"] == "boom" and failed["attempts"] == 1 and "best_epoch" not in failed


def test_warm_start_and_next_optuna_index(tmp_path):
    table = ResultsTable(tmp_path / "trials.parquet", study="s")
    assert table.next_optuna_index() == 0
    table.add(row("o000_s0", point_id="o000", val_accuracy=0.7))
    table.add(row("o001_s0", point_id="o001", val_accuracy=float("nan"), status="stopped"))
    table.add(row("o002_s0", point_id="o002", status="failed", val_accuracy=0.9))
    table.add(row("o004_s0", point_id="o004", val_accuracy=0.8, status="stopped"))
    points, rewards = table.warm_start({"qubits": [2, 5]}, "val_accuracy")
    assert points == [{"qubits": 5}, {"qubits": 5}] and rewards == [0.7, 0.8]
    assert table.next_optuna_index() == 5


def test_results_is_the_root_and_an_old_study_dir_is_refused(tmp_path):
    from orchestrator.results import study_dir_in

    assert study_dir_in(tmp_path, "quick") == tmp_path / "quick"
    old = tmp_path / "quick"  # what `qsweep run --results` used to name: the study itself
    old.mkdir()
    (old / "trials.parquet").write_bytes(b"")
    with pytest.raises(
        ConfigError, match=r"is a study directory .*pass --results " + str(tmp_path)
    ):
        study_dir_in(old, "quick")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "study.json").write_text("{}")
    with pytest.raises(ConfigError, match="move it to <root>/quick/"):
        study_dir_in(other, "quick")

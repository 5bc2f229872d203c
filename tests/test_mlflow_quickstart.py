"""The quickstart study as an analyst meets it: a logged model that predicts like the
trial, and the MLflow UI rendered by headless Chromium.

One real quickstart run (4 quantum-head trials, MiniLM, about a minute on 2 cores) is shared
by the tests of this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import require_or_skip
from tests.services import free_port, stop_group, wait_healthy
from tests.test_sweep_cli import QSWEEP, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """``qsweep run`` on the shipped quickstart: (study dir, trials table, environment)."""
    tmp = tmp_path_factory.mktemp("quickstart")
    env = {**os.environ, "QSWEEP_CACHE": str(tmp / "cache"), "RAY_AUTH_MODE": "disabled"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    study = tmp / "quickstart"
    done = subprocess.run(
        [*QSWEEP, "run", str(QUICKSTART), "--results", str(tmp)],  # the results root
        cwd=tmp, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(study / "trials.parquet").to_pylist()
    assert len(table) == 4 and all(r["status"] == "completed" for r in table)
    return study, table, env


def test_predict_from_the_logged_model_equals_the_trials_evaluation(quickstart, tmp_path):
    from model.data import make_splits
    from orchestrator.spec import load_spec

    study, table, env = quickstart
    splits = make_splits(load_spec(QUICKSTART).data)  # the same seeded split as the trials
    sentences = tmp_path / "test.txt"
    sentences.write_text("\n".join(splits.test_text) + "\n")
    for row in sorted(table, key=lambda r: r["trial_id"])[:2]:
        done = subprocess.run(
            [*QSWEEP, "predict", "--trial", f"quickstart/{row['trial_id']}",
             "--results", str(study), "--file", str(sentences), "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        predicted = json.loads(done.stdout)
        assert [p["text"] for p in predicted] == list(splits.test_text)
        labels = [p["label"] for p in predicted]
        accuracy = sum(a == b for a, b in zip(labels, splits.test_y, strict=True)) / len(labels)
        assert accuracy == pytest.approx(row["test_accuracy"], abs=1e-12)  # the trial's own number
        for p in predicted:
            assert sum(p["probabilities"]) == pytest.approx(1.0)
            assert p["label"] == int(p["probabilities"][1] > p["probabilities"][0])

    # by run id, plain output: label, p(0), p(1), text
    from orchestrator.tracking import default_tracking_uri, find_trial_model

    found = find_trial_model(default_tracking_uri(study), study="quickstart", trial_id="p000_s0")
    done = subprocess.run(
        [*QSWEEP, "predict", "--run", found["run_id"], "--results", str(study.parent),
         "a gripping, beautifully acted film", "dull and far too long"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].endswith("\tdull and far too long")
    assert lines[0].split("\t")[0] in ("0", "1")


def chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{time.monotonic_ns()}"
    command = [
        shutil.which("chromium") or "chromium",
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=2000,1200", "--virtual-time-budget=30000",
        *extra, url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    keep = os.environ.get("QSWEEP_KEEP_SCREENSHOTS")  # a directory, for a person to look at
    for arg in extra:
        if keep and arg.startswith("--screenshot=") and Path(arg[13:]).exists():
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(arg[13:], Path(keep) / Path(arg[13:]).name)
    return done


@pytest.fixture
def ui(quickstart, tmp_path):
    """``qsweep ui`` on the quickstart study: the experiment URL it prints."""
    study, _, env = quickstart
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*QSWEEP, "ui", str(study), "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout_s=180, log=log)
        # qsweep ui prints the URL after its own /health poll answers, which may come a
        # little after the one above
        deadline = time.monotonic() + 60
        while not (
            match := re.search(r"study (http://\S+/#/experiments/(\d+)/runs)", log.read_text())
        ):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
        yield match.group(1), match.group(2)
    finally:
        stop_group(proc, timeout_s=30)


def visible_text(dom: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def test_mlflow_ui_shows_the_study_its_trials_and_a_model(ui, quickstart, tmp_path):
    require_or_skip(
        shutil.which("chromium"), "chromium is not installed (apt-get install chromium)"
    )
    url, experiment_id = ui
    study, table, _ = quickstart
    trial_ids = sorted(r["trial_id"] for r in table)

    # The URL qsweep ui prints: one row per study (the parent run; trials nested under it).
    page = visible_text(chromium(url, tmp_path, "--dump-dom").stdout)
    assert "Training runs" in page and "quickstart" in page, page[-2000:]
    assert "5 matching runs" in page, page[-2000:]
    assert not any(t in page for t in trial_ids)  # collapsed under the study's row

    # Sorted by name the table is flat: the parent and its four trials, with their dataset.
    flat = url + "?orderByKey=attributes.run_name&orderByAsc=true"
    shot = tmp_path / "runs.png"
    chromium(flat, tmp_path, f"--screenshot={shot}")
    assert shot.exists()
    page = visible_text(chromium(flat, tmp_path, "--dump-dom").stdout)
    for name in ["quickstart", *trial_ids]:
        assert name in page, (name, page[-2000:])
    assert "demo-paper-embeddings" in page

    # A trial's page: its description, parent, dataset and registered model.
    from orchestrator.tracking import default_tracking_uri, find_trial_model

    found = find_trial_model(default_tracking_uri(study), study="quickstart", trial_id=trial_ids[0])
    run_url = f"{url.rsplit('/runs', 1)[0]}/runs/{found['run_id']}"
    shot = tmp_path / "trial.png"
    chromium(run_url, tmp_path, f"--screenshot={shot}")
    assert shot.exists()
    page = visible_text(chromium(run_url, tmp_path, "--dump-dom").stdout)
    model_id = found["model_uri"].rsplit("/", 1)[-1]
    assert "Logged models" in page and model_id in page, page[-3000:]
    assert re.search(r"Registered models.*quickstart", page), page[-3000:]
    assert re.search(rf"{trial_ids[0]}\s*: quantum head, (9|10) qubits", page), page[-3000:]
    assert "best epoch" in page
    assert "Parent run" in page and "demo-paper-embeddings" in page

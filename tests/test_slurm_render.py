"""Slurm without a Slurm: rendering vs reference files, the batch script's shell logic
run against fake srun/scontrol/ray/qsweep commands, and SlurmClient/CLI with a fake runner.

Reference files in tests/slurm_ref/ were rendered once, read line by line and committed;
after an intended template change, re-render them with
``QSWEEP_UPDATE_SLURM_REFS=1 pytest tests/test_slurm_render.py`` and review the diff.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.errors import ConfigError, ServiceError
from orchestrator.commands import slurm as slurm_cmd
from orchestrator.slurm import (
    CommandResult,
    JobInfo,
    SlurmClient,
    SlurmOptions,
    parse_scontrol_record,
    render_sbatch,
    run_command,
)

REF_DIR = Path(__file__).parent / "slurm_ref"
BASE = dict(
    study_file="/home/alice/qsweep/search_spaces/quickstart.yaml",
    study_name="quickstart",
    results_dir="/home/alice/qsweep/results",
)
CASES = {
    "one_node_cpu": SlurmOptions(
        **BASE, nodes=1, cpus_per_node=2, activate="source /home/alice/qsweep/.venv/bin/activate"
    ),
    "multi_node_gpu": SlurmOptions(
        **BASE,
        nodes=4,
        cpus_per_node=32,
        gpus_per_node=4,
        gpu_per_trial=0.25,  # resources.gpu: 1/4 -> 4 trials share each GPU
        modules=("cuda/12.4",),
        activate="source ~/venvs/qsweep/bin/activate",
        mlflow_uri="http://mlflow.example.org:5000",
        max_concurrent=16,
    ),
    "container": SlurmOptions(
        **BASE,
        nodes=2,
        gpus_per_node=1,
        container="/shared/images/qsweep.sif",
        modules=("apptainer",),
        start_mlflow_server=True,
        encoder="/shared/models/all-mpnet-base-v2",
    ),
    "job_array": SlurmOptions(
        **BASE,
        nodes=1,
        cpus_per_node=16,
        array=4,
        time="02:00:00",
        mlflow_uri="http://mlflow.example.org:5000",
        activate="source ~/venvs/qsweep/bin/activate",
    ),
    "site_options": SlurmOptions(
        **BASE,
        nodes=1,
        cpus_per_node=8,
        partition="short",
        account="proj-q42",
        qos="normal",
        time="04:00:00",
        constraint="skylake&ib",
        job_name="qs-quick",
        sbatch_args=("--mem=0", "--mail-type=END"),
        data="/data/sst2 dir",
        ray_auth="disabled",
        signal_seconds=300,
    ),
}


# --- rendering ------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_reference(case: str) -> None:
    rendered = render_sbatch(CASES[case])
    ref = REF_DIR / f"{case}.sbatch"
    if os.environ.get("QSWEEP_UPDATE_SLURM_REFS"):
        ref.write_text(rendered)
    assert rendered == ref.read_text(), f"rendering differs from {ref}; diff them"


def test_job_array_lines_and_refusals() -> None:
    script = render_sbatch(CASES["job_array"])
    assert "#SBATCH --array=0-3" in script and "slurm-%A_%a.out" in script
    assert '--shard "$SLURM_ARRAY_TASK_ID/4"' in script
    assert "%j.out" not in script and "--array" not in render_sbatch(CASES["one_node_cpu"])
    with pytest.raises(ConfigError, match="--start-mlflow-server"):
        SlurmOptions(**BASE, array=2, start_mlflow_server=True)
    with pytest.raises(ConfigError, match="array"):
        SlurmOptions(**BASE, array=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_script_is_valid_bash(case: str) -> None:
    proc = subprocess.run(
        ["bash", "-n"], input=render_sbatch(CASES[case]), text=True, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr


def _sbatch_directives(script: str) -> dict[str, str]:
    """Independent reading of the #SBATCH header, the way sbatch reads it."""
    out: dict[str, str] = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line[len("#SBATCH ") :].partition("=")
            out[key] = value
        elif line and not line.startswith("#"):
            break  # sbatch stops at the first command
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_directives_follow_options(case: str) -> None:
    o = CASES[case]
    d = _sbatch_directives(render_sbatch(o))
    assert d["--nodes"] == str(o.nodes)
    assert d["--ntasks-per-node"] == "1" and "--exclusive" in d
    assert d.get("--cpus-per-task") == (str(o.cpus_per_node) if o.cpus_per_node else None)
    assert d.get("--gpus-per-task") == (str(o.gpus_per_node) if o.gpus_per_node else None)
    assert d["--signal"] == f"B:USR1@{o.signal_seconds}" and "--requeue" in d
    log = "slurm-%A_%a.out" if o.array > 1 else "slurm-%j.out"  # a job array: one per task
    assert d["--output"] == f"{o.results_dir}/{o.study_name}/slurm/{log}"
    for key in ("partition", "account", "qos", "time", "constraint"):
        assert d.get(f"--{key}") == getattr(o, key)
    for arg in o.sbatch_args:
        key, _, value = arg.partition("=")
        assert d[key] == value


def test_single_node_starts_no_workers_and_multi_node_does() -> None:
    one = render_sbatch(CASES["one_node_cpu"])
    four = render_sbatch(CASES["multi_node_gpu"])
    assert "--exclude=" not in one
    assert re.search(r"srun --nodes=3 --ntasks=3 .*--exclude=\"\$HEAD_NODE\"", four)
    for script in (one, four):  # explicit resources on every Ray node
        assert '--num-cpus="$CPUS_PER_NODE"' in script
        assert '--num-gpus="$GPUS_PER_NODE"' in script


def _container_prefix(script: str) -> list[str]:
    """The words of the job script's CONTAINER=(...) array, as bash reads them."""
    (line,) = [ln for ln in script.splitlines() if ln.startswith("CONTAINER=(")]
    return shlex.split(line[len("CONTAINER=(") : -1])


def test_container_prefixes_ray_and_driver() -> None:
    script = render_sbatch(CASES["container"])
    prefix = _container_prefix(script)
    assert prefix[:3] == ["apptainer", "exec", "--nv"] and prefix[-1] == "/shared/images/qsweep.sif"
    binds = prefix[prefix.index("--bind") + 1].split(",")
    # the results root, the study file's directory and the --encoder directory
    assert binds == [
        "/home/alice/qsweep/results",
        "/home/alice/qsweep/search_spaces",
        "/shared/models/all-mpnet-base-v2",
    ]
    assert '"${CONTAINER[@]}" qsweep run' in script
    assert '"${CONTAINER[@]}" \\\n    ray start --head' in script
    assert '"${CONTAINER[@]}" \\\n    ray start --address=' in script  # the workers
    assert '"${CONTAINER[@]}" mlflow server' in script
    assert '"${CONTAINER[@]}" python3 -c' in script  # the free ports, inside the image too
    no_gpu = SlurmOptions(**BASE, container="/x/q.sif", data="demo", encoder="minilm")
    prefix = _container_prefix(render_sbatch(no_gpu))
    assert "--nv" not in prefix  # no GPUs asked for: no NVIDIA driver bound in
    assert prefix[prefix.index("--bind") + 1].split(",") == [
        BASE["results_dir"],
        "/home/alice/qsweep/search_spaces",
    ]
    assert _container_prefix(render_sbatch(CASES["one_node_cpu"])) == []  # on the host


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"container": "images/qsweep.sif"}, "container must be an absolute path"),
        ({"container": "/x/q.sif", "data": "/data/a,b"}, "'/data/a,b' cannot be bound"),
        ({"container": "/x/q.sif", "encoder": "/m/c:d"}, "separates paths with ',' and ':'"),
    ],
)
def test_container_paths_that_apptainer_cannot_bind(changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        SlurmOptions(**{**BASE, **changes})


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"nodes": 0}, "nodes"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"cpus_per_node": 0}, "cpus_per_node"),
        ({"time": "4 hours"}, "time"),
        ({"partition": "two words"}, "partition"),
        ({"sbatch_args": ("mem=0",)}, "mem=0"),
        ({"activate": "source a\nrm -rf /"}, "single line"),
        ({"mlflow_uri": "http://x:5000", "start_mlflow_server": True}, "exclude"),
        ({"study_file": "relative.yaml"}, "absolute"),
        ({"results_dir": "/a b/results"}, "whitespace"),
        ({"study_name": "../escape"}, "study name"),
        ({"ray_auth": "password"}, "ray_auth"),
        ({"signal_seconds": 0}, "signal_seconds"),
    ],
)
def test_bad_options_are_config_errors(changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        SlurmOptions(**{**BASE, **changes})


def test_unknown_placeholder_in_template_is_reported() -> None:
    with pytest.raises(ConfigError, match="NOPE"):
        render_sbatch(CASES["one_node_cpu"], template="#!/bin/bash\n@@NOPE@@\n")


def test_blocks_file_parts_and_their_errors() -> None:
    from orchestrator.slurm import BLOCKS_PATH, read_blocks

    blocks = read_blocks(BLOCKS_PATH.read_text())
    assert blocks["NO_WORKERS"] == "# (single node: no Ray workers to start)"
    assert blocks["AWAIT_MLFLOW"].startswith("\ndeadline=") and not blocks["AWAIT_MLFLOW"].endswith(
        "\n"
    )
    text = BLOCKS_PATH.read_text()
    with pytest.raises(ConfigError, match="NO_SETUP"):
        render_sbatch(CASES["site_options"], blocks=text.replace("#@ NO_SETUP", "#@ RENAMED"))
    broken = text.replace("#@ NO_WORKERS\n", "#@ NO_WORKERS\n@@NOPE@@\n")
    with pytest.raises(ConfigError, match="block NO_WORKERS has unknown placeholders"):
        render_sbatch(CASES["site_options"], blocks=broken)


# --- the batch script's shell logic, with fake srun/scontrol/ray/qsweep ----------------

FAKE_SRUN = r"""#!/bin/bash
# skip srun options, run the command
while [ $# -gt 0 ]; do
    case "$1" in
        -w) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
exec "$@"
"""
FAKE_SCONTROL = r"""#!/bin/bash
echo "$*" >> "$FAKE_LOG/scontrol"
if [ "$1 $2" = "show hostnames" ]; then echo node1; fi
"""
FAKE_HOSTNAME = """#!/bin/bash
if [ "${1:-}" = --ip-address ]; then echo "::1 127.0.0.1"; else echo node1; fi
"""
FAKE_RAY = """#!{python}
import os, signal, socket, sys, time
args = sys.argv[1:]
with open(os.path.join(os.environ["FAKE_LOG"], "ray"), "a") as f:
    f.write(" ".join(args) + "\\n")
if "--head" in args:
    port = int(next(a for a in args if a.startswith("--port=")).split("=")[1])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(0.05)
"""
FAKE_QSWEEP = r"""#!/bin/bash
echo "$*" > "$FAKE_LOG/driver_args"
env > "$FAKE_LOG/driver_env"
case "$FAKE_DRIVER_MODE" in
    ok) exit 0 ;;
    fail) exit 1 ;;
esac
trap 'echo USR1 >> "$FAKE_LOG/driver_signals"; exit 75' USR1
trap 'echo TERM >> "$FAKE_LOG/driver_signals"; exit 75' TERM
touch "$FAKE_LOG/driver_ready"
while true; do sleep 0.05; done
"""

FAKE_APPTAINER = """#!{python}
# apptainer exec [--nv] [--bind PATHS] IMAGE CMD...: log argv, check the image, run CMD here
import json, os, sys
args = sys.argv[1:]
with open(os.path.join(os.environ["FAKE_LOG"], "apptainer"), "a") as f:
    f.write(json.dumps(args) + "\\n")
assert args.pop(0) == "exec", args
while args[0] in ("--nv", "--bind"):
    del args[: 1 if args[0] == "--nv" else 2]
if not os.access(args[0], os.R_OK):
    sys.exit(f"fake apptainer: cannot read image {{args[0]}}")
os.execvp(args[1], args[1:])
"""


def _fake_env(tmp_path: Path, job_id: int, mode: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "srun": FAKE_SRUN,
        "scontrol": FAKE_SCONTROL,
        "hostname": FAKE_HOSTNAME,
        "ray": FAKE_RAY.format(python=sys.executable),
        "qsweep": FAKE_QSWEEP,
        "apptainer": FAKE_APPTAINER.format(python=sys.executable),
    }
    for name, text in fakes.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    log = tmp_path / "log"
    log.mkdir()
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(log),
        "FAKE_DRIVER_MODE": mode,
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NODELIST": "node1",
        "SLURM_CPUS_ON_NODE": "3",
    }


def _start_script(
    tmp_path: Path, mode: str, extra_env: dict[str, str] | None = None, **changes
) -> tuple[subprocess.Popen, Path, int]:
    job_id = 900000 + os.getpid() % 1000
    env = {**_fake_env(tmp_path, job_id, mode), **(extra_env or {})}
    options = SlurmOptions(
        study_file=str(tmp_path / "study.yaml"),
        study_name="fake",
        results_dir=str(tmp_path / "results"),
        ray_start_timeout=20,
        **changes,
    )
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch(options))
    proc = subprocess.Popen(
        ["bash", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, Path(env["FAKE_LOG"]), job_id


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.communicate()[0] if proc.poll() is not None else "(still running)"
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            pytest.fail(f"{path.name} never appeared; script output:\n{out}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"script did not finish; output:\n{proc.communicate()[0]}")


def test_script_starts_head_with_free_ports_and_runs_driver(tmp_path: Path) -> None:
    proc, log, job_id = _start_script(tmp_path, "ok")
    out = _finish(proc)
    assert proc.returncode == 0, out
    # Ports are picked free at start-up (not from the job id) and logged.
    found = re.search(r"Ray GCS (\d+), Ray client (\d+|none), MLflow (\d+)", out)
    assert found, out
    port, client_port, mlflow_port = found.groups()
    assert len({port, client_port, mlflow_port}) == 3
    ray_args = (log / "ray").read_text().split()
    assert "--head" in ray_args and f"--port={port}" in ray_args
    if client_port != "none":  # ray[client] (grpc) installed: its port is chosen free too
        assert f"--ray-client-server-port={client_port}" in ray_args
    for name in ("node-manager", "object-manager", "min-worker", "max-worker",
                 "dashboard-agent-listen", "metrics-export"):  # fmt: skip
        assert f"--{name}-port=0" in ray_args  # the kernel picks a free one per node
    assert "--num-cpus=3" in ray_args and "--num-gpus=0" in ray_args  # from SLURM_CPUS_ON_NODE
    assert f"--temp-dir=/tmp/ray_{job_id}" in ray_args
    driver = shlex.split((log / "driver_args").read_text())
    assert driver[:2] == ["run", str(tmp_path / "study.yaml")]
    assert driver[driver.index("--address") + 1] == f"127.0.0.1:{port}"
    # `qsweep run --results` is the results root, as for `qsweep slurm submit`
    assert "--resume" in driver and driver[driver.index("--results") + 1] == str(
        tmp_path / "results"
    )
    # The driver waits for every node with its CPUs (SLURM_CPUS_ON_NODE=3, one node).
    assert driver[driver.index("--expect-nodes") + 1] == "node1"
    assert driver[driver.index("--expect-cpus") + 1] == "3"
    env = dict(
        line.split("=", 1) for line in (log / "driver_env").read_text().splitlines() if "=" in line
    )
    assert env["RAY_TMPDIR"] == f"/tmp/ray_{job_id}" and env["RAY_AUTH_MODE"] == "token"
    assert re.fullmatch(r"[0-9a-f]{64}", env["RAY_AUTH_TOKEN"])
    assert "requeue" not in (log / "scontrol").read_text()
    assert "study finished" in out


def test_usr1_is_forwarded_to_driver_and_job_requeued(tmp_path: Path) -> None:
    proc, log, job_id = _start_script(tmp_path, "wait")
    _wait_for(log / "driver_ready", proc)
    os.kill(proc.pid, signal.SIGUSR1)  # what --signal=B:USR1@120 does
    out = _finish(proc)
    assert (log / "driver_signals").read_text().split() == ["USR1"], out
    assert f"requeue {job_id}" in (log / "scontrol").read_text().splitlines(), out
    assert proc.returncode == 0, out
    assert "driver exited with status 75" in out


def test_term_is_forwarded_without_requeue(tmp_path: Path) -> None:
    proc, log, _ = _start_script(tmp_path, "wait")
    _wait_for(log / "driver_ready", proc)
    os.kill(proc.pid, signal.SIGTERM)  # scancel / preemption grace
    out = _finish(proc)
    assert (log / "driver_signals").read_text().split() == ["TERM"], out
    assert "requeue" not in (log / "scontrol").read_text()
    assert proc.returncode == 75, out


def test_driver_failure_is_the_job_status(tmp_path: Path) -> None:
    proc, log, _ = _start_script(tmp_path, "fail")
    out = _finish(proc)
    assert proc.returncode == 1, out
    assert "study finished" not in out


def test_broken_activate_stops_early_with_message(tmp_path: Path) -> None:
    proc, log, _ = _start_script(tmp_path, "ok", activate="source /nonexistent/venv/bin/activate")
    out = _finish(proc)
    assert proc.returncode == 3, out
    assert "the activate command failed: source /nonexistent/venv/bin/activate" in out
    assert not (log / "ray").exists() and not (log / "driver_args").exists()


def test_container_mode_runs_every_qsweep_command_in_the_image(tmp_path: Path) -> None:
    image = tmp_path / "qsweep.sif"
    image.write_bytes(b"SIF")
    proc, log, _ = _start_script(tmp_path, "ok", container=str(image), gpus_per_node=1)
    out = _finish(proc)
    assert proc.returncode == 0, out
    calls = [json.loads(line) for line in (log / "apptainer").read_text().splitlines()]
    binds = f"{tmp_path / 'results'},{tmp_path}"
    for call in calls:
        assert call[:5] == ["exec", "--nv", "--bind", binds, str(image)], call
    commands = [call[5:7] for call in calls]
    # free ports, the Ray head and the driver, in this order, all inside the image
    assert [c[0] for c in commands] == ["python3", "ray", "qsweep"], commands
    assert commands[1] == ["ray", "start"] and commands[2] == ["qsweep", "run"]
    assert (log / "driver_args").exists()  # the fake apptainer ran the driver


def test_container_mode_stops_early_without_a_readable_image(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sif"
    proc, log, _ = _start_script(tmp_path, "ok", container=str(missing))
    out = _finish(proc)
    assert proc.returncode == 3, out
    assert f"container image {missing} is not readable on this node" in out
    assert not (log / "apptainer").exists() and not (log / "ray").exists()


# --- SlurmClient with a fake runner -----------------------------------------------------


class FakeRunner:
    """Answers commands from a table {command name: CommandResult or list of them}."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, args):
        self.calls.append(list(args))
        answer = self.answers.get(args[0])
        if isinstance(answer, list):
            answer = answer.pop(0)
        if answer is None:
            return CommandResult(tuple(args), 0, "", "")
        if isinstance(answer, Exception):
            raise answer
        return answer


def _result(rc: int = 0, out: str = "", err: str = "") -> CommandResult:
    return CommandResult(("x",), rc, out, err)


SCONTROL_DONE = (
    "JobId=17 JobName=qsweep-quickstart UserId=root(0) GroupId=root(0) Priority=1 "
    "JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=1 "
    "BatchFlag=1 ExitCode=3:0 RunTime=00:00:02 TimeLimit=UNLIMITED NodeList=vm "
    "Command=/r/quick start/slurm/job.sbatch WorkDir=/work StdErr=/r/q/slurm/slurm-17.out "
    "StdIn=/dev/null StdOut=/r/q/slurm/slurm-17.out Power=\n"
)


def test_parse_scontrol_record_keeps_values_with_spaces() -> None:
    record = parse_scontrol_record(SCONTROL_DONE)
    assert record["JobState"] == "FAILED"
    assert record["Command"] == "/r/quick start/slurm/job.sbatch"
    assert record["UserId"] == "root(0)" and record["Power"] == ""
    assert record["StdOut"] == "/r/q/slurm/slurm-17.out"


def test_submit_parses_parsable_output() -> None:
    runner = FakeRunner({"sbatch": _result(out="4242;clusterA\n")})
    assert SlurmClient(runner).submit(Path("/x/job.sbatch")) == "4242"
    assert runner.calls == [["sbatch", "--parsable", "/x/job.sbatch"]]


def test_sbatch_rejection_shows_slurm_output_and_partitions() -> None:
    err = (
        "sbatch: error: invalid partition specified: gpu\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    )
    runner = FakeRunner({"sbatch": _result(1, err=err), "sinfo": _result(out="debug*\nlong\n")})
    with pytest.raises(ServiceError) as info:
        SlurmClient(runner).submit(Path("/x/job.sbatch"))
    message = str(info.value)
    assert "Invalid partition name specified" in message and "debug*, long" in message


def test_missing_sbatch_is_a_clear_service_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm commands here
    with pytest.raises(ServiceError, match="'sbatch' was not found on PATH"):
        SlurmClient(run_command).submit(tmp_path / "job.sbatch")


def test_job_uses_squeue_then_falls_back_to_scontrol() -> None:
    running = FakeRunner({"squeue": _result(out="17|RUNNING|0:05|vm|None\n")})
    info = SlurmClient(running).job("17")
    assert (info.state, info.elapsed, info.nodes, info.source) == (
        "RUNNING",
        "0:05",
        "vm",
        "squeue",
    )
    done = FakeRunner(
        {
            "squeue": _result(1, err="slurm_load_jobs error: Invalid job id specified"),
            "scontrol": _result(out=SCONTROL_DONE),
        }
    )
    info = SlurmClient(done).job("17")
    assert (info.state, info.exit_code, info.restarts, info.source) == (
        "FAILED",
        "3:0",
        1,
        "scontrol",
    )
    assert info.finished and info.stdout_path == "/r/q/slurm/slurm-17.out"


def test_unknown_job_and_bad_job_id() -> None:
    runner = FakeRunner(
        {
            "squeue": _result(out=""),
            "scontrol": _result(1, err="slurm_load_jobs error: Invalid job id specified"),
        }
    )
    with pytest.raises(ServiceError, match="Invalid job id specified"):
        SlurmClient(runner).job("99")
    with pytest.raises(ConfigError, match="not a Slurm job id"):
        SlurmClient(runner).job("12; rm -rf /")


def test_no_controller_is_not_blamed_on_min_job_age() -> None:
    down = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    runner = FakeRunner({"squeue": _result(1, err=down), "scontrol": _result(1, err=down)})
    with pytest.raises(ServiceError) as info:
        SlurmClient(runner).job("17")
    message = str(info.value)
    assert "MinJobAge" not in message and "is slurmctld running" in message
    assert "Unable to contact slurm controller" in message
    gone = FakeRunner(
        {"scontrol": _result(1, err="slurm_load_jobs error: Invalid job id specified")}
    )
    with pytest.raises(ServiceError, match="forgotten after MinJobAge"):
        SlurmClient(gone).show("17")


def test_wait_polls_until_terminal_and_times_out() -> None:
    states = [
        _result(out="17|PENDING|0:00||Priority\n"),
        _result(out="17|RUNNING|0:01|vm|None\n"),
        _result(out=""),
    ]
    runner = FakeRunner({"squeue": states, "scontrol": _result(out=SCONTROL_DONE)})
    sleeps: list[float] = []
    info = SlurmClient(runner).wait("17", timeout=100, poll=0.5, sleep=sleeps.append)
    assert info.state == "FAILED" and sleeps == [0.5, 0.5]
    forever = FakeRunner({"squeue": _result(out="17|PENDING|0:00||Resources\n")})
    now = iter(range(0, 1000, 10))
    with pytest.raises(ServiceError, match="still PENDING.*Resources"):
        SlurmClient(forever).wait(
            "17", timeout=30, sleep=lambda s: None, clock=lambda: float(next(now))
        )


def test_cancel_reports_scancel_errors() -> None:
    runner = FakeRunner(
        {
            "scancel": _result(
                1, err="scancel: error: Kill job error on job id 5: Invalid job id specified"
            )
        }
    )
    with pytest.raises(ServiceError, match="Kill job error"):
        SlurmClient(runner).cancel("5")


# --- the CLI with a fake client ---------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    from orchestrator.cli import build_parser

    return build_parser().parse_args(argv)


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\ndescription: test\nfactors: {}\n")
    return path


def test_dry_run_prints_script_and_writes_nothing(study: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "res"
    args = _parse(
        ["slurm", "submit", str(study), "--nodes", "2", "--results", str(results), "--dry-run"]
    )
    runner = FakeRunner({})
    assert slurm_cmd.run(args, client=SlurmClient(runner)) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash") and "#SBATCH --nodes=2" in out
    assert f"{results}/tiny/slurm/slurm-%j.out" in out
    assert "#SBATCH --exclusive" in out
    assert "#SBATCH --no-kill" in out  # a lost node does not end a multi-node job
    shared = _parse(["slurm", "submit", str(study), "--shared", "--dry-run"])
    slurm_cmd.run(shared, client=SlurmClient(runner))
    assert "--exclusive" not in capsys.readouterr().out
    assert not results.exists() and runner.calls == []


def test_submit_warns_about_idle_gpus_and_a_missing_time_limit(tmp_path: Path, capsys) -> None:
    cpu_study = tmp_path / "cpu.yaml"
    cpu_study.write_text("name: cpu\nfactors: {}\nresources: {cpu: 1, gpu: 0}\n")
    args = _parse(["slurm", "submit", str(cpu_study), "--gpus-per-node", "4", "--dry-run"])
    assert slurm_cmd.run(args, client=SlurmClient(FakeRunner({}))) == 0
    err = capsys.readouterr().err
    assert "resources.gpu = 0" in err and "4 per node" in err and "GPUs stay idle" in err
    assert "no --time" in err and "--time 24:00:00" in err
    timed = _parse(["slurm", "submit", str(cpu_study), "--time", "01:00:00", "--dry-run"])
    assert slurm_cmd.run(timed, client=SlurmClient(FakeRunner({}))) == 0
    assert "warning" not in capsys.readouterr().err  # CPUs only, with a limit: nothing to say

    gpu_study = tmp_path / "gpu.yaml"
    gpu_study.write_text("name: gpu\nfactors: {}\nresources: {cpu: 1, gpu: 0.5}\n")
    no_gpus = _parse(["slurm", "submit", str(gpu_study), "--time", "1:00:00", "--dry-run"])
    with pytest.raises(ConfigError, match=r"resources.gpu = 0.5 .*--gpus-per-node 0"):
        slurm_cmd.run(no_gpus, client=SlurmClient(FakeRunner({})))
    gpus = ["--gpus-per-node", "2", "--time", "1:00:00", "--dry-run"]
    fine = _parse(["slurm", "submit", str(gpu_study), *gpus])
    assert slurm_cmd.run(fine, client=SlurmClient(FakeRunner({}))) == 0
    assert "warning" not in capsys.readouterr().err


def test_submit_refuses_a_study_dir_as_results_root(study: Path, tmp_path: Path) -> None:
    old = tmp_path / "tiny"  # the old meaning of `qsweep run --results`: the study itself
    old.mkdir()
    (old / "trials.parquet").write_bytes(b"")
    args = _parse(["slurm", "submit", str(study), "--results", str(old), "--dry-run"])
    with pytest.raises(ConfigError, match=f"pass --results {tmp_path} to use it"):
        slurm_cmd.run(args, client=SlurmClient(FakeRunner({})))


def test_submit_saves_script_and_reports_paths(study: Path, tmp_path: Path, capsys) -> None:
    results = tmp_path / "res"
    runner = FakeRunner({"sbatch": _result(out="31\n")})
    args = _parse(
        [
            "slurm",
            "submit",
            str(study),
            "--results",
            str(results),
            "--partition",
            "debug",
            "--sbatch-arg=--mem=0",
        ]
    )
    assert slurm_cmd.run(args, client=SlurmClient(runner)) == 0
    script = results / "tiny" / "slurm" / "job.sbatch"
    assert runner.calls == [["sbatch", "--parsable", str(script)]]
    assert "#SBATCH --partition=debug" in script.read_text()
    out = capsys.readouterr().out
    assert "submitted job 31" in out and str(results / "tiny" / "slurm" / "slurm-31.out") in out
    assert (results / "tiny" / "slurm" / "jobs.tsv").read_text().startswith("31\t")


def test_submit_wait_reports_early_death_with_job_output(study: Path, tmp_path: Path) -> None:
    results = tmp_path / "res"
    log = results / "tiny" / "slurm" / "slurm-17.out"
    runner = FakeRunner(
        {
            "sbatch": _result(out="17\n"),
            "squeue": _result(out=""),
            "scontrol": _result(out=SCONTROL_DONE.replace("/r/q/slurm/slurm-17.out", str(log))),
        }
    )
    args = _parse(
        [
            "slurm",
            "submit",
            str(study),
            "--results",
            str(results),
            "--activate",
            "source /nope/bin/activate",
            "--wait",
        ]
    )
    log.parent.mkdir(parents=True)
    log.write_text("qsweep-slurm: error: the activate command failed: source /nope/bin/activate\n")
    with pytest.raises(ServiceError) as info:
        slurm_cmd.run(args, client=SlurmClient(runner))
    assert "FAILED" in str(info.value) and "the activate command failed" in str(info.value)


def test_status_of_failed_job_shows_output_tail(tmp_path: Path, capsys) -> None:
    log = tmp_path / "slurm-17.out"
    log.write_text("line 1\nqsweep-slurm: error: the Ray head on vm exited during start-up\n")
    runner = FakeRunner(
        {
            "squeue": _result(out=""),
            "scontrol": _result(out=SCONTROL_DONE.replace("/r/q/slurm/slurm-17.out", str(log))),
        }
    )
    assert slurm_cmd.run(_parse(["slurm", "status", "17"]), client=SlurmClient(runner)) == 1
    out = capsys.readouterr().out
    assert "job 17: FAILED" in out and "exit:    3:0" in out and "Ray head on vm exited" in out


def test_status_of_running_job_shows_its_trials(tmp_path: Path, capsys) -> None:
    log = tmp_path / "slurm-17.out"
    log.write_text(
        "[quickstart] 1/8 done, 4 running | 10s elapsed\n"
        "qsweep run: lost trial p001_s0 (its Ray worker or node died); Ray retries it\n"
        "[quickstart] 3/8 done (1 failed), 4 running | best val_accuracy 0.8125 (p002_s0)\n"
    )
    running = SCONTROL_DONE.replace("JobState=FAILED", "JobState=RUNNING")
    runner = FakeRunner(
        {
            "squeue": _result(out="17|RUNNING|1:02|node[1-2]|None\n"),
            "scontrol": _result(out=running.replace("/r/q/slurm/slurm-17.out", str(log))),
        }
    )
    assert slurm_cmd.run(_parse(["slurm", "status", "17"]), client=SlurmClient(runner)) == 0
    out = capsys.readouterr().out
    assert "job 17: RUNNING" in out and "nodes:   node[1-2]" in out
    assert "trials:  [quickstart] 3/8 done (1 failed), 4 running | best val_accuracy" in out


def test_logs_falls_back_to_the_recorded_output(tmp_path: Path, capsys) -> None:
    log = tmp_path / "tiny" / "slurm" / "slurm-8.out"
    log.parent.mkdir(parents=True)
    log.write_text("hello from job 8\n")
    runner = FakeRunner({"scontrol": _result(1, err="Invalid job id specified")})
    args = _parse(["slurm", "logs", "8", "--results", str(tmp_path)])
    assert slurm_cmd.run(args, client=SlurmClient(runner)) == 0
    assert capsys.readouterr().out == "hello from job 8\n"


def test_study_without_name_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: no name\n")
    with pytest.raises(ConfigError, match="name = None is not allowed; give a study name"):
        slurm_cmd.run(_parse(["slurm", "submit", str(bad), "--dry-run"]))


def test_template_override_by_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from orchestrator.slurm import template_path

    custom = tmp_path / "t.tmpl"
    custom.write_text("#!/bin/bash\n# @@STUDY_NAME@@\n")
    monkeypatch.setenv("QSWEEP_SLURM_TEMPLATE", str(custom))
    assert template_path() == custom
    assert render_sbatch(CASES["one_node_cpu"]) == "#!/bin/bash\n# quickstart\n"
    monkeypatch.setenv("QSWEEP_SLURM_TEMPLATE", str(tmp_path / "missing.tmpl"))
    with pytest.raises(ConfigError, match="QSWEEP_SLURM_TEMPLATE"):
        render_sbatch(CASES["one_node_cpu"])


def test_status_without_job_id_lists_the_queue(capsys) -> None:
    table = "     JOBID                     NAME      STATE       TIME  NODES NODELIST(REASON)\n"
    runner = FakeRunner({"squeue": _result(out=table)})
    assert slurm_cmd.run(_parse(["slurm", "status"]), client=SlurmClient(runner)) == 0
    assert capsys.readouterr().out == table and runner.calls[0][:2] == ["squeue", "--me"]


def test_logs_follow_prints_until_the_job_ends(tmp_path: Path, capsys) -> None:
    log = tmp_path / "slurm-9.out"
    log.write_text("first\n")

    class GrowingClient:
        """A job that runs for one poll, appending a line, then completes."""

        polls = 0

        def show(self, job_id: str) -> JobInfo:
            return JobInfo(job_id, "RUNNING", stdout_path=str(log), source="scontrol")

        def job(self, job_id: str) -> JobInfo:
            self.polls += 1
            if self.polls == 2:
                with log.open("a") as handle:
                    handle.write("second\n")
            return JobInfo(job_id, "RUNNING" if self.polls < 2 else "COMPLETED")

    args = _parse(["slurm", "logs", "9", "--follow"])
    assert slurm_cmd.run(args, client=GrowingClient()) == 0
    assert capsys.readouterr().out == "first\nsecond\n"

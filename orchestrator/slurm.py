"""Slurm: render the Ray-cluster batch script and talk to sbatch/squeue/scontrol/scancel.

The only qsweep module that knows Slurm. ``render_sbatch(options) -> str`` is a pure
function of a frozen :class:`SlurmOptions` plus the bash in ``slurm/``: the template
``ray_cluster.sbatch.tmpl`` and its optional parts in ``ray_cluster.blocks.sh`` (Python
only picks blocks and fills in shell-quoted values); :class:`SlurmClient`
runs the Slurm commands through a replaceable ``runner`` callable, so tests can swap in
a fake and integration tests use the real commands::

    script = render_sbatch(SlurmOptions(study_file="/abs/quickstart.yaml",
                                        study_name="quickstart", results_dir="/abs/results"))
    job_id = SlurmClient().submit(Path("job.sbatch"))
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import ConfigError, ServiceError
from orchestrator.spec import trials_per_gpu

__all__ = [
    "TEMPLATE_PATH",
    "BLOCKS_PATH",
    "blocks_path",
    "container_binds",
    "read_blocks",
    "TERMINAL_STATES",
    "CommandResult",
    "JobInfo",
    "Runner",
    "SlurmClient",
    "SlurmOptions",
    "parse_scontrol_record",
    "gpu_sharing",
    "render_sbatch",
    "run_command",
    "study_dir",
    "template_path",
]

# The repository's slurm/ directory; QSWEEP_SLURM_TEMPLATE overrides it (e.g. in images
# where qsweep is pip-installed and slurm/ sits elsewhere).
TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "slurm" / "ray_cluster.sbatch.tmpl"
# The job script's optional parts (modules, checks, Ray auth, workers, MLflow server).
BLOCKS_PATH = TEMPLATE_PATH.with_name("ray_cluster.blocks.sh")


def template_path() -> Path:
    """The batch-script template: $QSWEEP_SLURM_TEMPLATE or the repository's slurm/ file."""
    path = Path(os.environ.get("QSWEEP_SLURM_TEMPLATE") or TEMPLATE_PATH)
    if not path.is_file():
        raise ConfigError(
            f"Slurm template {path} does not exist; set QSWEEP_SLURM_TEMPLATE to "
            "slurm/ray_cluster.sbatch.tmpl of a qsweep checkout"
        )
    return path


# Job states after which a job no longer runs (REQUEUED/PENDING jobs come back).
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)

RAY_AUTH_MODES = ("token", "disabled")
# Slurm time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or UNLIMITED.
_TIME_RE = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+(:\d{1,2}){0,2}|UNLIMITED)$")


@dataclass(frozen=True)
class SlurmOptions:
    """Everything the batch script depends on. Paths must be absolute."""

    study_file: str  # the study YAML, as the job will read it
    study_name: str  # `name` from the YAML; results go to <results_dir>/<study_name>/
    results_dir: str  # results root passed to `qsweep run --results`
    nodes: int = 1
    cpus_per_node: int | None = None  # None: all CPUs Slurm gives the node
    gpus_per_node: int = 0
    # the study's resources per trial (Ray): gpu 1/k -> k trials share each GPU
    gpu_per_trial: float = 0.0
    cpu_per_trial: float = 1.0
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # Slurm time limit, e.g. "04:00:00" or "1-00:00:00"
    constraint: str | None = None
    job_name: str | None = None  # default "qsweep-<study>"
    sbatch_args: tuple[str, ...] = ()  # extra "#SBATCH" options, e.g. "--mem=0"
    modules: tuple[str, ...] = ()  # `module load` each, in order
    activate: str | None = None  # shell command run before anything else
    container: str | None = None  # Apptainer image (.sif): every qsweep/ray command in it
    data: str | None = None  # `qsweep run --data`
    encoder: str | None = None  # `qsweep run --encoder`
    mlflow_uri: str | None = None  # `qsweep run --mlflow-uri`
    start_mlflow_server: bool = False  # run `mlflow server` (sqlite in the study dir) on the head
    max_concurrent: int | None = None  # `qsweep run --max-concurrent`
    ray_auth: str = "token"  # "token": a fresh random Ray token per job; or "disabled"
    signal_seconds: int = 120  # USR1 this long before the time limit, then requeue
    ray_start_timeout: int = 180  # seconds to wait for the Ray head to answer
    exclusive: bool = True  # whole nodes (Ray docs' recipe)
    array: int = 1  # > 1: a job array of this many tasks, each one shard of the study

    def __post_init__(self) -> None:
        for name in ("study_file", "results_dir"):
            if not os.path.isabs(getattr(self, name)):
                raise ConfigError(f"{name} must be an absolute path, got {getattr(self, name)!r}")
        if re.search(r"\s", self.results_dir):
            raise ConfigError(
                f"results_dir {self.results_dir!r} contains whitespace, which '#SBATCH "
                "--output' cannot hold; choose a results directory without spaces"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.study_name):
            raise ConfigError(
                f"study name {self.study_name!r} cannot name a directory or job; "
                "use letters, digits, '_', '.' and '-'"
            )
        _positive("nodes", self.nodes)
        if self.cpus_per_node is not None:
            _positive("cpus_per_node", self.cpus_per_node)
        if self.gpus_per_node < 0:
            raise ConfigError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")
        _check_trial_resources(self)
        if self.max_concurrent is not None:
            _positive("max_concurrent", self.max_concurrent)
        if self.time is not None and not _TIME_RE.match(self.time):
            raise ConfigError(
                f"time {self.time!r} is not a Slurm time limit; use minutes, HH:MM:SS or "
                "D-HH:MM:SS (e.g. 04:00:00 or 1-00:00:00)"
            )
        if not 0 < self.signal_seconds <= 65535:
            raise ConfigError(
                f"signal_seconds must be in 1..65535 (Slurm's limit), got {self.signal_seconds}"
            )
        _positive("ray_start_timeout", self.ray_start_timeout)
        _positive("array", self.array)
        if self.array > 1 and self.start_mlflow_server:
            raise ConfigError(
                "--array and --start-mlflow-server exclude each other: a server started inside "
                "one array task stops with that task while the other shards still log to it; "
                "name a tracking server the shards share with --mlflow-uri, or leave both out "
                "to log into the study's mlflow.db (SQLite, one node or a local file system)"
            )
        if self.ray_auth not in RAY_AUTH_MODES:
            raise ConfigError(f"ray_auth {self.ray_auth!r} is not one of {RAY_AUTH_MODES}")
        if self.start_mlflow_server and self.mlflow_uri:
            raise ConfigError(
                f"mlflow_uri {self.mlflow_uri!r} and start_mlflow_server exclude each other: "
                "the started server decides the URI"
            )
        for name in ("partition", "account", "qos", "constraint", "job_name"):
            value = getattr(self, name)
            if value is not None and (not value or re.search(r"\s", value)):
                raise ConfigError(
                    f"{name} {value!r} must be a non-empty word without spaces "
                    "(it becomes an '#SBATCH' line)"
                )
        for arg in self.sbatch_args:
            if not arg.startswith("-"):
                raise ConfigError(
                    f"sbatch argument {arg!r} must be an option such as '--mem=0' "
                    "(it becomes an '#SBATCH' line)"
                )
        if self.container:
            if not os.path.isabs(self.container):
                raise ConfigError(f"container must be an absolute path, got {self.container!r}")
            for path in container_binds(self):
                if "," in path or ":" in path:
                    raise ConfigError(
                        f"path {path!r} cannot be bound into the container: `apptainer "
                        "--bind` separates paths with ',' and ':'; rename or move it"
                    )
        for name, value in vars(self).items():
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, str) and ("\n" in v or "\r" in v) for v in values):
                raise ConfigError(f"{name} must be a single line, got {value!r}")


def _check_trial_resources(o: SlurmOptions) -> None:
    """A trial must fit on one node, or Ray never starts it and the job idles to its end."""
    if o.cpu_per_trial <= 0 or o.gpu_per_trial < 0:
        raise ConfigError(
            f"resources per trial cpu={o.cpu_per_trial:g} gpu={o.gpu_per_trial:g}: cpu must "
            "be > 0 and gpu >= 0"
        )
    if o.gpu_per_trial > o.gpus_per_node:
        fix = (
            f"pass --gpus-per-node {math.ceil(o.gpu_per_trial)} or more"
            if o.gpus_per_node
            else "pass --gpus-per-node N, or set resources.gpu: 0 to train on the CPUs"
        )
        raise ConfigError(
            f"the study asks for {o.gpu_per_trial:g} GPU per trial (resources.gpu) but "
            f"--gpus-per-node is {o.gpus_per_node}: Ray could never start a trial; {fix}."
        )
    if o.cpus_per_node is not None and o.cpu_per_trial > o.cpus_per_node:
        raise ConfigError(
            f"the study asks for {o.cpu_per_trial:g} CPUs per trial (resources.cpu) but "
            f"--cpus-per-node is {o.cpus_per_node}: Ray could never start a trial."
        )


def gpu_sharing(o: SlurmOptions, max_concurrent: int | None = None) -> str:
    """One line: how the job's GPUs are shared among trials ("" when it asks for none).

    ``max_concurrent``: the study's (``o.max_concurrent``, the submit option, wins)."""
    if not o.gpus_per_node:
        return ""
    k = trials_per_gpu(o.gpu_per_trial)
    if k == 0:
        return (
            f"{o.gpus_per_node} GPU(s) per node, but the study asks for no GPU per trial "
            "(resources.gpu: 0): its trials train on the CPUs"
        )
    if o.gpu_per_trial < 1:
        per_node, how = o.gpus_per_node * k, f"{k} trials share each GPU (resources.gpu 1/{k})"
    else:
        per_node = int(o.gpus_per_node // o.gpu_per_trial)
        how = f"each trial takes {o.gpu_per_trial:g} GPU(s)"
    if o.cpus_per_node is not None:  # the trials' CPUs may be the tighter limit
        per_node = min(per_node, int(o.cpus_per_node // o.cpu_per_trial))
    total = per_node * o.nodes
    text = f"GPU sharing: {how}; up to {per_node} trials per node, {total} at once"
    if o.array > 1:  # each array task is a job of its own, with its own nodes and Ray
        text += f" in each of the {o.array} array tasks"
    limit = o.max_concurrent or max_concurrent
    if limit is not None and limit < total:
        text += (
            f"; max_concurrent {limit} runs {limit} at once (--max-concurrent {total} fills them)"
        )
    return text


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value}")


def study_dir(options: SlurmOptions) -> Path:
    """``<results_dir>/<study_name>``: where the study's table, MLflow store and logs go."""
    return Path(options.results_dir) / options.study_name


def _q(value: str) -> str:
    return shlex.quote(value)


def _sbatch_lines(o: SlurmOptions) -> list[str]:
    slurm_dir = study_dir(o) / "slurm"
    lines = [
        f"--job-name={o.job_name or 'qsweep-' + o.study_name}",
        f"--nodes={o.nodes}",
        "--ntasks-per-node=1",
    ]
    if o.nodes > 1:
        # A lost node does not end the job: Ray retries its trials on the other nodes.
        lines.append("--no-kill")
    if o.exclusive:
        lines.append("--exclusive")
    if o.cpus_per_node is not None:
        lines.append(f"--cpus-per-task={o.cpus_per_node}")
    if o.gpus_per_node:
        lines.append(f"--gpus-per-task={o.gpus_per_node}")
    if o.array > 1:
        lines.append(f"--array=0-{o.array - 1}")
    lines += [
        f"--output={slurm_dir}/slurm-{'%A_%a' if o.array > 1 else '%j'}.out",
        "--open-mode=append",
        f"--signal=B:USR1@{o.signal_seconds}",
        "--requeue",
    ]
    for flag, value in (
        ("partition", o.partition),
        ("account", o.account),
        ("qos", o.qos),
        ("time", o.time),
        ("constraint", o.constraint),
    ):
        if value:
            lines.append(f"--{flag}={value}")
    lines += list(o.sbatch_args)
    return [f"#SBATCH {line}" for line in lines]


def _setup(o: SlurmOptions, blocks: dict[str, str]) -> str:
    parts = [
        _block(blocks, "MODULE_LOAD", MODULE=_q(module),
               MODULE_FAILED=_q(f"module load {module} failed"))
        for module in o.modules
    ]  # fmt: skip
    if o.activate:
        parts.append(
            _block(blocks, "ACTIVATE", ACTIVATE=o.activate,
                   ACTIVATE_FAILED=_q(f"the activate command failed: {o.activate}"))
        )  # fmt: skip
    return "\n".join(parts) if parts else _block(blocks, "NO_SETUP")


def _check_software(o: SlurmOptions, blocks: dict[str, str]) -> str:
    if o.container:
        return _block(
            blocks, "CHECK_CONTAINER", IMAGE=_q(o.container),
            IMAGE_UNREADABLE=_q(f"container image {o.container} is not readable on this node"),
        )  # fmt: skip
    return _block(blocks, "CHECK_HOST")


def container_binds(o: SlurmOptions) -> list[str]:
    """Host paths bound into the container: Apptainer binds $HOME, the working directory
    and /tmp itself; add the results root, the study file's directory and ``--data`` /
    ``--encoder`` where they are absolute paths (not ``demo``, ``hf:NAME`` or ``minilm``)."""
    paths = [o.results_dir, os.path.dirname(o.study_file)]
    paths += [p for p in (o.data, o.encoder) if p and os.path.isabs(p)]
    return list(dict.fromkeys(paths))


def _container(o: SlurmOptions) -> str:
    if not o.container:
        return ""
    args = ["apptainer", "exec"]
    if o.gpus_per_node:
        args.append("--nv")  # the host's NVIDIA driver; the image brings CUDA itself
    args += ["--bind", ",".join(container_binds(o)), o.container]
    return " ".join(_q(a) for a in args)


def _step_gpus(o: SlurmOptions) -> str:
    return f" --gpus-per-task={o.gpus_per_node}" if o.gpus_per_node else ""


def _check_gpus(o: SlurmOptions, blocks: dict[str, str]) -> str:
    if not o.gpus_per_node:
        return ""
    return _block(blocks, "CHECK_GPUS", STEP_GPUS=_step_gpus(o), GPU_SHARING=_q(gpu_sharing(o)))


def _start_workers(o: SlurmOptions, blocks: dict[str, str]) -> str:
    if o.nodes == 1:
        return _block(blocks, "NO_WORKERS")
    return _block(blocks, "START_WORKERS", N=str(o.nodes - 1), STEP_GPUS=_step_gpus(o))


def _driver_args(o: SlurmOptions) -> str:
    # `qsweep run --results` names the results root, as `qsweep slurm submit --results`.
    args: list[str] = ["--results", _q(o.results_dir)]
    if o.data:
        args += ["--data", _q(o.data)]
    if o.encoder:
        args += ["--encoder", _q(o.encoder)]
    if o.mlflow_uri:
        args += ["--mlflow-uri", _q(o.mlflow_uri)]
    elif o.start_mlflow_server:
        args += ["--mlflow-uri", '"$MLFLOW_URI"']
    if o.max_concurrent is not None:
        args += ["--max-concurrent", str(o.max_concurrent)]
    if o.array > 1:  # this task's shard of the study
        args += ["--shard", f'"$SLURM_ARRAY_TASK_ID/{o.array}"']
    return "\n".join(f"    {args[i]} {args[i + 1]}" for i in range(0, len(args), 2))


def blocks_path(template: Path | None = None) -> Path:
    """``ray_cluster.blocks.sh`` beside the template in use, else the repository's."""
    beside = (template or template_path()).with_name(BLOCKS_PATH.name)
    return beside if beside.is_file() else BLOCKS_PATH


def read_blocks(text: str) -> dict[str, str]:
    """Named blocks of a blocks file: ``#@ NAME`` up to the next header, trailing blank
    lines dropped."""
    blocks: dict[str, str] = {}
    name = None
    for line in text.split("\n"):
        if line.startswith("#@ "):
            name = line[3:].strip()
            blocks[name] = ""
        elif name is not None:
            blocks[name] += line + "\n"
    return {k: v.rstrip("\n") for k, v in blocks.items()}


def _block(blocks: dict[str, str], name: str, **values: str) -> str:
    if name not in blocks:
        raise ConfigError(f"Slurm blocks file has no block {name!r}; known: {sorted(blocks)}")
    return _fill(blocks[name], values, f"block {name}")


def _fill(text: str, values: dict[str, str], what: str) -> str:
    missing = sorted(set(re.findall(r"@@([A-Z_]+)@@", text)) - set(values))
    if missing:
        raise ConfigError(f"{what} has unknown placeholders {missing}; known: {sorted(values)}")
    return re.sub(r"@@([A-Z_]+)@@", lambda m: values[m.group(1)], text)


def render_sbatch(
    options: SlurmOptions, *, template: str | None = None, blocks: str | None = None
) -> str:
    """The batch script for ``options``: a pure function of the options, the template text
    and the blocks text (both read from ``slurm/`` when not given)."""
    text = template_path().read_text() if template is None else template
    if blocks is None:
        blocks = blocks_path().read_text()
    parts = read_blocks(blocks)
    o = options
    values = {
        "STUDY_NAME": o.study_name,
        "SBATCH_LINES": "\n".join(_sbatch_lines(o)),
        "STUDY_FILE": _q(o.study_file),
        "STUDY_DIR": _q(str(study_dir(o))),
        "NODES": str(o.nodes),
        "CPUS_PER_NODE": str(o.cpus_per_node) if o.cpus_per_node is not None else "auto",
        "GPUS_PER_NODE": str(o.gpus_per_node),
        "RAY_START_TIMEOUT": str(o.ray_start_timeout),
        "CONTAINER": _container(o),
        "SETUP": _setup(o, parts),
        "CHECK_SOFTWARE": _check_software(o, parts),
        "RAY_AUTH": _block(
            parts, "RAY_AUTH_TOKEN" if o.ray_auth == "token" else "RAY_AUTH_DISABLED"
        ),
        "STEP_GPUS": _step_gpus(o),
        "CHECK_GPUS": _check_gpus(o, parts),
        "START_WORKERS": _start_workers(o, parts),
        "LAUNCH_MLFLOW": _block(parts, "LAUNCH_MLFLOW") if o.start_mlflow_server else "",
        "AWAIT_MLFLOW": _block(parts, "AWAIT_MLFLOW") if o.start_mlflow_server else "",
        "DRIVER_ARGS": _driver_args(o),
    }
    return _fill(text, values, "template")


# --- running Slurm commands ---------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    """What one Slurm command printed and returned."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stderr and stdout together, trimmed: what to show the user."""
        return "\n".join(p for p in (self.stderr.strip(), self.stdout.strip()) if p)


Runner = Callable[[Sequence[str]], CommandResult]


def run_command(args: Sequence[str], *, timeout: float = 60.0) -> CommandResult:
    """Run a Slurm client command; a missing command becomes a :class:`ServiceError`."""
    try:
        proc = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as err:
        raise ServiceError(
            f"'{args[0]}' was not found on PATH ({os.environ.get('PATH', '')}); run "
            "`qsweep slurm` on a Slurm login node, or load the Slurm client commands "
            "(e.g. `module load slurm`)"
        ) from err
    except subprocess.TimeoutExpired as err:
        raise ServiceError(
            f"`{shlex.join(args)}` did not answer within {timeout:.0f} s; is slurmctld up?"
        ) from err
    return CommandResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class JobInfo:
    """A job as squeue or scontrol reports it (fields Slurm leaves empty are "")."""

    job_id: str
    state: str  # e.g. PENDING, RUNNING, COMPLETED, FAILED, CANCELLED
    elapsed: str = ""
    nodes: str = ""  # node list
    reason: str = ""
    exit_code: str = ""  # "status:signal", scontrol only
    stdout_path: str = ""  # scontrol only
    restarts: int = 0  # times requeued, scontrol only
    source: str = "squeue"
    fields: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol_record(text: str) -> dict[str, str]:
    """Parse one ``scontrol show job -o`` line (``Key=Value`` pairs, values may hold spaces)."""
    text = text.strip()
    matches = list(_KEY_RE.finditer(text))
    record: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        record[match.group(1)] = text[match.end() : end].strip()
    return record


class SlurmClient:
    """sbatch / squeue / scontrol / scancel through a replaceable command runner."""

    def __init__(self, runner: Runner = run_command) -> None:
        self._run = runner

    def submit(self, script: Path) -> str:
        """``sbatch --parsable SCRIPT``; returns the job id."""
        result = self._run(["sbatch", "--parsable", str(script)])
        if result.returncode != 0:
            message = f"sbatch rejected {script} (exit {result.returncode}):\n{result.output}"
            if "partition" in result.output.lower():
                message += f"\n{self._partitions_hint()}"
            raise ServiceError(message)
        job_id = result.stdout.strip().split(";")[0].strip()
        if not job_id.isdigit():
            raise ServiceError(f"sbatch printed no job id for {script}:\n{result.output}")
        return job_id

    def _partitions_hint(self) -> str:
        try:
            result = self._run(["sinfo", "-h", "-o", "%P"])
        except ServiceError:
            return "List the partitions with `sinfo -s`."
        names = [p.strip() for p in result.stdout.split() if p.strip()]
        if result.returncode != 0 or not names:
            return "List the partitions with `sinfo -s`."
        return f"Partitions on this cluster ('*' marks the default): {', '.join(names)}"

    def job(self, job_id: str) -> JobInfo:
        """The job's state from squeue; finished jobs fall back to ``scontrol show job``."""
        _check_job_id(job_id)
        result = self._run(["squeue", "-h", "-j", job_id, "-o", "%i|%T|%M|%N|%r"])
        if result.returncode == 0:
            for line in result.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 5 and parts[0] == job_id:
                    return JobInfo(job_id, parts[1], parts[2], parts[3], parts[4])
        return self.show(job_id)

    def queue(self) -> str:
        """Your jobs in the queue, as a table (``squeue --me``)."""
        result = self._run(["squeue", "--me", "-o", "%.10i %.24j %.10T %.10M %.6D %R"])
        if result.returncode != 0:
            raise ServiceError(f"squeue failed (exit {result.returncode}):\n{result.output}")
        return result.stdout

    def show(self, job_id: str) -> JobInfo:
        """``scontrol show job -o JOBID`` (works for finished jobs within MinJobAge)."""
        _check_job_id(job_id)
        result = self._run(["scontrol", "show", "job", "-o", job_id])
        if result.returncode != 0 or "JobState=" not in result.stdout:
            if "invalid job id" in result.output.lower() or (
                result.returncode == 0 and not result.output
            ):
                raise ServiceError(
                    f"Slurm does not know job {job_id} (a finished job is forgotten after "
                    f"MinJobAge, 300 s by default):\n{result.output}"
                )
            raise ServiceError(
                f"scontrol could not ask the Slurm controller about job {job_id} (exit "
                f"{result.returncode}); is slurmctld running and reachable from here "
                f"(`scontrol ping`)?\n{result.output}"
            )
        record = parse_scontrol_record(result.stdout.splitlines()[0])
        return JobInfo(
            job_id=record.get("JobId", job_id),
            state=record.get("JobState", ""),
            elapsed=record.get("RunTime", ""),
            nodes=_none_to_empty(record.get("NodeList", "")),
            reason=_none_to_empty(record.get("Reason", "")),
            exit_code=record.get("ExitCode", ""),
            stdout_path=record.get("StdOut", ""),
            restarts=int(record.get("Restarts", "0") or 0),
            source="scontrol",
            fields=record,
        )

    def tasks(self, job_id: str) -> list[JobInfo]:
        """The tasks of a job array (one :class:`JobInfo` each, from ``scontrol show job``);
        [] for a job that is not an array."""
        _check_job_id(job_id)
        result = self._run(["scontrol", "show", "job", "-o", job_id])
        if result.returncode != 0:
            return []
        out = []
        for line in result.stdout.splitlines():
            record = parse_scontrol_record(line)
            if "ArrayTaskId" not in record or "JobState" not in record:
                continue
            out.append(
                JobInfo(
                    job_id=f"{record.get('ArrayJobId', job_id)}_{record['ArrayTaskId']}",
                    state=record["JobState"],
                    elapsed=record.get("RunTime", ""),
                    nodes=_none_to_empty(record.get("NodeList", "")),
                    reason=_none_to_empty(record.get("Reason", "")),
                    exit_code=record.get("ExitCode", ""),
                    stdout_path=record.get("StdOut", ""),
                    restarts=int(record.get("Restarts", "0") or 0),
                    source="scontrol",
                    fields=record,
                )
            )
        return out

    def cancel(self, job_id: str, *, signal: str | None = None, batch_only: bool = False) -> None:
        """``scancel JOBID`` (or only send ``signal``, to the batch shell if ``batch_only``)."""
        _check_job_id(job_id)
        args = ["scancel"]
        if signal:
            args.append(f"--signal={signal}")
        if batch_only:
            args.append("--batch")
        result = self._run([*args, job_id])
        if result.returncode != 0 or "error" in result.stderr.lower():
            raise ServiceError(f"scancel could not cancel job {job_id}:\n{result.output}")

    def wait(
        self,
        job_id: str,
        *,
        timeout: float,
        poll: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> JobInfo:
        """Poll until the job reaches a terminal state; :class:`ServiceError` on timeout."""
        deadline = clock() + timeout
        while True:
            info = self.job(job_id)
            if info.finished:
                return self.show(job_id)
            if clock() >= deadline:
                raise ServiceError(
                    f"job {job_id} still {info.state} after {timeout:.0f} s "
                    f"(reason: {info.reason or 'none'})"
                )
            sleep(poll)


def _none_to_empty(value: str) -> str:
    return "" if value in ("(null)", "None") else value


def _check_job_id(job_id: str) -> None:
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise ConfigError(f"job id {job_id!r} is not a Slurm job id (digits, e.g. 12345)")

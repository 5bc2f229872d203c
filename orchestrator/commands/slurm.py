"""``qsweep slurm submit|status|logs|cancel``: run a study as a Ray cluster on Slurm.

    qsweep slurm submit search_spaces/quickstart.yaml --nodes 1 --dry-run
    qsweep slurm submit search_spaces/quickstart.yaml --nodes 4 --gpus-per-node 4 \\
        --partition gpu --time 12:00:00 --container qsweep.sif
    qsweep slurm status 1234
    qsweep slurm logs 1234 --follow
    qsweep slurm cancel 1234
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from model.errors import ServiceError

TAIL_LINES = 20
# The progress line `qsweep run` prints (orchestrator/progress.py), e.g.
# "[quickstart] 3/8 done (1 failed), 2 running | best val_accuracy 0.81 (p001_s0) | 1m12s elapsed"
PROGRESS_RE = re.compile(r"^\[[^\]\s]+\] \d+/\d+ done\b.*$", re.MULTILINE)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "slurm",
        help="run a study on Slurm (a Ray cluster in one allocation)",
        description="Submit a study as a Slurm job that starts a Ray cluster in its "
        "allocation and runs `qsweep run` on the head node; watch, read and cancel it.",
    )
    sub = parser.add_subparsers(dest="slurm_command", metavar="ACTION")
    sub.required = True

    submit = sub.add_parser(
        "submit",
        help="render the batch script and sbatch it",
        description="Render the batch script of a study (a Ray cluster over the allocation, "
        "the study driver on its head node) and submit it with sbatch. The job stops "
        "gracefully on USR1 before its time limit and requeues itself; the next run "
        "continues the study with --resume. --dry-run prints the script instead.",
    )
    submit.add_argument("space", help="study YAML (search space)")
    submit.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    submit.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (default 0)")
    submit.add_argument(
        "--cpus-per-node", type=int, default=None, help="CPUs per node (default: all Slurm gives)"
    )
    submit.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    submit.add_argument(
        "--time",
        help="time limit, e.g. 04:00:00 or 1-00:00:00; the USR1 stop-and-requeue needs one",
    )
    submit.add_argument("--account", help="Slurm account to charge (sbatch --account)")
    submit.add_argument("--qos", help="quality of service (sbatch --qos)")
    submit.add_argument(
        "--constraint", help="node features the nodes must have, e.g. a100 (sbatch --constraint)"
    )
    submit.add_argument("--job-name", help="default qsweep-<study>")
    submit.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra #SBATCH line, repeatable (e.g. --sbatch-arg=--mem=0)",
    )
    submit.add_argument(
        "--module", action="append", default=[], help="`module load M` in the job, repeatable"
    )
    submit.add_argument(
        "--activate",
        help="shell command that activates the environment, e.g. 'source venv/bin/activate'",
    )
    submit.add_argument("--container", help="Apptainer image (.sif) to run ray and qsweep in")
    submit.add_argument(
        "--results",
        default="results",
        help="results root; the study goes to RESULTS/<study name>/ (default results)",
    )
    submit.add_argument("--mlflow-uri", help="MLflow tracking URI for the driver")
    submit.add_argument(
        "--start-mlflow-server",
        action="store_true",
        help="start `mlflow server` (sqlite in the study dir) on the head node for the job",
    )
    submit.add_argument("--data", help="passed to `qsweep run --data`")
    submit.add_argument("--encoder", help="passed to `qsweep run --encoder`")
    submit.add_argument("--max-concurrent", type=int, help="passed to `qsweep run`")
    submit.add_argument(
        "--ray-auth",
        choices=("token", "disabled"),
        default="token",
        help="Ray token authentication: a fresh token per job (default) or disabled",
    )
    submit.add_argument(
        "--signal-seconds",
        type=int,
        default=120,
        help="USR1 this many seconds before the time limit; the job stops and requeues",
    )
    submit.add_argument(
        "--array",
        type=int,
        default=1,
        metavar="K",
        help="split the study into K shards, one Slurm array task each (its own Ray cluster "
        "and driver; a backfilling scheduler starts small tasks early); results and MLflow "
        "are shared: one study",
    )
    submit.add_argument(
        "--shared",
        action="store_true",
        help="do not ask for whole nodes (--exclusive); per-job Ray ports make sharing safe",
    )
    submit.add_argument("--dry-run", action="store_true", help="print the script; do not submit")
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job to end; exit non-zero with its output if it did not complete",
    )

    status = sub.add_parser(
        "status",
        help="state of a job (or of your qsweep jobs)",
        description="The state of a job (squeue, or scontrol for a finished one): elapsed "
        "time, nodes, reason, the study's latest progress line and, for a job that did "
        "not complete, the last lines of its output. Without a job id: your queued jobs.",
    )
    status.add_argument("job_id", nargs="?", help="job id (default: your queued jobs)")

    logs = sub.add_parser(
        "logs",
        help="print a job's output file",
        description="Print the output file of a job (the Ray cluster's and the driver's "
        "lines), found through scontrol or under RESULTS/*/slurm/.",
    )
    logs.add_argument("job_id", help="job id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    logs.add_argument("--results", default="results", help="results root to search")

    cancel = sub.add_parser(
        "cancel",
        help="cancel a job",
        description="Cancel a job with scancel. The study keeps the trials that finished; "
        "resubmit the same command to continue it.",
    )
    cancel.add_argument("job_id", help="job id")

    parser.set_defaults(func=run)


def run(args: argparse.Namespace, client: object | None = None) -> int:
    from orchestrator.slurm import SlurmClient

    client = client or SlurmClient()
    action = {"submit": _submit, "status": _status, "logs": _logs, "cancel": _cancel}
    return action[args.slurm_command](args, client)


def submit_warnings(resources: dict, args: argparse.Namespace) -> list[str]:
    """What a job with these options would waste or miss; a study that needs GPUs on a job
    without any is a ConfigError (Ray could not start a single trial)."""
    from model.errors import ConfigError

    gpu = float(resources.get("gpu", 0) or 0)
    if gpu > 0 and not args.gpus_per_node:
        raise ConfigError(
            f"the study asks for resources.gpu = {gpu:g} per trial but the job asks for no "
            "GPUs (--gpus-per-node 0): Ray would have none and could not start any trial. "
            "Pass --gpus-per-node N, or set resources: {gpu: 0} in the study to run on CPUs."
        )
    out = []
    if gpu == 0 and args.gpus_per_node:
        out.append(
            f"the study asks for no GPUs per trial (resources.gpu = 0) but the job asks for "
            f"{args.gpus_per_node} per node: the trials run on the CPUs and the GPUs stay idle. "
            "Set resources: {gpu: 1} (or a fraction such as 0.25) in the study to use them, "
            "or drop --gpus-per-node."
        )
    if args.time is None or args.time.upper() == "UNLIMITED":
        given = "no --time" if args.time is None else f"--time {args.time}"
        out.append(
            f"{given}: the job gets the partition's default time limit, if it has one. The "
            f"graceful stop and requeue (USR1 {args.signal_seconds} s before the limit) fires "
            "only before a time limit: without one it never fires, and an unknown default may "
            "end the study sooner than planned. Pass --time, e.g. --time 24:00:00."
        )
    return out


def _submit(args: argparse.Namespace, client) -> int:
    from orchestrator.results import study_dir_in
    from orchestrator.slurm import SlurmOptions, gpu_sharing, render_sbatch, study_dir
    from orchestrator.spec import load_spec

    space = Path(args.space).resolve()
    spec = load_spec(space)  # validate the whole file: errors surface before sbatch
    name = spec.name
    for warning in submit_warnings(spec.resources, args):
        print(f"qsweep slurm submit: warning: {warning}", file=sys.stderr)
    study_dir_in(Path(args.results), name)  # an old-layout --results is an error here
    options = SlurmOptions(
        study_file=str(space),
        study_name=name,
        results_dir=str(Path(args.results).resolve()),
        nodes=args.nodes,
        cpus_per_node=args.cpus_per_node,
        gpus_per_node=args.gpus_per_node,
        gpu_per_trial=spec.resources["gpu"],
        cpu_per_trial=spec.resources["cpu"],
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        time=args.time,
        constraint=args.constraint,
        job_name=args.job_name,
        sbatch_args=tuple(args.sbatch_arg),
        modules=tuple(args.module),
        activate=args.activate,
        container=str(Path(args.container).resolve()) if args.container else None,
        data=args.data,
        encoder=args.encoder,
        mlflow_uri=args.mlflow_uri,
        start_mlflow_server=args.start_mlflow_server,
        max_concurrent=args.max_concurrent,
        ray_auth=args.ray_auth,
        signal_seconds=args.signal_seconds,
        exclusive=not args.shared,
        array=args.array,
    )
    script = render_sbatch(options)
    sharing = gpu_sharing(options, spec.max_concurrent)
    if args.dry_run:
        sys.stdout.write(script)
        if sharing:  # stdout is the script; this goes beside it
            print(sharing, file=sys.stderr)
        return 0
    slurm_dir = study_dir(options) / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    script_path = slurm_dir / "job.sbatch"
    script_path.write_text(script)
    job_id = client.submit(script_path)
    output = slurm_dir / (f"slurm-{job_id}_*.out" if options.array > 1 else f"slurm-{job_id}.out")
    with (slurm_dir / "jobs.tsv").open("a") as ledger:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        ledger.write(f"{job_id}\t{stamp}\t{script_path}\t{output}\n")
    tasks = f", an array of {options.array} shards" if options.array > 1 else ""
    print(f"submitted job {job_id} (study {options.study_name}, {options.nodes} node(s){tasks})")
    print(f"  script:  {script_path}")
    print(f"  results: {study_dir(options)}/")
    print(f"  log:     {output}")
    if sharing:
        print(f"  {sharing}")
    print(f"  watch:   qsweep slurm status {job_id}; qsweep slurm logs {job_id} --follow")
    if not args.wait:
        return 0
    info = client.wait(job_id, timeout=float("inf"), poll=2.0)
    print(f"job {job_id} {info.state} (exit {info.exit_code or '?'}, elapsed {info.elapsed})")
    if info.state != "COMPLETED":
        raise ServiceError(_failure_message(info, output))
    return 0


def _failure_message(info, output: Path) -> str:
    path = Path(info.stdout_path) if info.stdout_path else output
    tail = _tail(path, TAIL_LINES)
    return (
        f"job {info.job_id} ended {info.state} (exit {info.exit_code or '?'}, "
        f"reason {info.reason or 'none'}); last lines of {path}:\n{tail}"
    )


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(cannot read {path}: {err.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _status(args: argparse.Namespace, client) -> int:
    if args.job_id is None:
        sys.stdout.write(client.queue())
        return 0
    tasks = client.tasks(args.job_id) if "_" not in args.job_id else []
    if tasks:
        return _array_status(args.job_id, tasks)
    info = client.job(args.job_id)
    print(f"job {info.job_id}: {info.state}")
    print(f"  elapsed: {info.elapsed or '-'}")
    print(f"  nodes:   {info.nodes or '-'}")
    print(f"  reason:  {info.reason or '-'}")
    trials = _last_progress(info, client)
    if trials:
        print(f"  trials:  {trials}")
    if info.source == "scontrol":
        print(f"  exit:    {info.exit_code or '-'}")
        if info.restarts:
            print(f"  requeued: {info.restarts} time(s)")
        if info.stdout_path:
            print(f"  log:     {info.stdout_path}")
        if info.finished and info.state != "COMPLETED":
            print(f"last lines of {info.stdout_path}:")
            print(_tail(Path(info.stdout_path), TAIL_LINES))
            return 1
    return 0


def _array_status(job_id: str, tasks: list) -> int:
    """One line per array task (a shard), then the study's rows from the shared table."""
    from orchestrator.results import read_trials

    print(f"job array {job_id}: {len(tasks)} task(s)")
    study = None
    for info in tasks:
        requeued = f", requeued {info.restarts}x" if info.restarts else ""
        print(f"  {info.job_id}: {info.state} ({info.elapsed or '-'}, nodes {info.nodes or '-'}"
              f"{requeued}, reason {info.reason or '-'})")  # fmt: skip
        progress = _progress_in(info.stdout_path)
        if progress:
            print(f"    {progress}")
        if info.stdout_path and study is None:
            study = Path(info.stdout_path).parent.parent  # RESULTS/<study>/slurm/slurm-*.out
    if study is not None and (study / "trials.parquet").exists():
        df = read_trials(study)
        counts = ", ".join(f"{n} {s}" for s, n in df.status.value_counts().items()) or "none yet"
        print(f"  study {study.name}: {len(df)} trials finished in all shards ({counts})")
    failed = [i for i in tasks if i.finished and i.state != "COMPLETED"]
    return 1 if failed else 0


def _progress_in(path: str) -> str | None:
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return None
    lines = PROGRESS_RE.findall(text)
    return lines[-1] if lines else None


def _last_progress(info, client) -> str | None:
    """The driver's latest progress line in the job output (trials done, running, failed)."""
    path = info.stdout_path
    if not path:  # squeue does not report the output file; scontrol does
        try:
            path = client.show(info.job_id).stdout_path
        except ServiceError:
            return None
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return None
    lines = PROGRESS_RE.findall(text)
    return lines[-1] if lines else None


def _find_output(args: argparse.Namespace, client) -> Path:
    try:
        info = client.show(args.job_id)
        if info.stdout_path:
            return Path(info.stdout_path)
    except ServiceError:
        pass
    matches = sorted(Path(args.results).glob(f"*/slurm/slurm-{args.job_id}.out"))
    if matches:
        return matches[0]
    raise ServiceError(
        f"no output file for job {args.job_id}: Slurm no longer knows the job and "
        f"{args.results}/*/slurm/slurm-{args.job_id}.out does not exist (pass --results)"
    )


def _logs(args: argparse.Namespace, client) -> int:
    path = _find_output(args, client)
    if not args.follow:
        if not path.exists():
            raise ServiceError(f"{path} does not exist yet (the job may still be pending)")
        sys.stdout.write(path.read_text(errors="replace"))
        return 0
    offset = 0
    while True:
        finished = client.job(args.job_id).finished
        if path.exists():
            with path.open(errors="replace") as handle:
                handle.seek(offset)
                chunk = handle.read()
                offset = handle.tell()
            sys.stdout.write(chunk)
            sys.stdout.flush()
        if finished:
            return 0
        time.sleep(1.0)


def _cancel(args: argparse.Namespace, client) -> int:
    client.cancel(args.job_id)
    print(f"cancel requested for job {args.job_id}; check with `qsweep slurm status {args.job_id}`")
    return 0

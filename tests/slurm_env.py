"""A real single-node Slurm for tests: munged + slurmctld + slurmd in a temp dir.

    cluster = SingleNodeSlurm.start(tmp_dir)   # SLURM_CONF=cluster.conf for clients
    ...
    cluster.stop()                              # stops what it started, by PID

Needs root and the Debian packages ``slurmctld slurmd slurm-client munge`` (see
``APT_INSTALL``). Nothing here is qsweep-specific. ``tests/slurm_up.sh`` wraps it for
a shell.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

APT_INSTALL = "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")
PARTITION = "debug"


def missing_binaries() -> list[str]:
    """Slurm/munge programs not on PATH (sbin included)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


def can_run() -> tuple[bool, str]:
    """Whether this machine can start a real Slurm, and why not."""
    missing = missing_binaries()
    if missing:
        return False, f"Slurm not installed (missing {', '.join(missing)}); {APT_INSTALL}"
    if os.geteuid() != 0:
        return False, "starting slurmd needs root"
    return True, ""


def _node_line(memory_mb: int) -> str:
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    line = out.splitlines()[0].strip()  # NodeName=vm CPUs=2 ... RealMemory=24105
    return re.sub(r"RealMemory=\d+", f"RealMemory={memory_mb}", line)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_conf(
    root: Path,
    *,
    memory_mb: int = 2048,
    first_job_id: int = 1,
    nodes: dict[str, str] | None = None,
    extra: str = "",
) -> Path:
    """slurm.conf with every path inside ``root``.

    Without ``nodes``: one node, this host. With ``nodes`` (name -> address): one
    ``NodeName`` line per node with ``NodeAddr`` (each like this host's hardware) and the
    controller on the first; the node name goes into slurmd's spool, PID and log paths.
    Daemon ports are picked free, so two test sessions on one machine do not collide.
    """
    for sub in ("state", "spool", "log", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    node = _node_line(memory_mb)
    this_host = node.split()[0].split("=", 1)[1]
    if nodes is None:
        controller = this_host
        node_lines = f"{node} State=UNKNOWN"
        suffix = ""
    else:
        first, first_addr = next(iter(nodes.items()))
        controller = f"{first}({first_addr})"
        rest = node.split(maxsplit=1)[1]
        node_lines = "\n".join(
            f"NodeName={name} NodeAddr={addr} {rest} State=UNKNOWN" for name, addr in nodes.items()
        )
        suffix = "-%n"
        for name in nodes:
            (root / "spool" / name).mkdir(exist_ok=True)
    names = ",".join(nodes) if nodes else this_host
    conf = f"""\
ClusterName=qsweeptest
SlurmctldHost={controller}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Requeued jobs wait until the old job credential expires (default 120 s): keep it short.
AuthInfo=cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
SchedulerParameters=batch_sched_delay=0,sched_interval=2
KillWait=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool{"/%n" if nodes else ""}
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd{suffix}.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd{suffix}.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
FirstJobId={first_job_id}
{extra}{node_lines}
PartitionName={PARTITION} Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""
    path = root / "slurm.conf"
    path.write_text(conf)
    return path


@dataclass
class SingleNodeSlurm:
    """Daemons started for a test; ``stop()`` ends exactly those (by PID)."""

    root: Path
    conf: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    munged_pid: int | None = None  # set only when we started munged

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @classmethod
    def start(cls, root: Path, *, timeout: float = 30.0, first_job_id: int = 1) -> SingleNodeSlurm:
        root.mkdir(parents=True, exist_ok=True)
        conf = write_conf(root, first_job_id=first_job_id)
        cluster = cls(root=root, conf=conf)
        try:
            cluster._start_munge()
            env = {**os.environ, "SLURM_CONF": str(conf)}
            for args in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
                log = open(root / "log" / f"{args[0]}.stderr", "w")  # noqa: SIM115
                cluster.processes.append(
                    subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
                )
            cluster._wait_idle(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start_munge(self) -> None:
        if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return  # a munged already answers: use it, do not stop it later
        run = Path("/run/munge")
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "-c"], check=True)
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
        pid_file = run / "munged.pid"
        for _ in range(50):
            if pid_file.exists() and pid_file.read_text().strip():
                self.munged_pid = int(pid_file.read_text().strip())
                break
            time.sleep(0.1)

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{proc.args[0]} exited with {proc.returncode}; see {self.root}/log"
                    )
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env
            )
            last = out.stdout.strip() + out.stderr.strip()
            states = out.stdout.split()  # one line per state; all nodes idle: "idle"
            if out.returncode == 0 and states and all(s.startswith("idle") for s in states):
                return
            time.sleep(0.5)
        raise RuntimeError(f"Slurm nodes not idle after {timeout:.0f} s (sinfo: {last!r})")

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        if self.munged_pid is not None:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.munged_pid = None

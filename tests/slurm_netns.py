"""A real multi-node Slurm on one machine: each node in its own network namespace.

    cluster = MultiNodeSlurm.start(tmp_dir, nodes=2)   # node1 10.77.K.1, node2 10.77.K.2
    subprocess.run(["sbatch", ...], env=cluster.env)   # clients reach slurmctld in node1
    cluster.kill_node("node2")                          # its slurmd and raylet, by PID
    cluster.stop()                                      # daemons by PID, then the namespaces

Every node is a network namespace (``ip netns``) joined to node 1's bridge by a veth
pair, with an address in 10.77.K.0/24 that exists only inside these namespaces, its own
hostname (``unshare --uts``) and an ``/etc/hosts`` naming all nodes (bind-mounted in a
private mount namespace: the host's file is untouched). slurmctld runs in node 1's
namespace; each node runs ``slurmd -N nodeN``; munge and the file system are shared, as
on a cluster. Client commands (sbatch, squeue, ...) run through small wrappers in
``ROOT/bin`` that enter node 1's namespace; ``env`` puts them first on PATH.

Needs root, ``ip`` (iproute2), ``nsenter``/``unshare`` (util-linux) and the Slurm
packages of :mod:`tests.slurm_env`, whose config writer, munge and stop code this shares.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.slurm_env import SingleNodeSlurm, can_run, write_conf

CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun", "salloc")
# Nodes are declared down this long after their slurmd stops answering.
SLURMD_TIMEOUT_S = 30


def can_run_multinode() -> tuple[bool, str]:
    """Whether this machine can start a multi-node Slurm in namespaces, and why not."""
    ok, why = can_run()
    if not ok:
        return ok, why
    missing = [b for b in ("ip", "nsenter", "unshare") if shutil.which(b) is None]
    if missing:
        return False, f"missing {', '.join(missing)} (apt-get install -y iproute2 util-linux)"
    probe = f"qsweepprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return False, f"cannot create network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True, ""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def pids_in_netns(name: str, comm: str | None = None) -> list[int]:
    """Processes whose network namespace is ``name`` (optionally only those named ``comm``)."""
    inode = _netns_inode(name)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != inode:
                continue
            if comm is not None and Path(f"/proc/{entry}/comm").read_text().strip() != comm:
                continue
        except OSError:  # exited meanwhile
            continue
        pids.append(int(entry))
    return pids


@dataclass
class MultiNodeSlurm(SingleNodeSlurm):
    """slurmctld + one slurmd per node, each node a network namespace; see the module doc."""

    addresses: dict[str, str] = field(default_factory=dict)  # node name -> address
    namespaces: dict[str, str] = field(default_factory=dict)  # node name -> netns name
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)  # "slurmd-node2" -> ...

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands (the wrappers first on PATH)."""
        path = f"{self.root / 'bin'}:{os.environ.get('PATH', '')}"
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    @classmethod
    def start(  # type: ignore[override]
        cls, root: Path, *, nodes: int = 2, timeout: float = 60.0, first_job_id: int = 1
    ) -> MultiNodeSlurm:
        root.mkdir(parents=True, exist_ok=True)
        subnet = _free_subnet()
        names = [f"node{i}" for i in range(1, nodes + 1)]
        addresses = {n: f"10.77.{subnet}.{i}" for i, n in enumerate(names, start=1)}
        extra = f"SlurmdTimeout={SLURMD_TIMEOUT_S}\n"
        conf = write_conf(root, first_job_id=first_job_id, nodes=addresses, extra=extra)
        cluster = cls(root=root, conf=conf, addresses=addresses)
        try:
            cluster._make_network(subnet)
            (root / "hosts").write_text(
                "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in addresses.items())
            )
            cluster._write_client_wrappers()
            cluster._start_munge()
            cluster._spawn("node1", "slurmctld", ["slurmctld", "-D", "-i"])
            for name in names:
                cluster._spawn(name, f"slurmd-{name}", ["slurmd", "-D", "-N", name])
            cluster._wait_idle(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _make_network(self, subnet: int) -> None:
        first = None
        for i, name in enumerate(self.addresses, start=1):
            ns = f"qsweep{subnet}n{i}"
            _ip("netns", "add", ns)
            self.namespaces[name] = ns
            _ip("-n", ns, "link", "set", "lo", "up")
            if first is None:  # node 1 holds the bridge the others plug into
                first = ns
                _ip("-n", ns, "link", "add", "br0", "type", "bridge")
                _ip("-n", ns, "addr", "add", f"{self.addresses[name]}/24", "dev", "br0")
                _ip("-n", ns, "link", "set", "br0", "up")
                continue
            host_end, node_end = f"qs{subnet}v{i}a", f"qs{subnet}v{i}b"
            _ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
            _ip("link", "set", host_end, "netns", first)
            _ip("link", "set", node_end, "netns", ns)
            _ip("-n", first, "link", "set", host_end, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.addresses[name]}/24", "dev", node_end)
            _ip("-n", ns, "link", "set", node_end, "up")

    def _write_client_wrappers(self) -> None:
        bin_dir = self.root / "bin"
        bin_dir.mkdir(exist_ok=True)
        ns = self.namespaces["node1"]
        for client in CLIENTS:
            real = shutil.which(client, path=os.environ.get("PATH", "") + ":/usr/sbin")
            if real is None:
                continue
            wrapper = bin_dir / client
            wrapper.write_text(f'#!/bin/sh\nexec nsenter --net=/run/netns/{ns} {real} "$@"\n')
            wrapper.chmod(0o755)

    def _spawn(self, node: str, label: str, args: list[str]) -> None:
        """``args`` in ``node``'s namespace with its hostname and /etc/hosts."""
        script = f'hostname {node} && mount --bind {self.root / "hosts"} /etc/hosts && exec "$@"'
        command = [
            "nsenter", f"--net=/run/netns/{self.namespaces[node]}",
            "unshare", "--uts", "--mount", "--propagation", "private",
            "sh", "-c", script, label, *args,
        ]  # fmt: skip
        log = open(self.root / "log" / f"{label}.stderr", "w")  # noqa: SIM115
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        # nsenter, unshare and sh each exec the next: the PID is the daemon's.
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        self.daemons[label] = proc

    def kill_node(self, node: str) -> dict[str, list[int]]:
        """A node lost: SIGKILL its slurmd and its Ray raylet(s). Returns the PIDs killed."""
        killed: dict[str, list[int]] = {"slurmd": [], "raylet": []}
        proc = self.daemons[f"slurmd-{node}"]
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            killed["slurmd"].append(proc.pid)
        for pid in pids_in_netns(self.namespaces[node], comm="raylet"):
            try:
                os.kill(pid, signal.SIGKILL)
                killed["raylet"].append(pid)
            except ProcessLookupError:
                pass
        return killed

    def stop(self) -> None:
        """Daemons by PID (base class), then whatever the jobs left in the namespaces
        (by PID), then the namespaces (their veth ends go with them)."""
        try:
            super().stop()
        finally:
            for ns in reversed(list(self.namespaces.values())):
                if not os.path.exists(f"/run/netns/{ns}"):
                    continue
                for pid in pids_in_netns(ns):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            self.namespaces.clear()


def _free_subnet() -> int:
    """A third octet for 10.77.K.0/24 not used by another test session's namespaces."""
    used = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for _ in range(100):
        k = random.randint(1, 254)
        if f"qsweep{k}n" not in used:
            return k
    raise RuntimeError("no free 10.77.K.0/24 subnet for the test namespaces")

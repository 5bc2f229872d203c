"""What a study needs from a Ray cluster before its driver starts (no Ray here).

    need = ClusterNeed(nodes=("node1", "node2"), cpus=4, gpus=0, timeout_s=180)
    shortfall(need, [RayNode("node1", "10.0.0.1", cpus=2, gpus=0)])
    # -> "1 of 2 nodes, 2 of 4 CPUs; missing: node2"

``qsweep slurm submit`` passes the allocation's nodes and resources to ``qsweep run
--expect-nodes/--expect-cpus/--expect-gpus``; the driver (``tune_driver``) polls Ray's node
table until :func:`shortfall` is ``None`` or the timeout has passed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClusterNeed", "RayNode", "missing_nodes", "shortfall"]


@dataclass(frozen=True)
class ClusterNeed:
    """Nodes (by host name, as Slurm names them) and total resources to wait for."""

    nodes: tuple[str, ...]
    cpus: float = 0.0
    gpus: float = 0.0
    timeout_s: float = 300.0


@dataclass(frozen=True)
class RayNode:
    """An alive node of the Ray cluster."""

    hostname: str
    address: str
    cpus: float = 0.0
    gpus: float = 0.0


def _short(name: str) -> str:
    return name.split(".", 1)[0]


def missing_nodes(need: ClusterNeed, alive: list[RayNode]) -> list[str]:
    """Expected nodes that no alive Ray node matches by short host name or address."""
    seen = {_short(n.hostname) for n in alive} | {n.address for n in alive}
    return [name for name in need.nodes if _short(name) not in seen and name not in seen]


def shortfall(need: ClusterNeed, alive: list[RayNode]) -> str | None:
    """``None`` when the alive nodes meet ``need``; else what is missing, in words."""
    cpus = sum(n.cpus for n in alive)
    gpus = sum(n.gpus for n in alive)
    if len(alive) >= len(need.nodes) and cpus >= need.cpus and gpus >= need.gpus:
        return None
    parts = [f"{len(alive)} of {len(need.nodes)} nodes"]
    if need.cpus:
        parts.append(f"{cpus:g} of {need.cpus:g} CPUs")
    if need.gpus:
        parts.append(f"{gpus:g} of {need.gpus:g} GPUs")
    missing = missing_nodes(need, alive)
    text = ", ".join(parts)
    if missing:
        text += f"; missing: {', '.join(missing)}"
    return text

"""Waiting for a Ray cluster: what is missing, in words (no Ray needed)."""

from __future__ import annotations

import io
import socket

import pytest

from model.errors import ServiceError
from orchestrator.cluster import ClusterNeed, RayNode, missing_nodes, shortfall

NEED = ClusterNeed(nodes=("node1", "node2"), cpus=4, gpus=0)


def test_complete_cluster_has_no_shortfall() -> None:
    alive = [RayNode("node1", "10.0.0.1", 2), RayNode("node2.cluster.example", "10.0.0.2", 2)]
    assert shortfall(NEED, alive) is None
    assert missing_nodes(NEED, alive) == []  # short host names match Slurm's names


def test_missing_node_is_named() -> None:
    text = shortfall(NEED, [RayNode("node1", "10.0.0.1", 2)])
    assert text == "1 of 2 nodes, 2 of 4 CPUs; missing: node2"


def test_too_few_gpus_is_a_shortfall_even_with_every_node() -> None:
    need = ClusterNeed(nodes=("a", "b"), cpus=2, gpus=8)
    alive = [RayNode("a", "10.0.0.1", 1, 4), RayNode("b", "10.0.0.2", 1, 2)]
    assert shortfall(need, alive) == "2 of 2 nodes, 2 of 2 CPUs, 6 of 8 GPUs"


def test_nodes_match_by_address_when_host_names_differ() -> None:
    need = ClusterNeed(nodes=("10.0.0.2",))
    assert missing_nodes(need, [RayNode("gpu-17", "10.0.0.2")]) == []


@pytest.mark.integration
def test_driver_waits_on_a_real_ray_and_names_the_missing_node() -> None:
    ray = pytest.importorskip("ray")
    from orchestrator import tune_driver

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        here = socket.gethostname()
        out = io.StringIO()
        tune_driver._wait_for_cluster(ClusterNeed((here,), cpus=1), out)
        assert f"Ray cluster ready: 1 node(s) ({here})" in out.getvalue()
        need = ClusterNeed((here, "ghost"), cpus=2, timeout_s=1)
        with pytest.raises(
            ServiceError, match=rf"1 of 2 nodes, 1 of 2 CPUs; missing: ghost\. Joined: {here} "
        ):
            tune_driver._wait_for_cluster(need, out, poll_s=0.2)
    finally:
        if started:
            ray.shutdown()

"""The seed's two tutorials, end to end: tortie-node (BGP, Felix, tortie-libnetwork) and a
private dockerd on each of two lab nodes; every step applies v3 manifests with tortiectl and
asserts the exact reachability matrix, probed with real packets between the containers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tortie.lab import Lab
from tortie.lab import docker as ld
from tortie.lab.nodes import NodeRunner
from tortie.lab.tutorials import ADVANCED, SIMPLE, DockerDriver, Tutorial, TutorialRunner

REASON = ld.docker_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
NODES = ["node1", "node2"]


class Stack:
    def __init__(self, lab: Lab, docker: dict[str, Any], nodes: NodeRunner) -> None:
        self.lab, self.docker, self.nodes = lab, docker, nodes

    def ctl(self, args: list[str], stdin: str | None) -> Any:
        return self.lab.ctl(args, input=stdin)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    lab = Lab(nodes=2, static_route=False, host_sysctls=False)
    lab.up()
    workdir = tempfile.mkdtemp(prefix="ttu", dir="/tmp")
    docker: dict[str, Any] = {}
    nodes = NodeRunner(lab, CALICO_LIBNETWORK_ENABLED="true", FELIX_IPTABLESREFRESHINTERVAL="10")
    try:
        for node in NODES:  # tortie-node creates its own Node
            lab.client.delete("Node", node)
        docker.update(ld.start_docker_nodes(lab, NODES, workdir))
        for node in NODES:
            dn = docker[node]
            nodes.start(node, TORTIE_LIBNETWORK_PLUGIN_DIR=str(dn.plugin_dir), DOCKER_HOST=dn.host)
        nodes.wait_ready(NODES)
        yield Stack(lab, docker, nodes)
    finally:
        for dn in docker.values():
            dn.stop()
        nodes.stop_all()
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


def _run(stack: Stack, tutorial: Tutorial) -> None:
    runner = TutorialRunner(tutorial, DockerDriver(stack.docker), stack.ctl)
    try:
        runner.setup()
        for result in runner.run():
            assert result.differences == [], f"{result.step.title}: {result.differences}"
    finally:
        runner.cleanup()


def test_simple_policy(stack: Stack) -> None:
    _run(stack, SIMPLE)


def test_advanced_policy(stack: Stack) -> None:
    _run(stack, ADVANCED)

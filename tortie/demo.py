"""`make demo`: the whole system working, for a newcomer, in a few minutes.

1. A lab of three nodes inside network namespaces (root needed), with etcd in its own.
2. On each node a private dockerd (where Docker is installed) and `tortie-node`: Felix,
   confd + BIRD (a BGP mesh), and tortie-libnetwork.
3. `tortiectl node status`: the mesh.
4. The seed's two tutorials, step by step: each step's v3 manifest applied with tortiectl,
   then the reachability matrix probed with real packets between the containers, what changed
   and why, and whether it matches the tutorial.
5. What the datastore now holds (`tortiectl get ...`, `tortiectl ipam show`).
6. Tear-down, checked (no namespace, process or mount of the lab left) — or `--keep` the lab
   to explore it with `tortiectl lab ...`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

from tortie.lab import Lab
from tortie.lab import matrix as mx
from tortie.lab.nodes import NodeRunner
from tortie.lab.tutorials import ADVANCED, SIMPLE, DockerDriver, LabDriver, TutorialRunner

BOLD, DIM, GREEN, RED, YELLOW, RESET = (
    "\033[1m",
    "\033[2m",
    "\033[32m",
    "\033[31m",
    "\033[33m",
    "\033[0m",
)
NODES = ["node1", "node2", "node3"]


class Demo:
    def __init__(self, colour: bool, keep: bool, docker: bool) -> None:
        self.colour = colour
        self.keep = keep
        self.want_docker = docker
        self.t0 = time.monotonic()
        self.ok = True

    # --- output ----------------------------------------------------------------------------
    def c(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.colour else text

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def step(self, title: str) -> None:
        self.say()
        self.say(self.c(BOLD, f"== [{time.monotonic() - self.t0:5.1f}s] {title}"))

    def ctl(self, lab: Lab, args: list[str], stdin: str | None = None, show: bool = True) -> Any:
        if show:
            self.say(self.c(DIM, "$ tortiectl " + " ".join(args)))
            if stdin:
                for line in stdin.rstrip().splitlines():
                    self.say(self.c(DIM, "    " + line))
        out = lab.ctl(args, input=stdin)
        if show:
            text = (out.stdout + out.stderr).rstrip()
            if text:
                self.say(text)
        return out

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        if os.geteuid() != 0:
            self.say("The demo builds a lab of network namespaces: run it as root (make demo).")
            return 1
        from tortie.lab import docker as ld

        docker_reason = ld.docker_unavailable_reason() if self.want_docker else "--no-docker"
        self.step("Starting a lab: 3 nodes on one L2 fabric, etcd in its own namespace")
        lab = Lab(nodes=NODES, static_route=False, host_sysctls=False, owned=not self.keep)
        lab.up()
        self.say(
            f"lab {lab.lab_id}: "
            + ", ".join(f"{n.name} {n.ip}" for n in lab.nodes)
            + f"; etcd {lab.etcd_endpoint}"
        )
        runner = NodeRunner(lab, CALICO_LIBNETWORK_ENABLED="true" if not docker_reason else "false")
        docker: dict[str, Any] = {}
        workdir = f"/tmp/tdm{lab.lab_id}"
        try:
            for node in NODES:  # tortie-node registers its own Node
                lab.client.delete("Node", node)
            if docker_reason is None:
                self.step("Starting a private dockerd on every node (busybox image, no registry)")
                self._start_docker(lab, docker, workdir)
            else:
                self.say(
                    self.c(
                        YELLOW,
                        f"Docker is not available ({docker_reason}): "
                        "the tutorials run on plain lab workloads",
                    )
                )
            self.step(
                "Starting tortie-node on every node: Felix, confd + BIRD"
                + (", tortie-libnetwork" if docker else "")
            )
            for node in NODES:
                extra = {}
                if node in docker:
                    extra = {
                        "TORTIE_LIBNETWORK_PLUGIN_DIR": str(docker[node].plugin_dir),
                        "DOCKER_HOST": docker[node].host,
                    }
                runner.start(node, **extra)
            runner.wait_ready(NODES)
            self.say("all nodes ready (Felix in sync, BGP established)")
            self.step("BGP: the node-to-node mesh as node1 sees it")
            status = lab.exec(
                "node1",
                [sys.executable, "-m", "tortie.ctl.main", "node", "status"],
                env=runner.env("node1"),
            )
            self.say((status.stdout + status.stderr).rstrip())

            driver_for = (lambda: DockerDriver(docker)) if docker else (lambda: LabDriver(lab))
            simple = self._tutorial(lab, SIMPLE, driver_for(), {})
            self._cleanup(lab, simple)
            advanced = self._tutorial(lab, ADVANCED, driver_for(), {"node2": "node3"})

            self.step("What the datastore holds now")
            for args in (
                ["get", "nodes", "-o", "wide"],
                ["get", "ippools", "-o", "wide"],
                ["get", "globalnetworkpolicies", "-o", "wide"],
                ["get", "profiles"],
                ["get", "workloadendpoints", "-A"],
                ["ipam", "show"],
            ):
                self.ctl(lab, args)
            if not self.keep:
                self._cleanup(lab, advanced)
        except BaseException:
            self.ok = False
            for line in runner.errors()[-15:]:
                self.say(self.c(RED, line))
            raise
        finally:
            if self.keep and self.ok:
                self._kept(lab, docker)
            else:
                self._teardown(lab, runner, docker)
        elapsed = time.monotonic() - self.t0
        verdict = "everything matched" if self.ok else "SOMETHING DID NOT MATCH"
        colour = GREEN if self.ok else RED
        self.say()
        self.say(self.c(BOLD + colour, f"Demo finished in {elapsed:.0f} s: {verdict}"))
        return 0 if self.ok else 1

    def _start_docker(self, lab: Lab, docker: dict[str, Any], workdir: str) -> None:
        from tortie.lab import docker as ld

        docker.update(ld.start_docker_nodes(lab, NODES, workdir))
        self.say(f"dockerd running on {', '.join(sorted(docker))}")

    def _cleanup(self, lab: Lab, tr: TutorialRunner) -> None:
        tr.ctl = lambda a, s: self.ctl(lab, list(a), s, show=False)
        tr.cleanup()

    def _tutorial(
        self, lab: Lab, tutorial: Any, driver: Any, node_map: dict[str, str]
    ) -> TutorialRunner:
        self.step(f"Tutorial: {tutorial.name} ({driver.kind})")
        tr = TutorialRunner(
            tutorial, driver, lambda a, s: self.ctl(lab, list(a), s), node_map=node_map
        )
        try:
            for net in tutorial.networks:
                self.say(
                    self.c(
                        DIM,
                        f"$ docker network create --driver tortie "
                        f"--ipam-driver tortie-ipam {net}   # on every node",
                    )
                )
            tr.setup()
            for t in tr.targets:
                c = tr.containers[t.name]
                labels = "".join(f" --label org.projectcalico.label.{k}={v}" for k, v in c.labels)
                self.say(
                    self.c(
                        DIM,
                        f"$ docker run -d --net {c.network}{labels} --name "
                        f"{c.name} busybox   # on {c.node} -> {t.ip}",
                    )
                )
            for i, step in enumerate(tutorial.steps, start=1):
                self.say()
                self.say(self.c(BOLD, f"-- Step {i}: {step.title}"))
                result = tr.run_step(step)
                self.say(
                    mx.render(result.matrix, colour=self.colour, changed=result.changed).rstrip()
                )
                if result.changed:
                    self.say(self.c(YELLOW, f"   * {len(result.changed)} cell(s) changed"))
                self.say("   " + step.explain)
                if result.differences:
                    self.ok = False
                    for d in result.differences:
                        self.say(self.c(RED, f"   MISMATCH {d}"))
                else:
                    self.say(
                        self.c(
                            GREEN,
                            f"   matches the tutorial "
                            f"({result.seconds:.1f} s to enforce and probe)",
                        )
                    )
        except BaseException:
            self._cleanup(lab, tr)
            raise
        return tr

    def _teardown(self, lab: Lab, runner: NodeRunner, docker: dict[str, Any]) -> None:
        self.step("Tearing down")
        for dn in docker.values():
            dn.stop()
        runner.stop_all()
        lab_id = lab.lab_id
        lab.down()
        left = [
            ns
            for ns in subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True
            ).stdout.split()
            if f"tl{lab_id}" in ns
        ]
        with open("/proc/mounts") as f:
            mounts = [ln for ln in f.read().splitlines() if f"tdm{lab_id}" in ln]
        if left or mounts:
            self.ok = False
            self.say(self.c(RED, f"left behind: {left + mounts}"))
        else:
            self.say(f"lab {lab_id} removed: no namespaces, processes or mounts left")

    def _kept(self, lab: Lab, docker: dict[str, Any]) -> None:
        self.step(f"Keeping lab {lab.lab_id}: try")
        self.say(f"  tortiectl lab status {lab.lab_id}")
        self.say("  tortiectl lab ctl -- get workloadendpoints -A -o wide")
        self.say("  tortiectl lab exec node1 -- ip route          # BGP-learned routes")
        if docker:
            dn = docker["node1"]
            self.say(f"  docker -H {dn.host} ps                      # node1's containers")
        self.say(f"  tortiectl lab down {lab.lab_id}               # when you are done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tortie-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the lab running afterwards")
    parser.add_argument("--no-colour", action="store_true")
    parser.add_argument("--no-docker", action="store_true", help="lab workloads, not Docker")
    args = parser.parse_args(argv)
    colour = sys.stdout.isatty() and not args.no_colour
    return Demo(colour, args.keep, not args.no_docker).run()


if __name__ == "__main__":
    sys.exit(main())

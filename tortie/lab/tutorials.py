"""The seed's two Docker tutorials — simple policy and advanced policy — as data and a runner.

Each tutorial is a set of networks, containers (with ``org.projectcalico.label.*`` labels) and
steps. A step applies v3 manifests with ``tortiectl`` exactly as a user would, then says what
the full reachability matrix must be (a function of source, destination and check). The
runner creates everything through a workload driver — real Docker with tortie-libnetwork, or
plain lab workloads with the same per-network profiles where Docker is not available — probes
the matrix with real packets until it matches (policy takes a moment to reach every node),
and reports the matrix, what changed since the previous step, and any difference from the
expectation. The demo prints it; the end-to-end tests assert it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tortie.lab import matrix as mx

LABEL_PREFIX = "org.projectcalico.label."


@dataclass(frozen=True)
class Container:
    name: str
    node: str
    network: str
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def role(self) -> str | None:
        return dict(self.labels).get("role")


Expect = Callable[[Container, Container, mx.Check], bool]


@dataclass(frozen=True)
class Step:
    title: str
    explain: str
    checks: tuple[str, ...]
    expect: Expect
    apply: str | None = None  # YAML applied with `tortiectl apply -f -`
    delete: tuple[tuple[str, str], ...] = ()  # (kind, name) deleted with tortiectl


@dataclass(frozen=True)
class Tutorial:
    name: str
    networks: tuple[str, ...]
    containers: tuple[Container, ...]
    steps: tuple[Step, ...]


def _profile(network: str, extra_ingress: str = "") -> str:
    """The profile Docker networks get (members reach each other), plus optional rules."""
    return f"""apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: {network}
spec:
  labelsToApply:
    {network}: ""
  ingress:
  - action: Allow
    source:
      selector: has({network})
{extra_ingress}  egress:
  - action: Allow
"""


def same_net(a: Container, b: Container, c: mx.Check) -> bool:
    return a.network == b.network


SIMPLE = Tutorial(
    name="simple policy",
    networks=("net1", "net2", "net3"),
    containers=(
        Container("workload-A", "node1", "net1"),
        Container("workload-B", "node1", "net2"),
        Container("workload-C", "node1", "net1"),
        Container("workload-D", "node2", "net3"),
        Container("workload-E", "node2", "net1"),
    ),
    steps=(
        Step(
            "Networks are isolation boundaries",
            "Each Docker network gets a profile that lets its own members in. A, C and E share "
            "net1 and reach each other across hosts; B (net2) and D (net3) are on their own.",
            ("icmp", "tcp:80"),
            same_net,
        ),
        Step(
            "Open TCP port 80 on net2 to net1",
            "net2's profile gets one more ingress rule: TCP 80 from anything with the net1 "
            "label. A, C and E can now reach B on port 80 — and only on port 80: ping to B "
            "still fails, and D (net3) is still kept out.",
            ("icmp", "tcp:80"),
            lambda a, b, c: (
                same_net(a, b, c)
                or (str(c) == "tcp:80" and a.network == "net1" and b.network == "net2")
            ),
            apply=_profile(
                "net2",
                "  - action: Allow\n    protocol: TCP\n    source:\n      selector: has(net1)\n"
                "    destination:\n      ports: [80]\n",
            ),
        ),
    ),
)

DEFAULT_DENY = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: default-deny
spec:
  order: 1000
  selector: all()
  types: [Ingress, Egress]
"""

DATABASE_INGRESS = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: database-ingress
spec:
  order: 100
  selector: role == 'database'
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'frontend'
    destination:
      ports: [3306]
"""

FRONTEND_EGRESS = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: frontend-egress
spec:
  order: 100
  selector: role == 'frontend'
  types: [Egress]
  egress:
  - action: Allow
    protocol: TCP
    destination:
      selector: role == 'database'
      ports: [3306]
"""


def _fe_to_db_3306(a: Container, b: Container, c: mx.Check) -> bool:
    return str(c) == "tcp:3306" and a.role == "frontend" and b.role == "database"


ADVANCED = Tutorial(
    name="advanced policy",
    networks=("database", "frontend"),
    containers=(
        Container("db-1", "node1", "database", (("role", "database"),)),
        Container("db-2", "node2", "database", (("role", "database"),)),
        Container("fe-1", "node1", "frontend", (("role", "frontend"),)),
        Container("fe-2", "node2", "frontend", (("role", "frontend"),)),
        Container("other", "node2", "frontend"),
    ),
    steps=(
        Step(
            "Networks are isolation boundaries",
            "Databases reach databases, frontends (and `other`, which is on the frontend "
            "network without a role label) reach each other; nothing crosses networks.",
            ("icmp", "tcp:3306"),
            same_net,
        ),
        Step(
            "Approach 1: profile rules — the database network accepts TCP 3306 from frontend",
            "A rule on the database network's profile lets the whole frontend network in on "
            "3306: that includes `other`, because a profile works per network, not per label.",
            ("icmp", "tcp:3306"),
            lambda a, b, c: (
                same_net(a, b, c)
                or (str(c) == "tcp:3306" and a.network == "frontend" and b.network == "database")
            ),
            apply=_profile(
                "database",
                "  - action: Allow\n    protocol: TCP\n    source:\n      selector: has(frontend)\n"
                "    destination:\n      ports: [3306]\n",
            ),
        ),
        Step(
            "Approach 2: labels and global policy — first, deny everything",
            "The database profile goes back to its default, and a GlobalNetworkPolicy that "
            "selects every container with no rules at all denies all traffic, in and out: once "
            "a policy applies to an endpoint its profiles are no longer consulted.",
            ("icmp", "tcp:3306"),
            lambda a, b, c: False,
            apply=_profile("database") + "---\n" + DEFAULT_DENY,
        ),
        Step(
            "Allow databases in from role=frontend on TCP 3306 (ingress)",
            "Still nothing gets through: the frontends' own egress is denied by default-deny, "
            "and a connection needs both ends' policy to allow it.",
            ("icmp", "tcp:3306"),
            lambda a, b, c: False,
            apply=DATABASE_INGRESS,
        ),
        Step(
            "Allow frontends out to role=database on TCP 3306 (egress)",
            "Now fe-1 and fe-2 reach both databases on 3306, across hosts. `other` shares the "
            "frontend network but has no role label, so the label-based policy keeps it out; "
            "ping is denied everywhere.",
            ("icmp", "tcp:3306"),
            _fe_to_db_3306,
            apply=FRONTEND_EGRESS,
        ),
    ),
)

TUTORIALS = (SIMPLE, ADVANCED)


# --- workload drivers -------------------------------------------------------------------------


class LabDriver:
    """Plain lab workloads, each with its network's profile, as the Docker driver would make
    them (for machines without Docker)."""

    kind = "lab workloads"

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.made: list[Container] = []

    def create_network(self, name: str) -> None:
        from tortie.api import load

        (profile,) = load(_profile(name))
        self.lab.client.apply(profile)

    def run(self, c: Container) -> mx.Target:
        w = self.lab.add_workload(
            c.node,
            c.name.lower(),  # a pod name: lower case
            labels=dict(c.labels),
            profiles=[c.network],
            static_route=False,
            host_sysctls=False,
        )
        self.made.append(c)
        return mx.Target(c.name, w.netns, w.ip)

    def cleanup(self, tutorial: Tutorial) -> None:
        for c in self.made:
            self.lab.remove_workload(c.name.lower())
        self.made.clear()
        for net in tutorial.networks:
            try:
                self.lab.client.delete("Profile", net)
            except Exception:
                pass


class DockerDriver:
    """Real Docker: `docker network create --driver tortie --ipam-driver tortie-ipam` on every
    node (networks are node-local in Docker), `docker run --net N --label ...` busybox."""

    kind = "Docker containers"

    def __init__(self, docker_nodes: dict[str, Any]) -> None:
        self.nodes = docker_nodes
        self.made: list[Container] = []

    def create_network(self, name: str) -> None:
        for dn in self.nodes.values():
            dn.docker(
                "network", "create", "--driver", "tortie", "--ipam-driver", "tortie-ipam", name
            )

    def run(self, c: Container) -> mx.Target:
        from tortie.lab.docker import IMAGE

        dn = self.nodes[c.node]
        labels = [a for k, v in c.labels for a in ("--label", f"{LABEL_PREFIX}{k}={v}")]
        dn.docker(
            "run", "-d", "--name", c.name, "--net", c.network, *labels, IMAGE, "sleep", "3600"
        )
        self.made.append(c)
        return mx.Target(
            c.name, f"pid:{dn.container_pid(c.name)}", dn.container_ip(c.name, c.network)
        )

    def cleanup(self, tutorial: Tutorial) -> None:
        for c in self.made:
            self.nodes[c.node].docker("rm", "-f", c.name, check=False)
        self.made.clear()
        for net in tutorial.networks:
            for dn in self.nodes.values():
                dn.docker("network", "rm", net, check=False)


# --- the runner --------------------------------------------------------------------------------


@dataclass
class StepResult:
    step: Step
    matrix: mx.Matrix
    changed: list[tuple[str, str, str]]
    differences: list[str]
    seconds: float


@dataclass
class TutorialRunner:
    tutorial: Tutorial
    driver: Any
    ctl: Callable[[Sequence[str], str | None], Any]  # runs tortiectl ARGS with optional stdin
    node_map: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    targets: list[mx.Target] = field(default_factory=list)
    containers: dict[str, Container] = field(default_factory=dict)
    last: mx.Matrix | None = None

    def setup(self) -> None:
        for net in self.tutorial.networks:
            self.driver.create_network(net)
        for c in self.tutorial.containers:
            c = Container(c.name, self.node_map.get(c.node, c.node), c.network, c.labels)
            self.containers[c.name] = c
            self.targets.append(self.driver.run(c))

    def expected(self, step: Step) -> dict[str, dict[str, dict[str, str]]]:
        checks = [mx.Check.parse(c) for c in step.checks]
        names = [t.name for t in self.targets]
        return {
            str(ch): {
                s: {
                    d: "allow"
                    if step.expect(self.containers[s], self.containers[d], ch)
                    else "deny"
                    for d in names
                    if d != s
                }
                for s in names
            }
            for ch in checks
        }

    def run_step(self, step: Step) -> StepResult:
        t0 = time.monotonic()
        for kind, name in step.delete:
            self.ctl(["delete", kind, name, "--skip-not-exists"], None)
        if step.apply:
            out = self.ctl(["apply", "-f", "-"], step.apply)
            if getattr(out, "returncode", 0) != 0:
                raise RuntimeError(f"tortiectl apply failed: {out.stderr}")
        want = self.expected(step)
        checks = [mx.Check.parse(c) for c in step.checks]
        deadline = time.monotonic() + self.timeout
        while True:
            result = mx.run(self.targets, checks, timeout=0.5)
            diffs = mx.differences(result, want)
            if not diffs or time.monotonic() > deadline:
                break
        changed = mx.changes(self.last, result)
        self.last = result
        return StepResult(step, result, changed, diffs, time.monotonic() - t0)

    def run(self) -> Iterable[StepResult]:
        for step in self.tutorial.steps:
            yield self.run_step(step)

    def cleanup(self) -> None:
        self.driver.cleanup(self.tutorial)
        leftovers = [
            ("GlobalNetworkPolicy", n)
            for n in ("default-deny", "database-ingress", "frontend-egress")
        ]
        # profiles a step replaced are the user's now: Docker leaves them behind
        leftovers += [("Profile", net) for net in self.tutorial.networks]
        for kind, name in leftovers:
            self.ctl(["delete", kind, name, "--skip-not-exists"], None)

"""Lab fixtures for end-to-end tests: namespaces, a real etcd, real Felix, real packets.

`felix_lab` (module scope) is a two-node lab whose nodes each run `tortie-felix` in their own
network namespace; workloads are plumbed without host sysctls or routes, so every route,
sysctl, chain and ipset that makes traffic flow is Felix's work. Cross-node routes between
the nodes' workload ranges are static until BGP exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tortie.api import validate
from tortie.felix.dataplane.netns import netns_unavailable_reason
from tortie.lab import Lab


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = netns_unavailable_reason()
    for item in items:
        item.add_marker(pytest.mark.root)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def eventually(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def resource(
    kind: str,
    name: str,
    spec: dict[str, Any],
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
) -> Any:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return validate(
        {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}
    )


class FelixLab:
    """A Lab plus running Felix processes, with helpers the tests share."""

    def __init__(self, lab: Lab, log_dir: str) -> None:
        self.lab = lab
        self.log_dir = log_dir
        self.felix: dict[str, subprocess.Popen[Any]] = {}
        self.created: list[tuple[str, str, str | None]] = []

    def felix_env(self, node: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FELIX_", "ETCD_"))}
        env.update(
            NODENAME=node,
            ETCD_ENDPOINTS=self.lab.etcd_endpoint,
            FELIX_HEALTHENABLED="true",
            FELIX_HEALTHHOST="127.0.0.1",
            FELIX_PROMETHEUSMETRICSENABLED="true",
            FELIX_IPTABLESREFRESHINTERVAL="3",
            FELIX_ROUTEREFRESHINTERVAL="3",
            FELIX_IPSETSREFRESHINTERVAL="3",
            FELIX_LOGSEVERITYSCREEN="Info",
        )
        env.update(extra)
        return env

    def start_felix(self, node: str, **extra: str) -> subprocess.Popen[Any]:
        log = open(os.path.join(self.log_dir, f"felix-{node}.log"), "a")  # noqa: SIM115
        proc = self.lab.spawn(
            node,
            [sys.executable, "-m", "tortie.felix.daemon"],
            name=f"felix-{node}",
            env=self.felix_env(node, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.felix[node] = proc
        return proc

    def stop_felix(self, node: str, sig: int = 15) -> None:
        proc = self.felix.pop(node)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def felix_ready(self, node: str, port: int = 9099) -> bool:
        import http.client

        from tortie.lab import netns

        def get() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            try:
                conn.request("GET", "/readiness")
                return conn.getresponse().status
            finally:
                conn.close()

        try:
            return netns.run_in(self.lab.netns_of(node), get) == 200
        except OSError:
            return False

    def http_get(self, node: str, port: int, path: str) -> str:
        import http.client

        from tortie.lab import netns

        def get() -> str:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", path)
                return conn.getresponse().read().decode()
            finally:
                conn.close()

        return netns.run_in(self.lab.netns_of(node), get)

    def apply(self, res: Any) -> Any:
        out, _ = self.lab.client.apply(res)
        key = (res.KIND, res.name, res.namespace if res.NAMESPACED else None)
        if key not in self.created:
            self.created.append(key)
        return out

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        self.lab.client.delete(kind, name, namespace)
        key = (kind, name, namespace)
        if key in self.created:
            self.created.remove(key)

    def cleanup_resources(self) -> None:
        from tortie.datastore.client import ResourceNotFound

        for kind, name, ns in reversed(self.created):
            try:
                self.lab.client.delete(kind, name, ns)
            except ResourceNotFound:
                pass
        self.created.clear()

    def iptables_save(self, node: str, table: str = "filter") -> str:
        return self.lab.exec(node, ["iptables-save", "-t", table], check=True).stdout


@pytest.fixture(scope="module")
def felix_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FelixLab]:
    log_dir = str(tmp_path_factory.mktemp("felix-logs"))
    lab = Lab(nodes=2, static_route=False, host_sysctls=False)
    lab.up()
    fl = FelixLab(lab, log_dir)
    try:
        lab.static_routes()
        # Egress is allowed everywhere unless a test says otherwise; ingress is the subject.
        fl.apply(
            resource(
                "GlobalNetworkPolicy",
                "zz-allow-all-egress",
                {"order": 10000, "types": ["Egress"], "egress": [{"action": "Allow"}]},
            )
        )
        fl.created.clear()  # module-wide: not removed between tests
        for node in ("node1", "node2"):
            fl.start_felix(node)
        for node in ("node1", "node2"):
            eventually(lambda n=node: fl.felix_ready(n), 30, f"felix on {node} ready")
        yield fl
    finally:
        for node in list(fl.felix):
            try:
                fl.stop_felix(node)
            except Exception:
                pass
        lab.down()
        for name in sorted(os.listdir(log_dir)):
            with open(os.path.join(log_dir, name)) as f:
                errors = [line for line in f if " error " in line]
            if errors:
                sys.stderr.write(f"--- {name} errors:\n{''.join(errors[-20:])}")


@pytest.fixture
def fl(felix_lab: FelixLab) -> Iterator[FelixLab]:
    """The module's lab; resources a test creates are deleted after it."""
    yield felix_lab
    felix_lab.cleanup_resources()

"""`Lab`: a Calico cluster inside network namespaces — bring-up, workloads, access, teardown.

A lab is a fabric namespace (bridges), an etcd namespace running etcd, N node namespaces and,
for ``two-subnets``, a router namespace (see `tortie.lab.topology` for names and addresses).
Nothing in it is reachable from the root namespace: users get in with `Lab.exec` /
`tortiectl lab exec`, and the lab process itself reaches etcd through `Lab.client`, whose
every call runs in a thread that has joined the etcd namespace with setns(2)
(`tortie.lab.netns.NetnsExecutor`). That choice keeps datastore calls in-process and cheap
(no interpreter start per write); it works because the etcd backend opens its connections
in the calling thread, and sockets keep the namespace they were created in.

Lifecycle. `up()` records the plan in the state file first (`tortie.lab.state`), then creates
namespaces and links with one `ip -batch` per namespace, starts etcd
(`tortie.lab.etcd.EtcdServer` with `netns=`), and writes a Node resource per node. Any failure
tears down what was made. `down()` is idempotent and works from any process: it kills the
lab's processes by recorded PID (start time checked), then anything else still running in a
lab namespace, deletes the namespaces (which removes the veths) and the lab's directories.
Labs owned by a process that died are found by `cleanup_stale()`.

Workloads are wired exactly as the CNI plugin does (`tortie.lab.workload`); until Felix runs,
the lab also sets the host-side sysctls (proxy ARP) and the /32 route, and `static_routes()`
stands in for BGP.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tortie.datastore.backend import KV, Compare, Op, TxnResult, Watcher, WatchEvent
from tortie.lab import netns, state
from tortie.lab.netns import LabError, NetnsExecutor
from tortie.lab.topology import LabPlan, NodePlan, plan
from tortie.lab.workload import (
    IPAllocator,
    RangeAllocator,
    Workload,
    check_name,
    host_sysctls,
    node_lines,
    veth_name,
    wep_name,
    workload_endpoint,
    workload_lines,
    workload_mac,
    workload_netns,
)

__all__ = ["Lab", "LabError", "NetnsBackend", "WorkloadRequest", "cleanup_stale", "down_lab"]

log = logging.getLogger("tortie.lab")

INFRA_TARGETS = ("etcd", "router", "fabric")


@dataclass(frozen=True)
class WorkloadRequest:
    """One workload to add (see `Lab.add_workload` for the fields)."""

    node: str
    name: str
    namespace: str = "default"
    ip: str | None = None
    labels: Mapping[str, str] | None = None
    profiles: Sequence[str] | None = None
    ports: Sequence[Mapping[str, Any]] | None = None
    static_route: bool | None = None
    host_sysctls: bool | None = None


# ---------------------------------------------------------------------------------------------
# Datastore access from inside the lab


class NetnsBackend:
    """A datastore `Backend` whose calls all run in a thread inside a lab namespace.

    The wrapped `EtcdBackend` is created in that thread too, so every connection it opens
    starts inside the namespace. Each watch gets a thread of its own (a blocked watch must not
    hold up other calls).
    """

    def __init__(self, ns: str, endpoints: Sequence[str]) -> None:
        self.ns = ns
        self._ex = NetnsExecutor(ns)
        try:
            self._inner = self._ex.call(_etcd_backend, list(endpoints))
        except BaseException:
            self._ex.close()
            raise

    def get(self, key: str) -> KV:
        return self._ex.call(self._inner.get, key)

    def list(self, prefix: str, revision: int | None = None) -> tuple[list[KV], int]:
        return self._ex.call(self._inner.list, prefix, revision)

    def create(self, key: str, value: bytes) -> KV:
        return self._ex.call(self._inner.create, key, value)

    def update(self, key: str, value: bytes, expect_revision: int | None) -> KV:
        return self._ex.call(self._inner.update, key, value, expect_revision)

    def put(self, key: str, value: bytes) -> KV:
        return self._ex.call(self._inner.put, key, value)

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> int:
        return self._ex.call(self._inner.put_many, list(items))

    def delete(self, key: str, expect_revision: int | None = None) -> KV | None:
        return self._ex.call(self._inner.delete, key, expect_revision)

    def delete_prefix(self, prefix: str) -> int:
        return self._ex.call(self._inner.delete_prefix, prefix)

    def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        return self._ex.call(self._inner.txn, list(compares), list(ops))

    def watch(self, prefix: str, start_revision: int) -> Watcher:
        ex = NetnsExecutor(self.ns)
        try:
            return _NetnsWatcher(ex, ex.call(self._inner.watch, prefix, start_revision))
        except BaseException:
            ex.close()
            raise

    def compact(self, revision: int) -> None:
        self._ex.call(self._inner.compact, revision)

    def current_revision(self) -> int:
        return self._ex.call(self._inner.current_revision)

    def close(self) -> None:
        try:
            self._ex.call(self._inner.close)
        finally:
            self._ex.close()


class _NetnsWatcher:
    def __init__(self, ex: NetnsExecutor, inner: Watcher) -> None:
        self._ex = ex
        self._inner = inner

    @property
    def revision(self) -> int:
        return self._inner.revision

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        return self

    def __next__(self) -> list[WatchEvent]:
        return self._ex.call(self._inner.__next__)

    def close(self) -> None:
        self._inner.close()  # closing a socket from any thread is fine
        self._ex.close()


def _etcd_backend(endpoints: list[str]) -> Any:
    from tortie.datastore.config import CalicoAPIConfig
    from tortie.datastore.etcd import EtcdBackend

    return EtcdBackend(CalicoAPIConfig.for_endpoints(endpoints))


# ---------------------------------------------------------------------------------------------
# Fabric rendering (pure)


def fabric_batches(p: LabPlan) -> dict[str, list[str]]:
    """`ip -batch` lines per namespace that build the fabric, in the order they must run:
    the fabric namespace first (it creates the veths and moves their peers), then the rest."""
    fab = ["link set lo up"]
    for s in p.subnets:
        fab += [f"link add {s.bridge} type bridge", f"link set {s.bridge} up"]
    if p.bridge_ip:
        fab.append(f"addr add {p.bridge_ip} dev {p.subnets[0].bridge}")
    bridge = {s.name: s.bridge for s in p.subnets}

    def attach(peer: str, ns: str, ifname: str, subnet: str) -> None:
        fab.extend(
            [
                f"link add {peer} type veth peer name {ifname} netns {ns}",
                f"link set {peer} master {bridge[subnet]} up",
            ]
        )

    out: dict[str, list[str]] = {p.fabric_netns: fab}
    e = p.etcd
    attach(e.fabric_peer, e.netns, "eth0", e.subnet)
    out[e.netns] = [
        "link set lo up",
        f"addr add {e.ip}/{e.prefix_len} dev eth0",
        "link set eth0 up",
    ] + ([f"route add default via {e.gateway}"] if e.gateway else [])
    if p.router:
        lines = ["link set lo up"]
        for subnet, (ifname, peer, cidr) in p.router.links.items():
            attach(peer, p.router.netns, ifname, subnet)
            lines += [f"addr add {cidr} dev {ifname}", f"link set {ifname} up"]
        out[p.router.netns] = lines
    for n in p.nodes:
        attach(n.fabric_peer, n.netns, n.fabric_if, n.subnet)
        out[n.netns] = [
            "link set lo up",
            f"addr add {n.cidr} dev {n.fabric_if}",
            f"link set {n.fabric_if} up",
            f"route add default via {n.gateway}",
        ]
    return out


def static_route_batches(p: LabPlan) -> dict[str, list[str]]:
    """Routes standing in for BGP: each node's workload range via that node's fabric IP
    (through the router when it is on the other subnet), a blackhole for a node's own range."""
    out: dict[str, list[str]] = {}
    for n in p.nodes:
        lines = [f"route replace blackhole {n.workload_cidr}"]
        for m in p.nodes:
            if m is n:
                continue
            via = m.ip if m.subnet == n.subnet else n.gateway
            lines.append(f"route replace {m.workload_cidr} via {via}")
        out[n.netns] = lines
    if p.router:
        out[p.router.netns] = [f"route replace {m.workload_cidr} via {m.ip}" for m in p.nodes]
    return out


def _parallel_batches(batches: Mapping[str, Sequence[str]]) -> None:
    """Run one `ip -batch` per namespace, several at a time."""
    items = [(ns, lines) for ns, lines in batches.items() if lines]
    if len(items) <= 1:
        for ns, lines in items:
            netns.ip_batch(ns, lines)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        for fut in [pool.submit(netns.ip_batch, ns, lines) for ns, lines in items]:
            fut.result()


# ---------------------------------------------------------------------------------------------
# The lab


class Lab:
    """A Calico cluster in network namespaces (see the module docstring).

    ``Lab(nodes=2, topology="flat")`` describes a new lab; `up()` builds it; `Lab.attach(id)`
    opens an existing one from its state file. ``nodes`` is a count (``node1``..``nodeN``) or a
    list of node names. ``owned`` (default True) ties the lab to this process: once the process
    is gone, `cleanup_stale()` removes it; ``owned=False`` labs live until `down()`.
    ``host_sysctls`` and ``static_route`` are the per-workload defaults for the plumbing Felix
    will own (proxy ARP and forwarding on the host side, the /32 route to the workload).
    """

    def __init__(
        self,
        nodes: int | list[str] | tuple[str, ...] = 2,
        topology: str = "flat",
        lab_id: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        *,
        fabric_cidr: str = "172.31.0.0/16",
        workload_cidr: str = "10.65.0.0/16",
        allocator: IPAllocator | None = None,
        write_nodes: bool = True,
        host_sysctls: bool = True,
        static_route: bool = True,
        owned: bool = True,
        etcd_timeout: float = 30.0,
    ) -> None:
        self.plan = plan(
            lab_id or secrets.token_hex(3),
            nodes,
            topology,
            fabric_cidr=fabric_cidr,
            workload_cidr=workload_cidr,
        )
        self._workdir = Path(workdir) if workdir else None
        self.allocator: IPAllocator = allocator or RangeAllocator(
            {n.name: n.workload_cidr for n in self.plan.nodes}
        )
        self.write_nodes = write_nodes
        self.host_sysctls = host_sysctls
        self.static_route = static_route
        self.owned = owned
        self.etcd_timeout = etcd_timeout
        self.state: state.LabState | None = None
        self._etcd: Any = None  # EtcdServer, when this process started it
        self._client: Any = None

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    def attach(cls, lab_id: str | None = None) -> Lab:
        """The existing lab `lab_id` (or the only lab, when there is exactly one)."""
        st = find_state(lab_id)
        lab = cls.__new__(cls)
        lab.plan = st.plan
        lab._workdir = Path(st.workdir)
        lab.allocator = RangeAllocator({n.name: n.workload_cidr for n in st.plan.nodes})
        lab.write_nodes = True
        lab.host_sysctls = True
        lab.static_route = True
        lab.owned = st.owner_pid is not None
        lab.etcd_timeout = 30.0
        lab.state = st
        lab._etcd = None
        lab._client = None
        return lab

    def __enter__(self) -> Lab:
        if self.state is None:
            self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def __repr__(self) -> str:
        phase = self.state.phase if self.state else "not created"
        return f"Lab({self.lab_id}, {self.plan.topology}, {len(self.plan.nodes)} nodes, {phase})"

    # --- properties ----------------------------------------------------------------------------
    @property
    def lab_id(self) -> str:
        return self.plan.lab_id

    @property
    def nodes(self) -> list[NodePlan]:
        return list(self.plan.nodes)

    def node(self, name: str) -> NodePlan:
        try:
            return self.plan.node(name)
        except KeyError:
            names = ", ".join(n.name for n in self.plan.nodes)
            raise LabError(f"lab {self.lab_id} has no node {name!r} (nodes: {names})") from None

    @property
    def etcd_endpoint(self) -> str:
        return self.plan.etcd.endpoint

    @property
    def workloads(self) -> list[Workload]:
        return list(self._state().workloads.values())

    def workload(self, name: str, namespace: str | None = None) -> Workload:
        """A workload by pod name (or ``namespace/name``)."""
        wls = self._state().workloads
        if namespace is None and "/" in name:
            namespace, name = name.split("/", 1)
        if namespace is not None:
            if f"{namespace}/{name}" in wls:
                return wls[f"{namespace}/{name}"]
        else:
            found = [w for w in wls.values() if w.name == name]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise LabError(f"workload name {name!r} is ambiguous: say namespace/{name}")
        raise LabError(f"lab {self.lab_id} has no workload {name!r}")

    @property
    def workdir(self) -> Path:
        return self._workdir or state.lab_dir(self.lab_id)

    def _state(self) -> state.LabState:
        if self.state is None:
            raise LabError(f"lab {self.lab_id} is not up")
        return self.state

    # --- up / down -------------------------------------------------------------------------------
    def up(self) -> Lab:
        """Build the lab; on any failure, tear down what was built and re-raise."""
        if self.state is not None:
            raise LabError(f"lab {self.lab_id} is already up")
        if os.geteuid() != 0:
            raise LabError("the lab needs root: it creates network namespaces")
        t0 = time.monotonic()
        p = self.plan
        clash = [ns for ns in p.namespaces if netns.namespace_exists(ns)]
        with state.locked(self.lab_id) as existing:
            if existing is not None or clash:
                raise LabError(f"lab id {self.lab_id} is already in use")
            self.workdir.mkdir(parents=True, exist_ok=True)
            # Owned while it is being built even when it will outlive us (`owned=False`), so
            # a crash half-way through leaves a stale lab that `cleanup_stale` removes.
            self.state = state.new_state(p, str(self.workdir), owned=True)
            self.state.remove_workdir = self._workdir is None
            state.save(self.state)
        try:
            self._build()
        except BaseException:
            log.warning("lab %s: bring-up failed; tearing down", self.lab_id)
            self.down()
            raise
        log.info(
            "lab %s up: %s, %d nodes, etcd %s (%.2fs)",
            self.lab_id,
            p.topology,
            len(p.nodes),
            self.etcd_endpoint,
            time.monotonic() - t0,
        )
        return self

    def _build(self) -> None:
        p = self.plan
        netns.create_namespaces(p.namespaces)
        batches = fabric_batches(p)
        netns.ip_batch(p.fabric_netns, batches.pop(p.fabric_netns))
        _parallel_batches(batches)
        forwarding = {"net/ipv4/ip_forward": "1"}
        sysctls = {n.netns: forwarding for n in p.nodes}
        if p.router:
            sysctls[p.router.netns] = forwarding
        netns.set_sysctls(sysctls)
        self._start_etcd()
        if self.write_nodes:
            self._write_nodes()

        def finish(st: state.LabState) -> None:
            st.phase = "up"
            if not self.owned:
                st.owner_pid = st.owner_start = None

        self._update(finish)

    def _start_etcd(self) -> None:
        from tortie.lab.etcd import EtcdServer

        e = self.plan.etcd
        server = EtcdServer(
            self.workdir / "etcd",
            name=f"tl{self.lab_id}-etcd",
            host=e.ip,
            client_port=e.port,
            netns=e.netns,
        )
        self._etcd = server
        server.start(timeout=self.etcd_timeout)
        pid = server.pid
        assert pid is not None
        rec = state.ProcessRecord("etcd", pid, netns.process_start_time(pid), e.netns)
        self._update(lambda st: st.processes.append(rec))

    def _write_nodes(self) -> None:
        from tortie.api import validate

        client = self.client
        docs = [
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "Node",
                "metadata": {"name": n.name},
                "spec": {"bgp": {"ipv4Address": n.cidr}},
            }
            for n in self.plan.nodes
        ]
        for doc in docs:
            client.apply(validate(doc))

    def down(self) -> None:
        """Tear the lab down (idempotent; safe after a partial `up` or from another process)."""
        t0 = time.monotonic()
        if self._client is not None:
            try:
                self._client.backend.close()
            except Exception as exc:
                log.debug("closing datastore client: %s", exc)
            self._client = None
        if self._etcd is not None:
            try:
                self._etcd.stop(timeout=5.0)
            except Exception as exc:
                log.warning("stopping etcd: %s", exc)
            self._etcd = None
        down_lab(self.lab_id)
        if self.state is not None:
            log.info("lab %s down (%.2fs)", self.lab_id, time.monotonic() - t0)
        self.state = None

    def _update(self, change: Any) -> None:
        with state.locked(self.lab_id) as st:
            if st is None:
                raise LabError(f"lab {self.lab_id} has no state any more (torn down?)")
            change(st)
            self.state = st

    # --- datastore -----------------------------------------------------------------------------
    @property
    def etcd(self) -> Any:
        """The lab's `EtcdServer` when this process started it (tests stop and restart it)."""
        return self._etcd

    @property
    def client(self) -> Any:
        """A `ResourceClient` on the lab's etcd (calls run inside the etcd namespace)."""
        if self._client is None:
            from tortie.datastore.client import ResourceClient

            self._client = ResourceClient(NetnsBackend(self.plan.etcd.netns, [self.etcd_endpoint]))
        return self._client

    # --- workloads -----------------------------------------------------------------------------
    def add_workload(
        self,
        node: str,
        name: str,
        ip: str | None = None,
        labels: Mapping[str, str] | None = None,
        namespace: str = "default",
        profiles: Sequence[str] | None = None,
        ports: Sequence[Mapping[str, Any]] | None = None,
        *,
        static_route: bool | None = None,
        host_sysctls: bool | None = None,
    ) -> Workload:
        """Create a workload namespace wired to `node` as the CNI plugin does, and write its
        WorkloadEndpoint. `ip` defaults to the next free address of the node's range."""
        req = WorkloadRequest(
            node, name, namespace, ip, labels, profiles, ports, static_route, host_sysctls
        )
        return self.add_workloads([req])[0]

    def add_workloads(self, requests: Iterable[WorkloadRequest]) -> list[Workload]:
        """Add many workloads with one `ip -batch` per node and per workload namespace."""
        reqs = list(requests)
        for r in reqs:
            self.node(r.node)
            check_name("pod name", r.name)
            check_name("namespace", r.namespace)
        t0 = time.monotonic()
        with state.locked(self.lab_id) as st:
            if st is None or st.phase != "up":
                raise LabError(f"lab {self.lab_id} is not up")
            self.state = st
            wls = self._plan_workloads(st, reqs)
            try:
                self._plumb(wls, reqs)
                if self.write_nodes:
                    self._write_weps(wls, reqs)
            except BaseException:
                self._unplumb(st, wls)
                if self.write_nodes:
                    self._forget_weps(wls)
                raise
        log.info(
            "lab %s: %d workload(s) added (%.2fs)", self.lab_id, len(wls), time.monotonic() - t0
        )
        return wls

    def _plan_workloads(self, st: state.LabState, reqs: list[WorkloadRequest]) -> list[Workload]:
        used = {w.ip for w in st.workloads.values()}
        wls = []
        for r in reqs:
            key = f"{r.namespace}/{r.name}"
            if key in st.workloads or any(w.key == key for w in wls):
                raise LabError(f"workload {key} already exists in lab {self.lab_id}")
            if r.ip is not None:
                if r.ip in used:
                    raise LabError(f"address {r.ip} is already used in lab {self.lab_id}")
                ip = r.ip
            else:
                ip = self.allocator.allocate(r.node, f"lab.{self.lab_id}.{key}", used)
            used.add(ip)
            wls.append(
                Workload(
                    node=r.node,
                    name=r.name,
                    namespace=r.namespace,
                    netns=workload_netns(self.lab_id, r.namespace, r.name),
                    ip=ip,
                    host_if=veth_name(r.namespace, r.name),
                    mac=workload_mac(self.lab_id, r.namespace, r.name),
                    wep=wep_name(r.node, r.name),
                    static_route=self.static_route if r.static_route is None else r.static_route,
                )
            )
        # Recorded before anything exists, so a crash from here on is cleaned up by `down`.
        for w in wls:
            st.workloads[w.key] = w
        state.save(st)
        return wls

    def _plumb(self, wls: list[Workload], reqs: list[WorkloadRequest]) -> None:
        netns.create_namespaces(w.netns for w in wls)
        per_node: dict[str, list[str]] = {}
        sysctls: dict[str, dict[str, str]] = {}
        for w, r in zip(wls, reqs, strict=True):
            ns = self.node(w.node).netns
            per_node.setdefault(ns, []).extend(node_lines(w))
            if self.host_sysctls if r.host_sysctls is None else r.host_sysctls:
                sysctls.setdefault(ns, {}).update(host_sysctls(w.host_if))
        _parallel_batches(per_node)
        _parallel_batches({w.netns: workload_lines(w) for w in wls})
        netns.set_sysctls(sysctls)

    def _write_weps(self, wls: list[Workload], reqs: list[WorkloadRequest]) -> None:
        from tortie.api import validate

        client = self.client
        for w, r in zip(wls, reqs, strict=True):
            doc = workload_endpoint(w, self.lab_id, r.labels, r.profiles, r.ports)
            client.apply(validate(doc))

    def _forget_weps(self, wls: list[Workload]) -> None:
        from tortie.datastore.client import ResourceError

        for w in wls:
            try:
                self.client.delete("WorkloadEndpoint", w.wep, w.namespace)
            except (ResourceError, LabError, OSError):
                pass

    def _unplumb(self, st: state.LabState, wls: list[Workload]) -> None:
        """Delete the host-side veths first, as CNI DEL does: namespace deletion is
        asynchronous in the kernel, so the node would otherwise keep them for a while."""
        per_node: dict[str, list[str]] = {}
        for w in wls:
            per_node.setdefault(self.node(w.node).netns, []).append(f"link del {w.host_if}")
        for ns, lines in per_node.items():
            netns.ip_batch(ns, lines, force=True)
        netns.delete_namespaces(w.netns for w in wls)
        # Forgotten only once gone: if deleting failed, `down` still knows to retry.
        for w in wls:
            st.workloads.pop(w.key, None)
        state.save(st)

    def remove_workload(self, name: str, namespace: str = "default") -> None:
        """Delete the workload's WorkloadEndpoint and namespace (its veth goes with it)."""
        from tortie.datastore.client import ResourceNotFound

        with state.locked(self.lab_id) as st:
            if st is None:
                raise LabError(f"lab {self.lab_id} is not up")
            self.state = st
            w = self.workload(name, namespace)
            if self.write_nodes:
                try:
                    self.client.delete("WorkloadEndpoint", w.wep, w.namespace)
                except ResourceNotFound:
                    pass
            self._unplumb(st, [w])
            self.allocator.release(w.node, f"lab.{self.lab_id}.{w.key}", w.ip)

    # --- routing -----------------------------------------------------------------------------
    def static_routes(self) -> None:
        """Route every node's workload range to that node over the fabric (stands in for BGP)."""
        _parallel_batches(static_route_batches(self.plan))
        self._update(lambda st: setattr(st, "static_routes", True))

    # --- access --------------------------------------------------------------------------------
    def netns_of(self, target: str) -> str:
        """The namespace of a target: a node name, a workload (``pod`` or ``ns/pod``),
        ``etcd``, ``router``, ``fabric``, or one of the lab's namespace names."""
        p = self.plan
        if target == "etcd":
            return p.etcd.netns
        if target == "router":
            if p.router is None:
                raise LabError(f"lab {self.lab_id} ({p.topology}) has no router")
            return p.router.netns
        if target == "fabric":
            return p.fabric_netns
        for n in p.nodes:
            if n.name == target:
                return n.netns
        if target in self._state().namespaces:
            return target
        return self.workload(target).netns

    def exec(
        self,
        target: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        capture: bool = True,
        timeout: float | None = 60.0,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the target's network namespace (`nsenter --net`)."""
        return subprocess.run(
            netns.nsenter_argv(self.netns_of(target), argv),
            check=check,
            capture_output=capture,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            input=input,
        )

    def spawn(
        self, target: str, argv: Sequence[str], name: str | None = None, **popen: Any
    ) -> subprocess.Popen[Any]:
        """Start a long-running process inside a target; `down()` kills it."""
        ns = self.netns_of(target)
        proc = subprocess.Popen(netns.nsenter_argv(ns, argv), **popen)
        rec = state.ProcessRecord(
            name or os.path.basename(argv[0]), proc.pid, netns.process_start_time(proc.pid), ns
        )
        self._update(lambda st: st.processes.append(rec))
        return proc

    def ping(self, target: str, ip: str, timeout: float = 1.0) -> bool:
        """One ICMP echo from inside the target to `ip`."""
        return netns.ping(self.netns_of(target), ip, timeout)

    def wait_ping(self, target: str, ip: str, timeout: float = 5.0) -> None:
        """Ping until a reply comes back; raise LabError after `timeout` seconds."""
        netns.wait_for(
            lambda: self.ping(target, ip, timeout=0.3), timeout, f"{target} to reach {ip}"
        )

    def ctl_argv(self, args: Sequence[str]) -> list[str]:
        """The command running ``tortiectl ARGS`` inside the etcd namespace (see `ctl_env`)."""
        return netns.nsenter_argv(
            self.plan.etcd.netns, [sys.executable, "-m", "tortie.ctl.main", *args]
        )

    def ctl_env(self) -> dict[str, str]:
        """The environment for `ctl_argv`: the lab's etcd, and this tortie on the path."""
        import tortie

        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "CALICO_"))}
        env.update(DATASTORE_TYPE="etcdv3", ETCD_ENDPOINTS=self.etcd_endpoint)
        root = str(Path(tortie.__file__).resolve().parent.parent)
        paths = [root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def ctl(
        self, args: Sequence[str], input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run tortiectl against the lab's etcd, as a user would."""
        return subprocess.run(
            self.ctl_argv(args),
            env=self.ctl_env(),
            capture_output=True,
            text=True,
            input=input,
            check=False,
            timeout=60,
        )

    # --- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Plain data describing the lab (what `tortiectl lab status` prints)."""
        st = self._state()
        return status_of(st)


# ---------------------------------------------------------------------------------------------
# Module-level operations (work from the state file alone)


def status_of(st: state.LabState) -> dict[str, Any]:
    p = st.plan
    return {
        "id": p.lab_id,
        "topology": p.topology,
        "phase": st.phase,
        "owner": st.owner_pid,
        "owner_alive": state.owner_alive(st),
        "workdir": st.workdir,
        "etcd": {"endpoint": p.etcd.endpoint, "netns": p.etcd.netns},
        "router": p.router.netns if p.router else None,
        "nodes": [
            {
                "name": n.name,
                "netns": n.netns,
                "ip": n.cidr,
                "subnet": n.subnet,
                "workload_cidr": n.workload_cidr,
            }
            for n in p.nodes
        ],
        "workloads": [
            {
                "name": w.name,
                "namespace": w.namespace,
                "node": w.node,
                "ip": w.ip,
                "interface": w.host_if,
                "endpoint": w.wep,
                "netns": w.netns,
            }
            for w in st.workloads.values()
        ],
        "namespaces": {ns: netns.namespace_exists(ns) for ns in st.namespaces},
        "processes": [
            {
                "name": pr.name,
                "pid": pr.pid,
                "netns": pr.netns,
                "alive": pr.start_time is not None
                and netns.process_start_time(pr.pid) == pr.start_time,
            }
            for pr in st.processes
        ],
        "static_routes": st.static_routes,
    }


def find_state(lab_id: str | None) -> state.LabState:
    """The state of lab `lab_id`, or of the only lab when `lab_id` is None."""
    if lab_id is not None:
        st = state.load(lab_id)
        if st is None:
            raise LabError(f"no lab with id {lab_id!r}")
        return st
    labs = state.all_states()
    if not labs:
        raise LabError("no lab is running (start one with `tortiectl lab up`)")
    if len(labs) > 1:
        ids = ", ".join(s.lab_id for s in labs)
        raise LabError(f"{len(labs)} labs are running ({ids}): say which")
    return labs[0]


def down_lab(lab_id: str) -> bool:
    """Tear down lab `lab_id` from its state file; False if there was no such lab."""
    with state.locked(lab_id) as st:
        if st is None:
            return False
        st.phase = "deleting"
        state.save(st)
        netns.kill_pids({pr.pid: pr.start_time for pr in st.processes})
        namespaces = st.namespaces
        inodes = [i for i in (netns.namespace_inode(ns) for ns in namespaces) if i is not None]
        stray = netns.pids_in_namespaces(inodes)
        if stray:
            log.info("lab %s: killing %d process(es) left in its namespaces", lab_id, len(stray))
            netns.kill_pids({pid: netns.process_start_time(pid) for pid in stray}, grace=1.0)
        netns.delete_namespaces(namespaces)
        workdir = Path(st.workdir)
        shutil.rmtree(workdir / "etcd", ignore_errors=True)
        if st.remove_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(state.lab_dir(lab_id), ignore_errors=True)
    return True


def cleanup_stale() -> list[str]:
    """Tear down every lab whose owner process has died; return their ids."""
    removed = []
    for st in state.all_states():
        if not state.owner_alive(st):
            log.info("lab %s: owner pid %s is gone; tearing it down", st.lab_id, st.owner_pid)
            if down_lab(st.lab_id):
                removed.append(st.lab_id)
    return removed

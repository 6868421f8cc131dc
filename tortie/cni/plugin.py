"""The `tortie` CNI plugin (Calico's `calico`): what each CNI command does, and `run()`.

`run(plugin, env, stdin, ctx)` executes one invocation of `tortie` or `tortie-ipam` and
returns the exit code and stdout. It is the same code whether it runs in the plugin process
itself or in the node's CNI daemon (`tortie.cni.daemon`), which keeps datastore connections
and the IPAM client warm between invocations (`Context`).

ADD (Calico's `cmdAdd`):
  0. identifiers (`tortie.cni.endpoint`), the WorkloadEndpoint drafted and validated (bad
     labels or names fail here, before anything exists), ClusterInformation not "not ready";
  1. an endpoint of this workload already exists (a plain-CNI container added to another
     network): it is reused: the network's profile is appended to it and its addresses are
     the result; no IPAM, no veth (Calico's behaviour);
  2. otherwise: IPAM (`tortie.cni.ipam.delegate`), the veth (`tortie.cni.dataplane`), the
     network's Profile unless a policy plugin is configured (`policy.type`), and the
     WorkloadEndpoint (orchestrator `k8s` or `cni`, profiles `kns.<namespace>` under
     `policy.type: k8s`, else the network name), in that order. A failure at any step undoes
     the earlier ones in reverse (address released, veth deleted, endpoint deleted): a failed
     ADD leaves nothing behind;
  3. the result: the host-side and container interfaces, the /32 (/128) addresses on the
     container interface, the default route(s), merged after a chained `prevResult`.
DEL: the endpoint (for a pod, only if it still belongs to this container ID, as in Calico),
  the container interface (and the host side when it is this workload's), then the IPAM
  handle. Each piece may be missing already; DEL then still succeeds.
CHECK: the endpoint, the veth pair, addresses, routes, MAC and the IPAM handle against the
  `prevResult`; every difference is listed in the error (code 104).
STATUS: the datastore answers and is ready, and IPAM can assign (error 50 otherwise).
GC: endpoints of this network on this node whose container is not among
  `cni.dev/valid-attachments` are removed with their veth, and IPAM garbage-collects.

Errors are CNI error JSON (`tortie.cni.spec`): datastore unreachable or not ready -> 11 (try
again later); no free address -> 102; netlink failures -> 103; bad configuration -> 7.

Logging is quiet: warnings and errors go to stderr, and everything at `log_level` goes to
`log_file_path` when the configuration names one.

Test hook: `TORTIE_CNI_FAILPOINT=<step>[,<step>]` in the environment makes ADD fail at that
step (`ipam`, `veth`, `profile`, `endpoint-write`, `after-endpoint`), to prove the rollback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from tortie.cni import dataplane
from tortie.cni.config import NetConf, parse_netconf
from tortie.cni.endpoint import (
    CNI,
    K8S,
    WorkloadIDs,
    build_endpoint,
    delete_endpoint,
    delete_endpoint_named,
    ensure_profile,
    find_endpoint,
    get_endpoint,
    write_endpoint,
)
from tortie.cni.ipam import delegate, ipam_commands
from tortie.cni.spec import (
    CHECK_FAILED,
    CURRENT_VERSION,
    DATAPLANE_ERROR,
    DATASTORE_ERROR,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    IPAM_PLUGIN_ERROR,
    NO_ADDRESSES,
    PLUGIN_ERROR,
    PLUGIN_NOT_AVAILABLE,
    SUPPORTED_VERSIONS,
    TRY_AGAIN_LATER,
    CmdArgs,
    CNIError,
    Interface,
    IPConfig,
    Result,
    Route,
    check_version,
    cmd_args_from_env,
    merge_results,
    parse_version,
    sandbox_addresses,
    version_info,
)

__all__ = ["Context", "Invocation", "main", "run"]

PLUGINS = ("tortie", "tortie-ipam")

# ---------------------------------------------------------------------------------------------
# Logging

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "fatal": 50,
           "panic": 50}
_FILES: dict[str, Any] = {}
_FILES_LOCK = threading.Lock()


class RequestLog:
    """Log lines of one invocation: to `log_file_path` at `log_level`, warnings to stderr."""

    def __init__(self, conf: NetConf, args: CmdArgs, plugin: str, *, to_stderr: bool,
                 sink: Callable[[int, str], None] | None = None) -> None:
        self.level = _LEVELS.get(conf.log_level, 20)
        self.path = conf.log_file_path
        self.prefix = f"[{os.getpid()}][{plugin}] {args.command} {args.container_id[:12]}"
        self.to_stderr = to_stderr
        self.sink = sink

    def _emit(self, level: int, name: str, msg: str, *fmt: Any) -> None:
        if level < self.level and not (self.to_stderr and level >= 30):
            return
        text = msg % fmt if fmt else msg
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{name}]{self.prefix}: {text}\n"
        if self.to_stderr and level >= 30:
            sys.stderr.write(line)
        if level < self.level:
            return
        if self.sink is not None:
            self.sink(level, line)
        if self.path:
            with _FILES_LOCK:
                fh = _FILES.get(self.path)
                if fh is None:
                    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                    fh = _FILES[self.path] = open(self.path, "a")  # noqa: SIM115
                fh.write(line)
                fh.flush()

    def debug(self, msg: str, *fmt: Any) -> None:
        self._emit(10, "DEBUG", msg, *fmt)

    def info(self, msg: str, *fmt: Any) -> None:
        self._emit(20, "INFO", msg, *fmt)

    def warning(self, msg: str, *fmt: Any) -> None:
        self._emit(30, "WARNING", msg, *fmt)

    def error(self, msg: str, *fmt: Any) -> None:
        self._emit(40, "ERROR", msg, *fmt)


# ---------------------------------------------------------------------------------------------
# Context and invocation


class Context:
    """What outlives one invocation: a datastore backend and an IPAM client per datastore
    configuration. A plugin process makes one for its single request; the daemon keeps one
    (`long_lived`: the IPAM client then keeps pools and config in memory with a watch)."""

    def __init__(self, *, long_lived: bool = False,
                 sink: Callable[[int, str], None] | None = None) -> None:
        self.long_lived = long_lived
        self.sink = sink
        self._lock = threading.Lock()
        self._backends: dict[Any, Any] = {}
        self._ipams: dict[Any, Any] = {}
        self._seen: dict[Any, float] = {}
        self.reaper = dataplane.Reaper() if long_lived else None

    def _key(self, inv: Invocation) -> Any:
        return inv.datastore_key

    def backend(self, inv: Invocation) -> Any:
        key = self._key(inv)
        with self._lock:
            backend = self._backends.get(key)
            if backend is None:
                from tortie.datastore.etcd import EtcdBackend

                backend = self._backends[key] = EtcdBackend(key, timeout=30.0)
            return backend

    def resources(self, inv: Invocation) -> Any:
        from tortie.datastore.client import ResourceClient

        return ResourceClient(self.backend(inv))

    def ipam(self, inv: Invocation) -> Any:
        key = self._key(inv)
        backend = self.backend(inv)
        with self._lock:
            client = self._ipams.get(key)
            if client is None:
                from tortie.ipam import IPAMClient

                client = self._ipams[key] = IPAMClient(backend, watch=self.long_lived)
            return client

    def seen_recently(self, inv: Invocation, what: str) -> bool:
        """Whether `what` (the datastore being ready, a profile existing) was confirmed in
        the last second: the daemon then spares the round trip. Always False one-shot."""
        at = self._seen.get((self._key(inv), what))
        return self.long_lived and at is not None and time.monotonic() - at < 1.0

    def saw(self, inv: Invocation, what: str) -> None:
        if self.long_lived:
            self._seen[(self._key(inv), what)] = time.monotonic()

    def close(self) -> None:
        if self.reaper is not None:
            self.reaper.close()
        with self._lock:
            for client in self._ipams.values():
                client.close()
            for backend in self._backends.values():
                backend.close()
            self._ipams.clear()
            self._backends.clear()


@dataclass
class Invocation:
    plugin: str
    ctx: Context
    args: CmdArgs
    conf: NetConf
    env: Mapping[str, str]
    log: RequestLog

    @cached_property
    def datastore_key(self) -> Any:
        """The CalicoAPIConfig for this invocation (it also keys the Context's caches)."""
        return self.conf.datastore_config(self.env)

    @property
    def ids(self) -> WorkloadIDs:
        return WorkloadIDs.from_args(self.args, self.conf.nodename, self.conf.name)

    def failpoint(self, step: str) -> None:
        points = self.env.get("TORTIE_CNI_FAILPOINT", "")
        if points and step in points.split(","):
            raise CNIError(PLUGIN_ERROR, f"failpoint {step} (TORTIE_CNI_FAILPOINT)")

    def prev_result(self) -> Result:
        if self.conf.prev_result is None:
            raise CNIError(INVALID_CONFIG, f"{self.args.command} needs prevResult in the network "
                           "configuration")
        return Result.from_json(self.conf.prev_result)


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_ready(inv: Invocation) -> None:
    """Calico refuses work while ClusterInformation says the datastore is not ready (an
    upgrade in progress). A missing ClusterInformation counts as ready."""
    from tortie.datastore import keys
    from tortie.datastore.backend import KeyNotFound

    if inv.ctx.seen_recently(inv, "ready"):
        return
    try:
        kv = inv.ctx.backend(inv).get(keys.resource_key("ClusterInformation", "default"))
        ready = json.loads(kv.value).get("spec", {}).get("datastoreReady")
    except (KeyNotFound, ValueError, AttributeError):
        ready = None
    if ready is False:
        raise CNIError(TRY_AGAIN_LATER, "Calico is currently not ready to process requests",
                       "ClusterInformation default has datastoreReady: false")
    inv.ctx.saw(inv, "ready")


def _profiles(inv: Invocation, ids: WorkloadIDs) -> list[str]:
    if ids.orchestrator == K8S and inv.conf.policy_type == "k8s":
        return [f"kns.{ids.namespace}"]
    return [inv.conf.name]


def _host_routes(ips: list[Any], gw6: str | None) -> list[Route]:
    routes = []
    if any(ip.version == 4 for ip in ips):
        routes.append(Route("0.0.0.0/0", dataplane.GATEWAY_V4))
    if any(ip.version == 6 for ip in ips):
        routes.append(Route("::/0", gw6))
    return routes


def _own_result(inv: Invocation, host_if: str, mac: str, ips: list[Any],
                gw6: str | None) -> Result:
    conf, args = inv.conf, inv.args
    own = Result(
        interfaces=[
            Interface(host_if, dataplane.HOST_MAC, mtu=conf.mtu or None),
            Interface(args.ifname, mac, sandbox=args.netns, mtu=conf.mtu or None),
        ],
        ips=[IPConfig(ip, interface=1) for ip in ips],
        routes=_host_routes(ips, gw6),
        dns=dict(conf.dns),
    )
    prev = Result.from_json(conf.prev_result) if conf.prev_result is not None else None
    return merge_results(prev, own)


def _as_host_prefix(ip: Any) -> Any:
    return ipaddress.ip_interface(f"{ip.ip}/{ip.max_prefixlen}")


def _rollback(inv: Invocation, undo: list[tuple[str, Callable[[], Any]]]) -> None:
    for what, fn in reversed(undo):
        try:
            fn()
            inv.log.info("rolled back %s", what)
        except Exception as exc:  # keep undoing the rest; the original error is reported
            inv.log.error("rollback of %s failed: %s", what, exc)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_add(inv: Invocation) -> Result:
    args, conf = inv.args, inv.conf
    ids = inv.ids
    backend = inv.ctx.backend(inv)
    profiles = _profiles(inv, ids)
    # Drafted first so that invalid labels or names fail before anything is created.
    build_endpoint(ids, ip_networks=["10.0.0.1/32"], interface_name=ids.veth_name,
                   mac=dataplane.HOST_MAC, profiles=profiles, labels=conf.labels)
    _check_ready(inv)
    existing = find_endpoint(backend, ids)
    if existing is not None and ids.orchestrator == CNI:
        return _reuse_endpoint(inv, existing)

    undo: list[tuple[str, Callable[[], Any]]] = []
    try:
        ipam_result = delegate(inv, "ADD")
        undo.append(("IPAM allocation", lambda: delegate(inv, "DEL")))
        if ipam_result is None or not ipam_result.ips:
            raise CNIError(IPAM_PLUGIN_ERROR, "IPAM plugin returned no IP addresses")
        ips = [_as_host_prefix(ip.address) for ip in ipam_result.ips]
        inv.failpoint("veth")
        plumbed = dataplane.setup(args.netns, args.ifname, ids.veth_name, ips, mtu=conf.mtu,
                                  queues=conf.num_queues,
                                  allow_ip_forwarding=conf.allow_ip_forwarding,
                                  reaper=inv.ctx.reaper)
        undo.append(("veth", lambda: dataplane.teardown(args.netns, args.ifname,
                                                        plumbed.host_ifname)))
        if not conf.policy_type and not inv.ctx.seen_recently(inv, f"profile {conf.name}"):
            inv.failpoint("profile")
            ensure_profile(backend, conf.name, ids.orchestrator)
            inv.ctx.saw(inv, f"profile {conf.name}")
        wep = build_endpoint(ids, ip_networks=[str(ip) for ip in ips],
                             interface_name=plumbed.host_ifname, mac=plumbed.container_mac,
                             profiles=profiles, labels=conf.labels)
        undo.append(("WorkloadEndpoint", lambda: _delete_if_ours(inv, ids)))
        inv.failpoint("endpoint-write")
        write_endpoint(backend, wep, existing)
        inv.failpoint("after-endpoint")
    except BaseException:
        _rollback(inv, undo)
        raise
    inv.log.info("added %s: %s on %s", ids.wep_name, ", ".join(map(str, ips)),
                 plumbed.host_ifname)
    return _own_result(inv, plumbed.host_ifname, plumbed.container_mac, ips,
                       plumbed.ipv6_gateway)


def _delete_if_ours(inv: Invocation, ids: WorkloadIDs) -> None:
    backend = inv.ctx.backend(inv)
    wep = get_endpoint(backend, ids.namespace, ids.wep_name)
    if wep is not None and wep.spec.container_id == ids.container_id:
        delete_endpoint(backend, wep)


def _reuse_endpoint(inv: Invocation, wep: Any) -> Result:
    """Calico: a container already known (added to another network) keeps its endpoint;
    the network's profile is added to it and its addresses are the result."""
    conf = inv.conf
    backend = inv.ctx.backend(inv)
    profiles = list(wep.spec.profiles or [])
    if conf.name not in profiles:
        wep.spec.profiles = [*profiles, conf.name]
        write_endpoint(backend, wep, wep)
    if not conf.policy_type:
        ensure_profile(backend, conf.name, CNI)
    ips = [ipaddress.ip_interface(n) for n in wep.spec.ip_networks or []]
    inv.log.info("reused endpoint %s (profile %s)", wep.name, conf.name)
    own = Result(
        interfaces=[
            Interface(wep.spec.interface_name or "", dataplane.HOST_MAC),
            Interface(wep.spec.endpoint or inv.args.ifname, wep.spec.mac or "",
                      sandbox=inv.args.netns),
        ],
        ips=[IPConfig(ip, interface=1) for ip in ips],
        routes=_host_routes(ips, None),
        dns=dict(conf.dns),
    )
    prev = Result.from_json(conf.prev_result) if conf.prev_result is not None else None
    return merge_results(prev, own)


def cmd_del(inv: Invocation) -> None:
    args = inv.args
    ids = inv.ids
    backend = inv.ctx.backend(inv)
    _check_ready(inv)
    host_if: str | None = ids.veth_name if ids.orchestrator == CNI else None
    # A plain container's endpoint is named after its container ID: it is this container's,
    # and Calico deletes it by name. A pod's is named after the pod and may belong to a newer
    # sandbox: read it first and delete it only if it is still this container's.
    wep = None
    if ids.orchestrator == CNI:
        if delete_endpoint_named(backend, ids.namespace, ids.wep_name):
            inv.log.info("deleted endpoint %s", ids.wep_name)
    else:
        wep = get_endpoint(backend, ids.namespace, ids.wep_name)
    for _ in range(5):
        if wep is None:
            break
        if ids.orchestrator == K8S and wep.spec.container_id not in (None, "", ids.container_id):
            inv.log.warning("endpoint %s belongs to container %s, not %s: kept", wep.name,
                            wep.spec.container_id, ids.container_id)
            break
        host_if = wep.spec.interface_name or host_if
        if delete_endpoint(backend, wep):
            inv.log.info("deleted endpoint %s", wep.name)
            break
        wep = get_endpoint(backend, ids.namespace, ids.wep_name)  # changed meanwhile: retry
    else:
        raise CNIError(TRY_AGAIN_LATER, f"endpoint {ids.wep_name} kept changing while it was "
                       "being deleted")
    dataplane.teardown(args.netns, args.ifname, host_if, inv.ctx.reaper)
    delegate(inv, "DEL")


def cmd_check(inv: Invocation) -> None:
    args = inv.args
    ids = inv.ids
    prev = inv.prev_result()
    ips = [_as_host_prefix(ip.address) for ip in sandbox_addresses(prev, args.ifname, args.netns)]
    if not ips:
        raise CNIError(CHECK_FAILED, f"prevResult has no address for {args.ifname}")
    backend = inv.ctx.backend(inv)
    wep = get_endpoint(backend, ids.namespace, ids.wep_name) or find_endpoint(backend, ids)
    problems: list[str] = []
    host_if, mac = ids.veth_name, ""
    if wep is None:
        problems.append(f"WorkloadEndpoint {ids.namespace}/{ids.wep_name} does not exist")
    else:
        host_if, mac = wep.spec.interface_name or host_if, wep.spec.mac or ""
        want = sorted(str(ip) for ip in ips)
        have = sorted(wep.spec.ip_networks or [])
        if want != have:
            problems.append(f"WorkloadEndpoint {wep.name} has ipNetworks {have}, expected {want}")
        if wep.spec.container_id != ids.container_id:
            problems.append(f"WorkloadEndpoint {wep.name} belongs to container "
                            f"{wep.spec.container_id}")
    problems += dataplane.check(args.netns, args.ifname, host_if, ips, mac)
    if problems:
        raise CNIError(CHECK_FAILED, "container networking is not as ADD left it",
                       "; ".join(problems))
    delegate(inv, "CHECK")


def cmd_status(inv: Invocation) -> None:
    from tortie.datastore.backend import DatastoreError

    try:
        _check_ready(inv)
    except DatastoreError as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, "the datastore is not available", str(exc)) from None
    except CNIError as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, exc.msg, exc.details) from None
    delegate(inv, "STATUS")


def cmd_gc(inv: Invocation) -> None:
    """Remove this network's endpoints on this node that the runtime no longer knows."""
    from tortie.api import lookup
    from tortie.datastore import keys
    from tortie.datastore.backend import KeyNotFound
    from tortie.datastore.client import ResourceDataError

    conf = inv.conf
    valid = {cid for cid, _ in conf.valid_attachments or ()}
    backend = inv.ctx.backend(inv)
    client = inv.ctx.resources(inv)
    info = lookup("WorkloadEndpoint")
    assert info is not None
    kvs, _ = backend.list(keys.resource_prefix("WorkloadEndpoint"))
    for kv in kvs:
        try:
            wep = client.decode(info, kv)
        except ResourceDataError:  # not ours to judge
            continue
        spec = wep.spec
        if (spec.node != conf.nodename or spec.orchestrator not in (CNI, K8S)
                or not spec.container_id or spec.container_id in valid):
            continue
        ours = conf.name in (spec.profiles or [])
        if not ours:
            try:
                backend.get(keys.handle_key(f"{conf.name}.{spec.container_id}"))
                ours = True
            except KeyNotFound:
                pass
        if not ours:
            continue
        if delete_endpoint(backend, wep):
            inv.log.info("GC: deleted endpoint %s (container %s is gone)", wep.name,
                         spec.container_id)
        if spec.interface_name:
            dataplane.teardown("", "", spec.interface_name)
    delegate(inv, "GC")


TORTIE_COMMANDS: dict[str, Callable[[Invocation], Any]] = {
    "ADD": cmd_add,
    "DEL": cmd_del,
    "CHECK": cmd_check,
    "STATUS": cmd_status,
    "GC": cmd_gc,
}

# Commands that need at least this configuration version (as the CNI library's skel checks).
_MIN_VERSION = {"CHECK": (0, 4, 0), "STATUS": (1, 1, 0), "GC": (1, 1, 0)}


# ---------------------------------------------------------------------------------------------
# Entry points


def to_cni_error(exc: BaseException) -> CNIError:
    """Any failure as the CNI error the runtime should see."""
    if isinstance(exc, CNIError):
        return exc
    from tortie.cni.netlink import NamespaceError
    from tortie.datastore.backend import DatastoreError, Unavailable

    if isinstance(exc, Unavailable):
        return CNIError(TRY_AGAIN_LATER, "the datastore is not available", str(exc))
    if isinstance(exc, DatastoreError):
        return CNIError(DATASTORE_ERROR, "datastore error", str(exc))
    if isinstance(exc, NamespaceError):
        return CNIError(DATAPLANE_ERROR, "network namespace error", str(exc))
    if "tortie.ipam" in sys.modules:
        from tortie import ipam

        if isinstance(exc, ipam.PoolsExhausted | ipam.NoMatchingPool):
            return CNIError(NO_ADDRESSES, "no IP address available", str(exc))
        if isinstance(exc, ipam.TooManyConflicts):
            return CNIError(TRY_AGAIN_LATER, "IPAM is too busy", str(exc))
        if isinstance(exc, ipam.IPAMError):
            return CNIError(PLUGIN_ERROR, "IPAM error", str(exc))
    return CNIError(PLUGIN_ERROR, f"{type(exc).__name__}", str(exc))


def _peek_version(stdin: bytes) -> str:
    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return CURRENT_VERSION
    return version if version in SUPPORTED_VERSIONS else CURRENT_VERSION


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def run(plugin: str, env: Mapping[str, str], stdin: bytes,
        ctx: Context | None = None) -> tuple[int, bytes]:
    """Execute one invocation of `plugin` ("tortie" or "tortie-ipam"): (exit code, stdout)."""
    own_ctx = ctx is None
    context = ctx if ctx is not None else Context()
    version = _peek_version(stdin)  # errors are written in the configuration's version
    log: RequestLog | None = None
    try:
        args = cmd_args_from_env(env, stdin)
        if args.command == "VERSION":
            return 0, _dumps(version_info())
        conf = parse_netconf(stdin)
        version = check_version(conf.cni_version)
        need = _MIN_VERSION.get(args.command)
        if need and parse_version(version) < need:
            raise CNIError(INCOMPATIBLE_VERSION, f"config version {version} does not allow "
                           f"{args.command}")
        log = RequestLog(conf, args, plugin, to_stderr=not context.long_lived,
                         sink=context.sink)
        commands = TORTIE_COMMANDS if plugin == "tortie" else ipam_commands()
        inv = Invocation(plugin, context, args, conf, env, log)
        result = commands[args.command](inv)
        if args.command == "ADD":
            return 0, _dumps(result.to_json(version))
        return 0, b""
    except Exception as exc:
        err = to_cni_error(exc)
        if log is not None:
            log.error("%s failed: %s (code %d)", env.get("CNI_COMMAND", "?"), err, err.code)
        return 1, _dumps(err.to_json(version))
    finally:
        if own_ctx:
            context.close()


def main(plugin: str = "tortie") -> int:
    """The plugin process without a daemon: read stdin, run, print."""
    stdin = sys.stdin.buffer.read()
    code, out = run(plugin, os.environ, stdin)
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return code

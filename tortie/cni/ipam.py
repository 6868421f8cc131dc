"""IPAM for the CNI plugin: the `tortie-ipam` plugin, and delegation to any IPAM plugin.

`tortie-ipam` is Calico's `calico-ipam` over `tortie.ipam`:

- ADD: with `IP=<addr>` in `CNI_ARGS`, that address (`assign_ip`); otherwise one IPv4
  address unless `ipam.assign_ipv4` is "false" and one IPv6 address when `ipam.assign_ipv6`
  is "true", from `ipam.ipv4_pools`/`ipv6_pools` (CIDRs or pool names) or every pool that
  selects the node. The handle is `<network>.<containerID>`; the allocation's attributes are
  `node` and `timestamp`, plus `pod` and `namespace` for a Kubernetes pod. The result holds
  each address with its block's prefix length, as calico-ipam prints it.
- DEL: release by handle (idempotent). CHECK: the handle still holds the addresses of the
  `prevResult`. STATUS: the datastore answers and at least one enabled pool exists (else
  error 50). GC: handles of this network whose addresses belong to this node and whose
  container is not in `cni.dev/valid-attachments` are released.
- Assignment and release hold the host-wide lock file `ipam_lock_file` (best effort), as
  calico-ipam does: concurrent ADDs on one node then take turns on the node's block instead of
  racing for it.

Delegation (`delegate`): the `tortie` plugin calls `tortie-ipam` in-process (same code, same
datastore connection, no second interpreter start: ~15 ms saved even in the daemon, ~150 ms
without it; see `tortie.cni.daemon`) and
any other type (`host-local`, ...) by running it from `CNI_PATH` exactly as the CNI library
does (same environment with `CNI_COMMAND` set, `IgnoreUnknown=1` added to `CNI_ARGS` as
Calico adds it, the network configuration on stdin). Setting `TORTIE_CNI_EXEC_IPAM=1` runs
`tortie-ipam` as a binary too.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tortie.cni.endpoint import K8S, WorkloadIDs
from tortie.cni.spec import (
    CHECK_FAILED,
    INVALID_CONFIG,
    IPAM_PLUGIN_ERROR,
    PLUGIN_NOT_AVAILABLE,
    CNIError,
    IPConfig,
    Result,
)

if TYPE_CHECKING:
    from tortie.cni.plugin import Invocation

__all__ = ["TORTIE_IPAM", "delegate", "ipam_commands"]

TORTIE_IPAM = "tortie-ipam"


# ---------------------------------------------------------------------------------------------
# The host-wide lock


@contextmanager
def ipam_lock(path: str) -> Iterator[None]:
    """flock(2) on `path`, created if needed; without it (no permission...) carry on unlocked."""
    fd = None
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        if fd is not None:
            os.close(fd)
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def go_timestamp() -> str:
    """Now as Go's `time.Now().UTC().String()` prints it (calico-ipam's `timestamp`)."""
    now = time.time()
    frac = f"{now % 1:.9f}"[2:].rstrip("0")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
    return f"{stamp}{'.' + frac if frac else ''} +0000 UTC"


# ---------------------------------------------------------------------------------------------
# tortie-ipam


def _ids(inv: Invocation) -> WorkloadIDs:
    return WorkloadIDs.from_args(inv.args, inv.conf.nodename, inv.conf.name)


def _attrs(ids: WorkloadIDs) -> dict[str, str]:
    attrs = {"node": ids.node, "timestamp": go_timestamp()}
    if ids.orchestrator == K8S:
        attrs["pod"] = ids.pod
        attrs["namespace"] = ids.namespace
    return attrs


def ipam_add(inv: Invocation) -> Result:
    from tortie.ipam import AutoAssignArgs

    conf, ids = inv.conf, _ids(inv)
    client = inv.ctx.ipam(inv)
    requested = inv.args.cni_args.get("IP", "")
    inv.failpoint("ipam")
    with ipam_lock(conf.ipam_lock_file):
        if requested:
            try:
                ip = ipaddress.ip_address(requested)
            except ValueError:
                raise CNIError(INVALID_CONFIG, f"invalid IP {requested!r} in CNI_ARGS") from None
            inv.log.info("assigning requested address %s to handle %s", ip, ids.handle_id)
            client.assign_ip(str(ip), ids.handle_id, _attrs(ids), ids.node)
            return Result(ips=[IPConfig(ipaddress.ip_interface(f"{ip}/{ip.max_prefixlen}"))])
        num4 = 1 if conf.ipam.assign_ipv4 else 0
        num6 = 1 if conf.ipam.assign_ipv6 else 0
        if not num4 and not num6:
            raise CNIError(INVALID_CONFIG, "ipam assigns no address: assign_ipv4 and assign_ipv6 "
                           "are both false")
        res = client.auto_assign(
            AutoAssignArgs(
                num4=num4,
                num6=num6,
                handle_id=ids.handle_id,
                attrs=_attrs(ids),
                hostname=ids.node,
                ipv4_pools=list(conf.ipam.ipv4_pools),
                ipv6_pools=list(conf.ipam.ipv6_pools),
            )
        )
    inv.log.info("assigned %s to handle %s", ", ".join(res.addresses), ids.handle_id)
    return Result(ips=[IPConfig(ip) for ip in (*res.ipv4, *res.ipv6)])


def ipam_del(inv: Invocation) -> None:
    ids = _ids(inv)
    with ipam_lock(inv.conf.ipam_lock_file):
        inv.ctx.ipam(inv).release_by_handle(ids.handle_id)
    inv.log.info("released handle %s", ids.handle_id)


def ipam_check(inv: Invocation) -> None:
    ids = _ids(inv)
    prev = inv.prev_result()
    held = set(inv.ctx.ipam(inv).ips_by_handle(ids.handle_id))
    missing = [str(ip.address.ip) for ip in prev.ips if str(ip.address.ip) not in held]
    if missing:
        raise CNIError(CHECK_FAILED, f"IPAM handle {ids.handle_id} does not hold "
                       f"{', '.join(missing)}")


def ipam_status(inv: Invocation) -> None:
    from tortie.datastore.backend import DatastoreError

    try:
        pools = inv.ctx.resources(inv).list("IPPool").items
    except DatastoreError as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, "the datastore is not available", str(exc)) from None
    if not any(not p.spec.disabled for p in pools):
        raise CNIError(PLUGIN_NOT_AVAILABLE, "no enabled IP pool: no address can be assigned",
                       "create an IPPool (tortiectl apply)")


def ipam_gc(inv: Invocation) -> None:
    """Release this network's handles on this node whose container is no longer valid."""
    from tortie.datastore import keys
    from tortie.ipam import AddressNotAssigned

    conf = inv.conf
    valid = {cid for cid, _ in conf.valid_attachments or ()}
    client = inv.ctx.ipam(inv)
    prefix = keys.handle_prefix() + f"{conf.name}."
    kvs, _ = inv.ctx.backend(inv).list(prefix)
    for kv in kvs:
        handle = kv.key[len(keys.handle_prefix()) :]
        cid = handle[len(conf.name) + 1 :]
        if cid in valid or not cid or "." in cid:
            continue
        mine = False
        for ip in client.ips_by_handle(handle):
            try:
                attrs, _ = client.get_assignment_attributes(ip)
            except AddressNotAssigned:
                continue
            mine = mine or attrs.get("node") == conf.nodename
        if mine:
            with ipam_lock(conf.ipam_lock_file):
                client.release_by_handle(handle)
            inv.log.info("GC: released handle %s (container %s is gone)", handle, cid)


def ipam_commands() -> dict[str, Any]:
    return {"ADD": ipam_add, "DEL": ipam_del, "CHECK": ipam_check, "STATUS": ipam_status,
            "GC": ipam_gc}


# ---------------------------------------------------------------------------------------------
# Delegation


def find_plugin(name: str, path: tuple[str, ...]) -> str:
    for d in path:
        candidate = os.path.join(d, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(
        IPAM_PLUGIN_ERROR,
        f"failed to find IPAM plugin {name!r} in path {':'.join(path) or '(CNI_PATH is empty)'}",
    )


def exec_plugin(inv: Invocation, name: str, command: str, stdin: bytes) -> Result | None:
    """Run plugin `name` as the runtime would, with `CNI_COMMAND=command`."""
    args = inv.args
    env = dict(inv.env)
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=args.container_id,
        CNI_NETNS=args.netns,
        CNI_IFNAME=args.ifname,
        CNI_ARGS="IgnoreUnknown=1" + (";" + args.args if args.args else ""),
        CNI_PATH=":".join(args.path),
    )
    import subprocess  # only here: it costs ~10 ms to import and is rarely needed

    binary = find_plugin(name, args.path)
    try:
        proc = subprocess.run([binary], input=stdin, env=env, capture_output=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CNIError(IPAM_PLUGIN_ERROR, f"cannot run IPAM plugin {name}", str(exc)) from None
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        out = None
    if proc.returncode != 0:
        if isinstance(out, dict) and "code" in out:
            code = int(out.get("code") or IPAM_PLUGIN_ERROR)
            raise CNIError(code, f"IPAM plugin {name}: {out.get('msg', '')}",
                           str(out.get("details", "")))
        raise CNIError(IPAM_PLUGIN_ERROR, f"IPAM plugin {name} failed (exit {proc.returncode})",
                       (proc.stderr or proc.stdout).decode(errors="replace").strip()[-500:])
    if command != "ADD":
        return None
    if not isinstance(out, dict):
        raise CNIError(IPAM_PLUGIN_ERROR, f"IPAM plugin {name} printed no result")
    return Result.from_json(out)


def _in_process(inv: Invocation) -> bool:
    return inv.conf.ipam.type == TORTIE_IPAM and inv.env.get("TORTIE_CNI_EXEC_IPAM") != "1"


def delegate(inv: Invocation, command: str) -> Result | None:
    """Run the configured IPAM plugin's `command` for this invocation."""
    if _in_process(inv):
        return ipam_commands()[command](inv)  # type: ignore[no-any-return]
    stdin = inv.args.stdin
    if command == "DEL" and inv.conf.ipam.type == "host-local":
        # As Calico: host-local releases by container ID; "usePodCidr" is not a CIDR.
        raw = dict(inv.conf.raw)
        ipam_raw = dict(raw.get("ipam") or {})
        if str(ipam_raw.get("subnet", "")).lower() == "usepodcidr":
            ipam_raw["subnet"] = "0.0.0.0/0"
            raw["ipam"] = ipam_raw
            stdin = json.dumps(raw).encode()
    try:
        return exec_plugin(inv, inv.conf.ipam.type, command, stdin)
    except CNIError as exc:
        if command == "GC" and exc.code in (4, 2):  # an older plugin that has no GC
            inv.log.info("IPAM plugin %s does not support GC: %s", inv.conf.ipam.type, exc)
            return None
        raise


"""`tortiectl ipam ...`: calicoctl's IPAM commands over Tortie's IPAM.

    tortiectl ipam show [--show-blocks] [--ip=ADDR] [--show-borrowed] [--show-configuration]
    tortiectl ipam check [-o REPORT.json] [--show-all-ips] [--show-problem-ips]
    tortiectl ipam release --ip=ADDR [--force]
    tortiectl ipam release --from-report=FILE [--from-report=FILE...] [--force]
    tortiectl ipam configure [--strictaffinity=true|false] [--max-blocks-per-host=N]
    tortiectl ipam split NUMBER (--cidr=CIDR | --name=POOL) [--force]
    tortiectl ipam status

Output and messages follow calicoctl (`calicoctl/commands/ipam/*.go`). Tortie additions:
`release --ip` refuses an address a WorkloadEndpoint or Node still uses unless `--force`;
`check` also reports affinities of missing nodes, stale affinities and blocks without affinity;
`split --force` skips the datastore-lock check (Tortie has no `datastore migrate lock`);
`status` summarises blocks per node. Exit codes: 0 success, 1 failure, 2 bad usage.

`register(subparsers)` adds the `ipam` command; `cmd_ipam(args, client_factory)` runs it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tortie.ctl.errors import CtlError

__all__ = ["cmd_ipam", "register"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `ipam` and its subcommands to tortiectl's subparsers; return the `ipam` parser."""
    ipam = subparsers.add_parser(
        "ipam",
        help="IP address management: show, check, release, configure",
        description="Inspect and repair Calico IPAM: pools, blocks, affinities, allocations.",
    )
    _config_arg(ipam)
    ipam.set_defaults(ipam_handler=None)
    sub = ipam.add_subparsers(dest="ipam_command", metavar="<ipam command>")

    p = sub.add_parser("show", help="show IP pool and block utilization, or one address")
    _config_arg(p)
    p.add_argument("--ip", default=None, help="report whether this address is in use")
    p.add_argument("--show-blocks", action="store_true", help="show blocks within the pools")
    p.add_argument("--show-borrowed", action="store_true",
                   help="show addresses borrowed from other nodes' blocks")
    p.add_argument("--show-configuration", action="store_true",
                   help="show the IPAM configuration")
    p.set_defaults(ipam_handler=cmd_show)

    p = sub.add_parser("check", help="check IPAM for leaked and unallocated addresses")
    _config_arg(p)
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="write a machine-readable report (for release --from-report)")
    p.add_argument("--show-all-ips", action="store_true", help="print every address checked")
    p.add_argument("--show-problem-ips", action="store_true",
                   help="print every leaked or unallocated address")
    p.set_defaults(ipam_handler=cmd_check)

    p = sub.add_parser("release", help="release an address, or the leaks of a check report")
    _config_arg(p)
    p.add_argument("--ip", default=None, help="address to release")
    p.add_argument("--from-report", action="append", default=[], metavar="FILE",
                   help="release the leaked addresses and handles of these reports (only those "
                        "leaked in all of them)")
    p.add_argument("--force", action="store_true",
                   help="release even if the address is in use, the datastore is not locked or "
                        "the report came from another version")
    p.set_defaults(ipam_handler=cmd_release)

    p = sub.add_parser("configure", help="change IPAM settings")
    _config_arg(p)
    p.add_argument("--strictaffinity", default=None, metavar="true|false",
                   help="when true, nodes never borrow addresses from other nodes' blocks")
    p.add_argument("--max-blocks-per-host", default=None, metavar="N",
                   help="most blocks a node may claim (0: no limit; needs strict affinity)")
    p.set_defaults(ipam_handler=cmd_configure)

    p = sub.add_parser("split", help="split an IP pool into 2^n smaller pools")
    _config_arg(p)
    p.add_argument("number", metavar="NUMBER", help="number of pools (a power of two)")
    p.add_argument("--cidr", default=None, help="CIDR of the pool to split")
    p.add_argument("--name", default=None, help="name of the pool to split")
    p.add_argument("--force", action="store_true", help="do not require a locked datastore")
    p.set_defaults(ipam_handler=cmd_split)

    p = sub.add_parser("status", help="IPAM configuration and blocks per node")
    _config_arg(p)
    p.set_defaults(ipam_handler=cmd_status)
    return ipam


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=argparse.SUPPRESS,
                   help="client configuration file (default /etc/tortie/tortiectl.cfg)")
    p.add_argument("--allow-version-mismatch", action="store_true", help=argparse.SUPPRESS)


def cmd_ipam(args: argparse.Namespace, client_factory: Callable[[], Any]) -> int:
    """Run a parsed `tortiectl ipam ...`; IPAM errors become a message and exit code 1."""
    from tortie.ipam import IPAMError

    handler = getattr(args, "ipam_handler", None)
    if handler is None:
        sys.stderr.write(
            "usage: tortiectl ipam {show,check,release,configure,split,status} ...\n")
        return 2
    try:
        return int(handler(args, client_factory))
    except IPAMError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1


def _clients(client_factory: Callable[[], Any]) -> tuple[Any, Any]:
    from tortie.ipam import IPAMClient

    rc = client_factory()
    return rc, IPAMClient(rc.backend, rc)


def _parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise CtlError(f"invalid IP address specified: {text}", 2) from None


def _version() -> str:
    from tortie import __version__

    return f"v{__version__}"


# ---------------------------------------------------------------------------------------------
# Tables, drawn like calicoctl's (boxed; headers centred, numbers right-aligned)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def boxed_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    right = [bool(rows) and all(_is_number(r[i]) for r in rows) for i in range(len(headers))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str], header: bool) -> str:
        out = []
        for i, cell in enumerate(cells):
            w = widths[i]
            if header:
                gap = w - len(cell)
                text = " " * (gap // 2) + cell + " " * (gap - gap // 2)
            elif right[i]:
                text = cell.rjust(w)
            else:
                text = cell.ljust(w)
            out.append(f" {text} ")
        return "|" + "|".join(out) + "|"

    lines = [rule, line(headers, True), rule, *(line(r, False) for r in rows), rule]
    return "\n".join(lines) + "\n"


def _count(n: int) -> str:
    return f"{float(n):.5g}"


def _pct(n: int, total: int) -> str:
    share = 100.0 * n / total if total else 0.0
    return f"{float(n):.5g} ({share:.0f}%)"


# ---------------------------------------------------------------------------------------------
# show


def cmd_show(args: argparse.Namespace, client_factory: Callable[[], Any]) -> int:
    _, ipam = _clients(client_factory)
    if args.ip:
        return _show_ip(ipam, _parse_ip(args.ip))
    if args.show_borrowed:
        return _show_borrowed(ipam)
    if args.show_configuration:
        cfg = ipam.get_config()
        rows = [
            ["StrictAffinity", str(cfg.strict_affinity).lower()],
            ["AutoAllocateBlocks", str(cfg.auto_allocate_blocks).lower()],
            ["MaxBlocksPerHost", str(cfg.max_blocks_per_host)],
        ]
        sys.stdout.write(boxed_table(["PROPERTY", "VALUE"], rows))
        return 0
    rows: list[list[str]] = []
    for usage in ipam.get_utilization():
        if usage.cidr is not None:
            rows.append(["IP Pool", str(usage.cidr), _count(usage.capacity),
                         _pct(usage.in_use, usage.capacity),
                         _pct(usage.available, usage.capacity)])
        if args.show_blocks:
            for b in usage.blocks:
                used = b.capacity - b.available
                rows.append(["Block", str(b.cidr), _count(b.capacity),
                             _pct(used, b.capacity), _pct(b.available, b.capacity)])
    sys.stdout.write(boxed_table(
        ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"], rows))
    return 0


def _show_ip(ipam: Any, ip: str) -> int:
    from tortie.ipam import AddressNotAssigned

    try:
        attrs, handle = ipam.get_assignment_attributes(ip)
    except AddressNotAssigned:
        print(f"{ip} is not assigned")
        return 0
    print(f"IP {ip} is in use")
    print(f"Handle ID: {handle}" if handle else "Handle ID: <none>")
    if attrs:
        print("Attributes:")
        for key in sorted(attrs):
            print(f"  {key}: {attrs[key]}")
    else:
        print("No attributes defined")
    return 0


def _show_borrowed(ipam: Any) -> int:
    from tortie.datastore import keys
    from tortie.ipam.block import AllocationBlock

    kvs, _ = ipam.backend.list(keys.block_prefix())
    rows: list[list[str]] = []
    unclassified = 0
    for kv in kvs:
        b = AllocationBlock.from_json(kv.value)
        owner = b.host or (b.affinity or "")
        for ordinal, idx in enumerate(b.allocations):
            if idx is None:
                continue
            secondary = (b.attributes[idx].secondary if idx < len(b.attributes) else None) or {}
            node = secondary.get("node")
            if not node:
                unclassified += 1
                continue
            if node == owner:
                continue
            ns = secondary.get("namespace", "")
            if "pod" in secondary:
                kind, to = "pod", f"{ns}/{secondary['pod']}"
            else:
                kind, to = secondary.get("type", ""), ""
            rows.append([str(b.ip_at(ordinal)), node, str(b.cidr), owner, kind, to])
    sys.stdout.write(boxed_table(
        ["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"], rows))
    if unclassified:
        print(f"\nNote: found {unclassified} IP allocations without an explicit node "
              "association. Unable to determine if they are borrowed.")
    return 0


# ---------------------------------------------------------------------------------------------
# check


def cmd_check(args: argparse.Namespace, client_factory: Callable[[], Any]) -> int:
    from tortie.ipam.check import check_ipam

    rc, ipam = _clients(client_factory)
    show_all = args.show_all_ips
    show_problems = show_all or args.show_problem_ips
    print("Checking IPAM for inconsistencies...")
    print()
    r = check_ipam(ipam.backend, rc, _version())

    print("Loading all IPAM blocks...")
    print(f"Found {r.num_blocks} IPAM blocks.")
    num_allocs = 0
    by_block: dict[str, list[Any]] = {}
    for allocs in r.allocations.values():
        for a in allocs:
            by_block.setdefault(a.block, []).append(a)
            num_allocs += 1
    for cidr, affinity in r.block_affinities.items():
        print(f" IPAM block {cidr} affinity={affinity or '<none>'}:")
        if show_all:
            for a in by_block.get(cidr, ()):
                print(f"  {a.ip} allocated; attrs {a.attr_string()}")
    print(f"IPAM blocks record {num_allocs} allocations.")
    print()

    print("Loading all IPAM pools...")
    for cidr in r.active_pools:
        print(f"  {cidr}")
    print(f"Found {len(r.active_pools)} active IP pools.")
    print()

    print("Loading all nodes.")
    print(f"Found {r.node_ips} node tunnel IPs.")
    print()
    print("Loading all workload endpoints.")
    if show_all:
        for ip, owners in sorted(r.in_use.items()):
            for owner in owners:
                print(f"  {ip} belongs to {owner}")
    print(f"Found {r.workload_ips} workload IPs.")
    print(f"Workloads and nodes are using {len(r.in_use)} IPs.")
    print()

    print("Looking for top (up to 20) nodes by allocations...")
    counts = r.allocations_by_node
    ranked = sorted(counts, key=lambda n: -counts[n])
    for name in ranked[:20]:
        print(f"  {name or '<none>'} has {counts[name]} allocations")
    if ranked:
        print(f"Node with most allocations has {counts[ranked[0]]}; median is "
              f"{counts[ranked[len(ranked) // 2]]}")
    print()

    print("Scanning for IPs that are allocated but not actually in use...")
    if show_problems:
        for ip in r.leaked_ips:
            for a in r.allocations[ip]:
                print(f"  {ip} leaked; attrs {a.attr_string()}")
    print(f"Found {len(r.leaked_ips)} IPs that are allocated in IPAM but not actually in use.")
    print("Scanning for IPs that are in use by a workload or node but not allocated in IPAM...")
    if show_problems:
        for ip in r.multiple_owners:
            print(f"  {ip} has multiple owners.")
        for ip in r.not_in_pool_ips:
            for owner in r.in_use[ip]:
                print(f"  {ip} in use by {owner} is not in any active IP pool.")
        for ip in r.unallocated_in_use_ips:
            for owner in r.in_use[ip]:
                print(f"  {ip} in use by {owner} and in active IPAM pool but has no IPAM "
                      "allocation.")
    print(f"Found {len(r.not_in_pool_ips)} in-use IPs that are not in active IP pools.")
    print(f"Found {len(r.unallocated_in_use_ips)} in-use IPs that are in active IP pools but "
          "have no corresponding IPAM allocation.")
    print()

    print("Scanning for IPAM handles with no matching IPs...")
    if show_all:
        for h in r.leaked_handles:
            print(f"  {h.id} doesn't have any active IPs.")
    print(f"Found {len(r.leaked_handles)} handles with no matching IPs (and {r.good_handles} "
          "handles with matches).")
    print("Scanning for IPs with missing handle...")
    if show_problems:
        for hid in r.missing_handles:
            print(f"  {hid} is in use in a block but doesn't exist.")
    print(f"Found {len(r.missing_handles)} handles mentioned in blocks with no matching handle "
          "resource.")
    print()

    print("Scanning block affinities...")
    if show_problems:
        for node, cidr in r.affinities_of_missing_nodes:
            print(f"  affinity of node {node} for block {cidr}: the node does not exist.")
        for node, cidr, why in r.stale_affinities:
            print(f"  affinity of node {node} for block {cidr} is stale: {why}.")
        for node, cidr, state in r.unconfirmed_affinities:
            print(f"  affinity of node {node} for block {cidr} is {state}.")
        for cidr in r.empty_blocks_without_affinity:
            print(f"  block {cidr} is empty and has no affinity.")
    print(f"Found {len(r.affinities_of_missing_nodes)} block affinities of nodes that do not "
          "exist.")
    print(f"Found {len(r.stale_affinities)} stale block affinities (block missing or affine "
          "to another node).")
    print(f"Found {len(r.blocks_without_affinity)} blocks without affinity that hold "
          f"addresses, and {len(r.empty_blocks_without_affinity)} empty ones.")
    print(f"Check complete; found {r.problems} problems.")

    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                json.dump(r.report(), f, indent=2)
                f.write("\n")
        except OSError as exc:
            raise CtlError(f"could not write the report to {args.output}: {exc}") from None
    return 0


# ---------------------------------------------------------------------------------------------
# release


def cmd_release(args: argparse.Namespace, client_factory: Callable[[], Any]) -> int:
    if not args.ip and not args.from_report:
        raise CtlError("give --ip=ADDR or --from-report=FILE", 2)
    if args.ip and args.from_report:
        raise CtlError("give either --ip or --from-report, not both", 2)
    rc, ipam = _clients(client_factory)
    if args.from_report:
        _release_from_reports(rc, ipam, args.from_report, args.force)
        print("You may now unlock the data store.")
        return 0
    ip = _parse_ip(args.ip)
    if not args.force:
        users = _users_of(rc, ip)
        if users:
            raise CtlError(
                f"IP address {ip} is in use by {', '.join(users)}: releasing it would let IPAM "
                "hand it out again while it is still used. Remove the user first, or re-run "
                "with --force"
            )
    if ipam.release_ips([ip]):
        raise CtlError(f"IP address {ip} is not assigned")
    print(f"Successfully released IP address {ip}")
    return 0


def _users_of(rc: Any, ip: str) -> list[str]:
    from tortie.ipam.check import _node_ips, normalise_ip

    users = []
    for n in rc.list("Node").items:
        if any(normalise_ip(a) == ip for a in _node_ips(n.spec)):
            users.append(f"Node({n.name})")
    for w in rc.list("WorkloadEndpoint").items:
        if any(normalise_ip(a) == ip for a in w.spec.ip_networks or ()):
            users.append(f"Workload({w.metadata.namespace}/{w.name})")
    return users


def _release_from_reports(rc: Any, ipam: Any, files: list[str], force: bool) -> None:
    from tortie.datastore import keys
    from tortie.datastore.backend import KeyNotFound, RevisionConflict
    from tortie.datastore.client import ResourceNotFound
    from tortie.ipam import ReleaseOptions

    try:
        info = rc.get("ClusterInformation", "default")
        guid = info.spec.cluster_guid or ""
        revision = info.metadata.resource_version or ""
        ready = info.spec.datastore_ready
    except ResourceNotFound:
        guid, revision, ready = "", "", None
    reports = []
    found_current = False
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError) as exc:
            raise CtlError(f"cannot read report {path}: {exc}") from None
        if report.get("clusterGUID", "") != guid:
            raise CtlError(f"cluster does not match the provided report ({path}): mismatched "
                           "cluster GUID. Refusing to release")
        if report.get("version") != _version():
            if not force:
                raise CtlError(f"the provided report ({path}) was produced using a different "
                               f"version ({report.get('version')}) of tortiectl. Refusing to "
                               "release")
            print("WARNING: Report was produced using a different version of tortiectl. "
                  "Ignoring due to --force option")
        if report.get("clusterInformationRevision", "") == revision:
            found_current = True
        reports.append(report)
    if not found_current:
        raise CtlError("the provided reports are all stale - at least one should be up-to-date. "
                       "Please generate a new report while the data store is locked and try "
                       "again")
    if ready is None or ready:
        if not force:
            raise CtlError("data store is not locked. Either lock the data store, or re-run "
                           "with --force")
        print("WARNING: Data store is not locked. Ignoring due to --force option")

    # Only what leaked in every report.
    ips: dict[str, ReleaseOptions] | None = None
    handles: dict[str, dict[str, Any]] | None = None
    for report in reports:
        merged_ips: dict[str, ReleaseOptions] = {}
        for allocs in (report.get("allocations") or {}).values():
            for a in allocs:
                if a.get("inUse") or (ips is not None and a["ip"] not in ips):
                    continue
                merged_ips[a["ip"]] = ReleaseOptions(a["ip"], a.get("handle") or None,
                                                     a.get("sequenceNumber"))
        ips = merged_ips
        merged_handles: dict[str, dict[str, Any]] = {}
        for h in report.get("leakedHandles") or ():
            if handles is None or (h["ID"] in handles
                                   and handles[h["ID"]]["Revision"] == h["Revision"]):
                merged_handles[h["ID"]] = h
        handles = merged_handles

    if ips:
        print(f"Releasing {len(ips)} old IPs...")
        try:
            unallocated = ipam.release_ips(list(ips.values()))
        except Exception as exc:
            print(f"An error occurred while releasing some IPs: {exc}.  Problems are often "
                  "caused by an out-of-date IPAM report.  Try regenerating the IPAM report and "
                  "retry.")
        else:
            print(f"Released {len(ips) - len(unallocated)} IPs successfully")
            if unallocated:
                print(f"{len(unallocated)} addresses marked as leaked in the report had already "
                      "been cleaned up.")
    else:
        print("Report didn't contain any leaked IPs to clean up.")

    if handles:
        print(f"Deleting {len(handles)} handles...")
        print("Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.")
        released = skipped = errors = 0
        for hid, h in handles.items():
            try:
                ipam.backend.delete(keys.handle_key(hid), int(h["Revision"]))
            except (KeyNotFound, RevisionConflict):
                skipped += 1
                sys.stdout.write("x")
            except Exception as exc:
                errors += 1
                sys.stdout.write(f"\nDeleting handle {hid} failed: {exc}.\n")
            else:
                released += 1
                sys.stdout.write(".")
        print()
        print(f"Released {released} handles; {skipped} skipped; {errors} errors.")
    else:
        print("Report didn't contain any handles to clean up.")


# ---------------------------------------------------------------------------------------------
# configure, split, status


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "t", "true"):
        return True
    if value in ("0", "f", "false"):
        return False
    raise CtlError("invalid value. Use true or false to set strictaffinity", 2)


def cmd_configure(args: argparse.Namespace, client_factory: Callable[[], Any]) -> int:
    strict = _parse_bool(args.strictaffinity) if args.strictaffinity is not None else None
    max_blocks = None
    if args.max_blocks_per_host is not None:
        try:
            max_blocks = int(args.max_blocks_per_host)
        except ValueError:
            raise CtlError("invalid value for --max-blocks-per-host. Use a valid number",
                           2) from None
        if max_blocks < 0:
            raise CtlError("invalid value for --max-blocks-per-host: it cannot be negative", 2)
    if strict is None and max_blocks is None:
        raise CtlError("at least one configuration option must be specified "
                       "(--strictaffinity, --max-blocks-per-host)", 2)
    _, ipam = _clients(client_factory)
    ipam.set_config(strict_affinity=strict, max_blocks_per_host=max_blocks)
    if strict is not None:
        print(f"Successfully set StrictAffinity to: {str(strict).lower()}")
    if max_blocks is not None:
        print(f"Successfully set MaxBlocksPerHost to: {max_blocks}")
    return 0


def cmd_split(args: argparse.Namespace, client_factory: Callable[[], Any]) -> int:
    from tortie.datastore.client import ResourceError, ResourceNotFound

    try:
        parts = int(args.number)
    except ValueError:
        raise CtlError(f"error reading number to split IP pools into. {args.number} is not a "
                       "valid number", 2) from None
    if parts < 2 or parts & (parts - 1):
        raise CtlError(f"number to split CIDR into is not a valid power of 2: {parts}", 2)
    if not args.cidr and not args.name:
        raise CtlError("no name or CIDR provided. Provide a name or CIDR to denote the IP pool "
                       "to split", 2)
    rc, _ = _clients(client_factory)
    if not args.force:
        try:
            locked = rc.get("ClusterInformation", "default").spec.datastore_ready is False
        except ResourceNotFound:
            locked = False
        if not locked:
            raise CtlError("datastore is not locked: lock it (ClusterInformation "
                           "datastoreReady=false) before splitting IP pools, or re-run with "
                           "--force")
    pool = None
    if args.name:
        try:
            pool = rc.get("IPPool", args.name)
        except ResourceNotFound:
            pool = None
    else:
        want = ipaddress.ip_network(args.cidr, strict=False)
        pool = next((p for p in rc.list("IPPool").items
                     if ipaddress.ip_network(p.spec.cidr, strict=False) == want), None)
    if pool is None:
        raise CtlError(f"unable to find IP pool {args.name or ''} covering the specified CIDR "
                       f"{args.cidr or ''}".replace("  ", " "))
    net = ipaddress.ip_network(pool.spec.cidr, strict=False)
    bits = parts.bit_length() - 1
    if net.prefixlen + bits > net.max_prefixlen:
        raise CtlError(f"the CIDR {net} is not large enough to be split into {parts} parts")
    if pool.spec.block_size and net.prefixlen + bits > pool.spec.block_size:
        raise CtlError(f"the CIDR {net} split into {parts} parts would be smaller than the "
                       f"pool's /{pool.spec.block_size} blocks")
    try:
        pool.spec.disabled = True
        pool = rc.update(pool)
        created = []
        for i, sub in enumerate(net.subnets(prefixlen_diff=bits)):
            child = pool.copy()
            child.metadata.name = f"split-{pool.name}-{i}"[:253]
            for attr in ("uid", "resource_version", "creation_timestamp", "generation"):
                setattr(child.metadata, attr, None)
            child.spec.cidr = str(sub)
            child.spec.disabled = False
            created.append(rc.create(child))
        rc.delete("IPPool", pool.name)
    except ResourceError as exc:
        raise CtlError(f"error splitting IP pool {pool.name}: {exc}") from None
    print(f"IP Pool {pool.name} was successfully split into {parts} smaller pools.")
    for c in created:
        print(f"Created {c.name} with CIDR {c.spec.cidr}.")
    return 0


def cmd_status(args: argparse.Namespace, client_factory: Callable[[], Any]) -> int:
    from tortie.datastore import keys
    from tortie.ipam.block import AllocationBlock

    _, ipam = _clients(client_factory)
    cfg = ipam.get_config()
    print(f"StrictAffinity: {str(cfg.strict_affinity).lower()}   "
          f"AutoAllocateBlocks: {str(cfg.auto_allocate_blocks).lower()}   "
          f"MaxBlocksPerHost: {cfg.max_blocks_per_host or '0 (default limit 20)'}")
    kvs, _ = ipam.backend.list(keys.block_prefix())
    per_node: dict[str, list[int]] = {}
    for kv in kvs:
        b = AllocationBlock.from_json(kv.value)
        row = per_node.setdefault(b.host or "<none>", [0, 0, 0])
        row[0] += 1
        row[1] += b.in_use_count()
        row[2] += len(b.unallocated)
    handles, _ = ipam.backend.list(keys.handle_prefix())
    rows = [[node, str(v[0]), str(v[1]), str(v[2])] for node, v in sorted(per_node.items())]
    sys.stdout.write(boxed_table(["NODE", "BLOCKS", "IPS IN USE", "IPS FREE"], rows))
    print(f"{len(kvs)} blocks, {sum(v[1] for v in per_node.values())} addresses in use, "
          f"{len(handles)} handles.")
    return 0

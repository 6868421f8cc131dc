"""`tortiectl lab ...`: build, inspect, use and remove namespace labs from the command line.

    tortiectl lab up [--nodes N] [--topology flat|two-subnets] [--id ID] [--static-routes]
    tortiectl lab down [ID | --all | --stale]
    tortiectl lab status [ID] [-o text|json]
    tortiectl lab exec [ID] TARGET -- CMD...         TARGET: node, workload, etcd, router, fabric
    tortiectl lab add-workload [ID] NODE NAME [--ip IP] [--label k=v ...] [-n NS] [--profile P]
    tortiectl lab remove-workload [ID] NAME [-n NS]
    tortiectl lab ctl [ID] -- <tortiectl args>       tortiectl against the lab's etcd
    tortiectl lab matrix [ID] [--check tcp:8080 ...] [-o table|yaml|json] [--expect FILE]

With one lab running, ID may be left out. Labs made here have no owner process: they stay up
until `tortiectl lab down`. `register(subparsers)` adds the `lab` command to tortiectl's
parser; `cmd_lab(args)` runs it (both are all `tortie.ctl.main` needs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["cmd_lab", "register"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `lab` and its subcommands to tortiectl's subparsers; returns the `lab` parser."""
    lab = subparsers.add_parser(
        "lab",
        help="run a Calico cluster inside network namespaces (demo, tests, benchmarks)",
        description="Build and use a lab: etcd, nodes and workloads in network namespaces. "
        "Nothing in a lab is reachable from the host; use `lab exec` and `lab ctl`.",
    )
    lab.set_defaults(lab_handler=None)
    sub = lab.add_subparsers(dest="lab_command", metavar="<lab command>")

    p = sub.add_parser("up", help="create a lab and print its id")
    p.add_argument("--nodes", type=int, default=2, help="number of nodes (default 2)")
    p.add_argument(
        "--topology", choices=("flat", "two-subnets"), default="flat", help="fabric (default flat)"
    )
    p.add_argument("--id", dest="lab_id", default=None, help="lab id (1-6 of [a-z0-9])")
    p.add_argument(
        "--static-routes",
        action="store_true",
        help="route workload ranges between nodes (until BGP runs)",
    )
    p.set_defaults(lab_handler=cmd_up)

    p = sub.add_parser("down", help="tear a lab down (kill its processes, delete namespaces)")
    p.add_argument("lab_id", nargs="?", metavar="ID")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--all", action="store_true", help="every lab on this machine")
    g.add_argument("--stale", action="store_true", help="labs whose owner process has died")
    p.set_defaults(lab_handler=cmd_down)

    p = sub.add_parser("status", help="show labs: namespaces, nodes, workloads, processes")
    p.add_argument("lab_id", nargs="?", metavar="ID")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.set_defaults(lab_handler=cmd_status)

    p = sub.add_parser(
        "exec",
        help="run a command inside a lab namespace",
        usage="tortiectl lab exec [ID] TARGET -- CMD...",
    )
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="[ID] TARGET -- CMD")
    p.set_defaults(lab_handler=cmd_exec)

    p = sub.add_parser("add-workload", help="add a workload (pod) namespace to a node")
    p.add_argument("words", nargs="+", metavar="[ID] NODE NAME")
    p.add_argument("--ip", default=None, help="address (default: next free in the node's range)")
    p.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)"
    )
    p.add_argument("-n", "--namespace", default="default", help="Kubernetes namespace")
    p.add_argument("--profile", action="append", default=[], help="a profile (repeatable)")
    p.add_argument(
        "--no-route", action="store_true", help="leave the /32 route to Felix (default: add it)"
    )
    p.set_defaults(lab_handler=cmd_add_workload)

    p = sub.add_parser("remove-workload", help="remove a workload")
    p.add_argument("words", nargs="+", metavar="[ID] NAME")
    p.add_argument("-n", "--namespace", default="default")
    p.set_defaults(lab_handler=cmd_remove_workload)

    p = sub.add_parser(
        "ctl",
        help="run tortiectl against the lab's etcd (inside the etcd namespace)",
        usage="tortiectl lab ctl [ID] -- <tortiectl args>",
    )
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="[ID] -- ARGS")
    p.set_defaults(lab_handler=cmd_ctl)

    p = sub.add_parser(
        "matrix", help="probe every pair of workloads with real packets and print the matrix"
    )
    p.add_argument("lab_id", nargs="?", metavar="ID")
    p.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="tcp:PORT|udp:PORT|icmp",
        help="what to probe (repeatable; default tcp:8080 and icmp)",
    )
    p.add_argument(
        "--workload",
        action="append",
        default=[],
        metavar="NAME",
        help="only these workloads (repeatable; default all)",
    )
    p.add_argument("--timeout", type=float, default=0.5, help="seconds per probe (default 0.5)")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.add_argument(
        "--expect",
        metavar="FILE",
        help="compare with a saved `-o yaml` matrix; exit 1 if anything differs",
    )
    p.add_argument("--no-colour", action="store_true")
    p.set_defaults(lab_handler=cmd_matrix)
    return lab


def cmd_lab(args: argparse.Namespace, client_factory: Callable[[], Any] | None = None) -> int:
    """Run a parsed `tortiectl lab ...` command; lab errors become a message and exit code 1."""
    from tortie.lab.netns import LabError

    handler = getattr(args, "lab_handler", None)
    if handler is None:
        sys.stderr.write("usage: tortiectl lab {up,down,status,exec,add-workload,ctl} ...\n")
        return 2
    try:
        return int(handler(args))
    except (LabError, ValueError) as exc:
        sys.stderr.write(f"lab: {exc}\n")
        return 1


# ---------------------------------------------------------------------------------------------


def _split(words: list[str], max_before: int) -> tuple[list[str], list[str]]:
    """Split `[before...] -- after...`; without `--`, nothing is 'before'."""
    if "--" in words:
        i = words.index("--")
        before, after = words[:i], words[i + 1 :]
        if len(before) > max_before:
            raise ValueError(f"expected at most {max_before} word(s) before '--': {before}")
        return before, after
    return [], words


def cmd_up(args: argparse.Namespace) -> int:
    from tortie.lab.cluster import Lab

    lab = Lab(nodes=args.nodes, topology=args.topology, lab_id=args.lab_id, owned=False)
    import time

    t0 = time.monotonic()
    lab.up()
    if args.static_routes:
        lab.static_routes()
    print(
        f"lab {lab.lab_id} up: {lab.plan.topology}, {len(lab.nodes)} node(s), "
        f"etcd {lab.etcd_endpoint} ({time.monotonic() - t0:.1f}s)"
    )
    for n in lab.nodes:
        print(f"  {n.name:<10} {n.cidr:<18} workloads {n.workload_cidr:<16} netns {n.netns}")
    print(f"try: tortiectl lab exec {lab.lab_id} {lab.nodes[0].name} -- ip addr")
    print(f"     tortiectl lab ctl {lab.lab_id} -- get nodes")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from tortie.lab import state
    from tortie.lab.cluster import cleanup_stale, down_lab, find_state

    if args.all:
        ids = [s.lab_id for s in state.all_states()]
        for lab_id in ids:
            down_lab(lab_id)
    elif args.stale:
        ids = cleanup_stale()
    else:
        ids = [find_state(args.lab_id).lab_id]
        down_lab(ids[0])
    print(f"removed {len(ids)} lab(s){': ' + ', '.join(ids) if ids else ''}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from tortie.lab import state
    from tortie.lab.cluster import find_state, status_of

    states = [find_state(args.lab_id)] if args.lab_id else state.all_states()
    statuses = [status_of(s) for s in states]
    if args.output == "json":
        print(json.dumps(statuses if not args.lab_id else statuses[0], indent=2))
        return 0
    if not statuses:
        print("no labs")
    for i, st in enumerate(statuses):
        if i:
            print()
        _print_status(st)
    return 0


def _print_status(st: dict[str, Any]) -> None:
    owner = "none (tortiectl)" if st["owner"] is None else f"pid {st['owner']}"
    if st["owner"] is not None and not st["owner_alive"]:
        owner += " (dead: stale, `tortiectl lab down --stale` removes it)"
    print(f"Lab {st['id']}: {st['topology']}, {st['phase']}, owner {owner}")
    print(f"  etcd      {st['etcd']['endpoint']}  (netns {st['etcd']['netns']})")
    if st["router"]:
        print(f"  router    netns {st['router']}")
    print(f"  routes    {'static (lab)' if st['static_routes'] else 'none between nodes'}")
    print("  NODE        FABRIC IP          SUBNET  WORKLOAD RANGE    NETNS")
    for n in st["nodes"]:
        print(
            f"  {n['name']:<11} {n['ip']:<18} {n['subnet']:<7} {n['workload_cidr']:<17} "
            f"{n['netns']}"
        )
    if st["workloads"]:
        print("  WORKLOAD                NODE        IP              INTERFACE        ENDPOINT")
        for w in st["workloads"]:
            name = f"{w['namespace']}/{w['name']}"
            print(
                f"  {name:<23} {w['node']:<11} {w['ip']:<15} {w['interface']:<16} {w['endpoint']}"
            )
    missing = [ns for ns, ok in st["namespaces"].items() if not ok]
    print(
        f"  namespaces {len(st['namespaces']) - len(missing)}/{len(st['namespaces'])} present"
        + (f" (missing: {', '.join(missing)})" if missing else "")
    )
    for p in st["processes"]:
        print(f"  process   {p['name']} pid {p['pid']}: {'alive' if p['alive'] else 'dead'}")


def cmd_exec(args: argparse.Namespace) -> int:
    from tortie.lab.cluster import Lab

    before, cmd = _split(list(args.words), 2)
    if not before and cmd:  # no `--`: TARGET CMD...
        before, cmd = cmd[:1], cmd[1:]
    if not before or not cmd:
        raise ValueError("usage: tortiectl lab exec [ID] TARGET -- CMD...")
    lab = Lab.attach(before[0] if len(before) == 2 else None)
    return lab.exec(before[-1], cmd, capture=False, timeout=None).returncode


def cmd_add_workload(args: argparse.Namespace) -> int:
    from tortie.lab.cluster import Lab

    words = list(args.words)
    if len(words) not in (2, 3):
        raise ValueError("usage: tortiectl lab add-workload [ID] NODE NAME")
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"label {item!r} is not KEY=VALUE")
        labels[key] = value
    lab = Lab.attach(words[0] if len(words) == 3 else None)
    wl = lab.add_workload(
        words[-2],
        words[-1],
        ip=args.ip,
        labels=labels or None,
        namespace=args.namespace,
        profiles=args.profile or None,
        static_route=not args.no_route,
    )
    print(
        f"workload {wl.namespace}/{wl.name} on {wl.node}: {wl.ip}/32, interface {wl.host_if}, "
        f"endpoint {wl.wep}"
    )
    return 0


def cmd_remove_workload(args: argparse.Namespace) -> int:
    from tortie.lab.cluster import Lab

    words = list(args.words)
    if len(words) not in (1, 2):
        raise ValueError("usage: tortiectl lab remove-workload [ID] NAME")
    lab = Lab.attach(words[0] if len(words) == 2 else None)
    lab.remove_workload(words[-1], args.namespace)
    print(f"workload {args.namespace}/{words[-1]} removed")
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    from tortie.lab.cluster import Lab

    before, ctl_args = _split(list(args.words), 1)
    lab = Lab.attach(before[0] if before else None)
    return subprocess.run(lab.ctl_argv(ctl_args), env=lab.ctl_env(), check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m tortie.ctl.lab ...``), until tortiectl wires it."""
    parser = argparse.ArgumentParser(prog="tortiectl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    return cmd_lab(args)


def cmd_matrix(args: argparse.Namespace) -> int:
    import yaml

    from tortie.lab.cluster import Lab
    from tortie.lab.matrix import Check, Target, differences, render, run

    lab = Lab.attach(args.lab_id)
    checks = [Check.parse(c) for c in args.check] or [Check("tcp", 8080), Check("icmp")]
    targets = [
        Target(w.name if w.namespace == "default" else f"{w.namespace}/{w.name}", w.netns, w.ip)
        for w in lab.workloads
        if not args.workload or w.name in args.workload
    ]
    if len(targets) < 2:
        raise ValueError("the matrix needs at least two workloads (tortiectl lab add-workload)")
    matrix = run(targets, checks, timeout=args.timeout)
    data = matrix.to_data()
    if args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    elif args.output == "json":
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(render(matrix, colour=sys.stdout.isatty() and not args.no_colour))
    if args.expect:
        with open(args.expect) as f:
            expected = yaml.safe_load(f) or {}
        diffs = differences(matrix, expected)
        for d in diffs:
            sys.stderr.write(f"mismatch: {d}\n")
        if diffs:
            sys.stderr.write(f"{len(diffs)} cell(s) differ from {args.expect}\n")
            return 1
        print(f"matrix matches {args.expect}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``tortiectl node status``: this host's Calico processes and BIRD's BGP peers, as calicoctl.

Like calicoctl, it runs on the node itself: it looks for Felix among the processes of its own
network namespace (``Calico process is running.``), then asks BIRD over its control socket
(``show protocols all``) for the BGP sessions and prints them per IP family in calicoctl's
table (PEER ADDRESS, PEER TYPE, STATE, SINCE, INFO). The socket is ``--bird-socket``, else
``$BIRD_CTL``, else calicoctl's ``/var/run/calico/bird.ctl`` or ``/var/run/bird/bird.ctl``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tortie.ctl.errors import CtlError

__all__ = ["cmd_node", "felix_running", "format_table", "register", "status_text"]

DEFAULT_SOCKETS = ("/var/run/calico/bird.ctl", "/var/run/bird/bird.ctl")
FELIX_MARKERS = ("tortie-felix", "tortie.felix.daemon", "tortie-node", "tortie.node")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("node", help="node status (BGP peers)")
    sub = p.add_subparsers(dest="node_command", metavar="<node command>")
    s = sub.add_parser("status", help="Calico processes and BGP peers of this host")
    s.add_argument("--bird-socket", default=None, help="BIRD's control socket")
    s.add_argument("--allow-version-mismatch", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("-c", "--config", default=None, help=argparse.SUPPRESS)


def cmd_node(args: argparse.Namespace, client_factory: Callable) -> int:
    if getattr(args, "node_command", None) != "status":
        raise CtlError("usage: tortiectl node status [--bird-socket PATH]", code=2)
    if not felix_running():
        raise CtlError("Calico process is not running.", code=1)
    print(status_text(_socket(args.bird_socket)), end="")
    return 0


def _socket(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("BIRD_CTL"):
        return os.environ["BIRD_CTL"]
    return next((s for s in DEFAULT_SOCKETS if os.path.exists(s)), None)


def felix_running(proc: str = "/proc") -> bool:
    """Is Felix (or tortie-node) running in this network namespace?"""
    try:
        own_ns = os.readlink(f"{proc}/self/ns/net")
    except OSError:
        own_ns = None
    me = os.getpid()
    for entry in Path(proc).iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not any(m in cmdline for m in FELIX_MARKERS):
                continue
            if own_ns is None or os.readlink(entry / "ns" / "net") == own_ns:
                return True
        except OSError:
            continue
    return False


def status_text(socket_path: str | None) -> str:
    """Everything after the process line: the IPv4 and IPv6 peer tables."""
    from tortie.confd.bird import BirdControl, BirdError, calico_peers

    out = ["Calico process is running.\n"]
    if socket_path is None:
        out.append("\nNone of the BGP backend processes (BIRD or GoBGP) are running.\n\n")
        return "".join(out)
    try:
        peers = calico_peers(BirdControl(socket_path, timeout=2.0).protocols())
    except BirdError as exc:
        out.append(f"\nError querying BIRD: {exc}\n\n")
        return "".join(out)
    for version in (4, 6):
        out.append(f"\nIPv{version} BGP status\n")
        rows = [
            [p.address, p.type, p.state, p.since, p.info] for p in peers if p.version == version
        ]
        if rows:
            out.append(format_table(["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"], rows))
        else:
            out.append(f"No IPv{version} peers found.\n")
    out.append("\n")
    return "".join(out)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """calicoctl's table: centred headers, left-aligned cells, ``+---+`` borders."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def centre(text: str, width: int) -> str:
        gap = width - len(text)
        return " " * (gap // 2) + text + " " * (gap - gap // 2)

    lines = [rule, "| " + " | ".join(centre(h, w) for h, w in zip(headers, widths, strict=True))]
    lines[-1] += " |\n"
    lines.append(rule)
    for r in rows:
        cells = " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
        lines.append(f"| {cells} |\n")
    lines.append(rule)
    return "".join(lines)

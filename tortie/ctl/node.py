"""``tortiectl node status|run|diags|checksystem``: the node commands, as calicoctl's.

``status``: like calicoctl, it runs on the node itself: it looks for Felix among the
processes of its own network namespace (``Calico process is running.``), then asks BIRD over
its control socket (``show protocols all``) for the BGP sessions and prints them per IP family
in calicoctl's table (PEER ADDRESS, PEER TYPE, STATE, SINCE, INFO). The socket is
``--bird-socket``, else ``$BIRD_CTL``, else tortie-node's ``$TORTIE_RUN_DIR/bird.ctl``, else
calicoctl's ``/var/run/calico/bird.ctl`` or ``/var/run/bird/bird.ctl``.

``run`` starts tortie-node with calicoctl's flags (`tortie.node.launch`: detached with a
pidfile, ``--init-system`` in the foreground, ``--dryrun``); ``diags`` collects a tarball
(`tortie.node.diags`); ``checksystem`` checks the kernel and binaries
(`tortie.node.checksystem`).
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


NODE_USAGE = "usage: tortiectl node <status|run|diags|checksystem> [options]"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("node", help="run, check and inspect the Tortie node on this host")
    sub = p.add_subparsers(dest="node_command", metavar="<node command>")
    s = sub.add_parser("status", help="Calico processes and BGP peers of this host")
    s.add_argument("--bird-socket", default=None, help="BIRD's control socket")
    s.add_argument("--allow-version-mismatch", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("-c", "--config", default=None, help=argparse.SUPPRESS)
    _register_run(sub)
    _register_diags(sub)
    _register_checksystem(sub)


def _register_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from tortie.node.config import DEFAULT_LOG_DIR

    r = sub.add_parser("run", help="start tortie-node (Felix, confd, BIRD) on this host")
    r.add_argument("--name", default=None, help="the node's name (default: the host name)")
    r.add_argument("--ip", default=None, help="IPv4 address[/prefix], autodetect or none")
    r.add_argument("--ip6", default=None, help="IPv6 address[/prefix], autodetect or none")
    r.add_argument("--as", dest="as_number", default=None, help="the node's AS number")
    r.add_argument(
        "--ip-autodetection-method",
        default=None,
        help="first-found, can-reach=DEST, interface=REGEX,..., skip-interface=REGEX,..., "
        "cidr=CIDR,... (default first-found)",
    )
    r.add_argument("--ip6-autodetection-method", default=None, help="as above, for IPv6")
    r.add_argument("--log-dir", default=DEFAULT_LOG_DIR, help=f"default {DEFAULT_LOG_DIR}")
    r.add_argument("--backend", default="bird", choices=("bird", "vxlan", "none"))
    r.add_argument("--no-default-ippools", action="store_true", help="create no default pools")
    r.add_argument("--dryrun", action="store_true", help="print the command, start nothing")
    r.add_argument("--init-system", action="store_true", help="run in the foreground")
    r.add_argument("--disable-docker-networking", action="store_true", help="no libnetwork")
    r.add_argument("--docker-networking-ifprefix", default="cali", help=argparse.SUPPRESS)
    r.add_argument(
        "--use-docker-networking-container-labels", action="store_true", help=argparse.SUPPRESS
    )
    r.add_argument("--node-image", default=None, help=argparse.SUPPRESS)  # no container here
    r.add_argument("--pidfile", default=None, help="default <run dir>/tortie-node.pid")
    r.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for start-up")
    r.add_argument("--allow-version-mismatch", action="store_true", help=argparse.SUPPRESS)
    r.add_argument("-c", "--config", default=None, help="client configuration file")


def _register_diags(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from tortie.node.config import DEFAULT_LOG_DIR

    d = sub.add_parser("diags", help="collect this node's diagnostics into a tarball")
    d.add_argument("--log-dir", default=None, help=f"default $TORTIE_LOG_DIR or {DEFAULT_LOG_DIR}")
    d.add_argument("--max-logs", type=int, default=5, help="rotated log files kept per process")
    d.add_argument("--bird-socket", default=None, help="BIRD's control socket")
    d.add_argument("--dir", default=None, help="where to create the temporary directory")
    d.add_argument("--allow-version-mismatch", action="store_true", help=argparse.SUPPRESS)
    d.add_argument("-c", "--config", default=None, help="client configuration file")


def _register_checksystem(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = sub.add_parser("checksystem", help="check this host can run a Tortie node")
    c.add_argument("-f", "--kernel-config", default=None, help="kernel config file to read")
    c.add_argument("--backend", default="bird", choices=("bird", "vxlan", "none"))
    c.add_argument("--allow-version-mismatch", action="store_true", help=argparse.SUPPRESS)


def cmd_node(args: argparse.Namespace, client_factory: Callable) -> int:
    command = getattr(args, "node_command", None)
    if command == "run":
        return cmd_run(args)
    if command == "diags":
        return cmd_diags(args)
    if command == "checksystem":
        return cmd_checksystem(args)
    if command != "status":
        raise CtlError(NODE_USAGE, code=2)
    if not felix_running():
        raise CtlError("Calico process is not running.", code=1)
    print(status_text(_socket(args.bird_socket)), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``tortiectl node run`` (see `tortie.node.launch`)."""
    import shlex
    import sys

    from tortie.datastore.config import ConfigError as DatastoreConfigError
    from tortie.datastore.config import load_config
    from tortie.node import launch
    from tortie.node.config import ConfigError

    opts = launch.RunOptions(
        name=args.name,
        ip=args.ip,
        ip6=args.ip6,
        as_number=args.as_number,
        ip_method=args.ip_autodetection_method,
        ip6_method=args.ip6_autodetection_method,
        log_dir=args.log_dir,
        backend=args.backend,
        no_default_pools=args.no_default_ippools,
        disable_docker_networking=args.disable_docker_networking,
        docker_ifprefix=args.docker_networking_ifprefix,
        docker_labels=args.use_docker_networking_container_labels,
    )
    try:
        datastore = launch.datastore_env(load_config(args.config))
        env = launch.node_env(opts, datastore, os.environ)
    except (ConfigError, DatastoreConfigError) as exc:
        raise CtlError(f"invalid option: {exc}", code=1) from None
    argv = launch.node_argv()
    shown = {k: v for k, v in env.items() if k not in os.environ or os.environ[k] != v}
    command = " ".join(
        [*(f"{k}={shlex.quote(v)}" for k, v in sorted(shown.items())), *map(shlex.quote, argv)]
    )
    if args.dryrun:
        print("Use the following command to start tortie-node:\n")
        print(f"{command}\n")
        return 0
    run_dir = launch.run_dir(env)
    pidfile = args.pidfile or f"{run_dir}/tortie-node.pid"
    pid = launch.running_pid(pidfile)
    if pid is not None:
        raise CtlError(f"tortie-node is already running (pid {pid}): stop it first", code=1)
    if args.init_system:
        sys.stdout.flush()
        os.execvpe(argv[0], argv, env)
    print("Running the following command to start tortie-node:\n")
    print(f"{command}\n")
    try:
        proc = launch.start_detached(argv, env, args.log_dir, pidfile)
    except OSError as exc:
        raise CtlError(f"could not start tortie-node: {exc}", code=1) from None
    print(f"tortie-node started (pid {proc.pid}, pidfile {pidfile}), checking progress logs.")
    ok, message = launch.wait_started(
        proc, f"{run_dir}/tortie-node.json", args.log_dir, args.timeout, sys.stdout.write
    )
    if not ok:
        raise CtlError(message, code=1)
    print(message)
    return 0


def cmd_diags(args: argparse.Namespace) -> int:
    """``tortiectl node diags`` (see `tortie.node.diags`)."""
    import sys

    from tortie.node.config import DEFAULT_CONFD_DIR, DEFAULT_LOG_DIR, DEFAULT_RUN_DIR
    from tortie.node.diags import collect_diags

    env = os.environ
    run_dir = env.get("TORTIE_RUN_DIR") or DEFAULT_RUN_DIR
    ctl = [sys.executable, "-m", "tortie.ctl.main", *(["-c", args.config] if args.config else [])]
    collect_diags(
        log_dir=args.log_dir or env.get("TORTIE_LOG_DIR") or DEFAULT_LOG_DIR,
        bird_socket=_socket(args.bird_socket) or f"{run_dir}/bird.ctl",
        status_file=f"{run_dir}/tortie-node.json",
        confd_dir=env.get("CONFD_CONFIG_DIR") or DEFAULT_CONFD_DIR,
        ctl_argv=ctl,
        max_logs=args.max_logs,
        workdir=args.dir,
    )
    return 0


def cmd_checksystem(args: argparse.Namespace) -> int:
    """``tortiectl node checksystem`` (see `tortie.node.checksystem`)."""
    from tortie.node.checksystem import run_checksystem

    if os.geteuid() != 0:
        raise CtlError("This command must be run as root.", code=1)
    report = run_checksystem(kernel_config=args.kernel_config, backend=args.backend)
    print("\n".join(report.lines))
    return 0 if report.ok else 1


def _socket(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("BIRD_CTL"):
        return os.environ["BIRD_CTL"]
    run_dir = os.environ.get("TORTIE_RUN_DIR")  # where tortie-node keeps BIRD's socket
    candidates = [f"{run_dir}/bird.ctl", *DEFAULT_SOCKETS] if run_dir else DEFAULT_SOCKETS
    return next((s for s in candidates if os.path.exists(s)), None)


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

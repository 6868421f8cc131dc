"""tortiectl entry point: argument parsing and dispatch, calicoctl's commands and flags.

Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tortie import __version__
from tortie.ctl.errors import CtlError

DEFAULT_CONFIG = "/etc/tortie/tortiectl.cfg"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default=None,
        help=f"client configuration file (default {DEFAULT_CONFIG}, or ETCD_* environment)",
    )
    p.add_argument("--allow-version-mismatch", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--context", default=None, help=argparse.SUPPRESS)


def _file_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "-f",
        "--filename",
        required=required,
        help="file or directory of YAML/JSON resources, or - for stdin",
    )
    p.add_argument("-R", "--recursive", action="store_true", help="process directories recursively")
    p.add_argument("--skip-empty", action="store_true", help="ignore files with no resources")
    p.add_argument("-n", "--namespace", default=None, help="namespace (namespaced kinds only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tortiectl",
        description="Manage Tortie (Calico-compatible) resources, IPAM and nodes.",
    )
    _common(parser)
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    for name, helptext in (
        ("create", "create resources from a file"),
        ("apply", "create or update resources from a file"),
        ("replace", "replace existing resources from a file"),
    ):
        p = sub.add_parser(name, help=helptext)
        _common(p)
        _file_args(p, required=True)
        if name == "create":
            p.add_argument("--skip-exists", action="store_true", help="skip existing resources")

    p = sub.add_parser("delete", help="delete resources by type and name, or from a file")
    _common(p)
    _file_args(p, required=False)
    p.add_argument("kind", nargs="?", help="resource type (e.g. gnp, ippool, node)")
    p.add_argument("names", nargs="*", help="resource name(s)")
    p.add_argument("--skip-not-exists", action="store_true", help="ignore missing resources")

    p = sub.add_parser("get", help="show resources")
    _common(p)
    _file_args(p, required=False)
    p.add_argument("kind", nargs="?", help="resource type (e.g. gnp, ippool, node)")
    p.add_argument("names", nargs="*", help="resource name(s)")
    p.add_argument(
        "-o",
        "--output",
        default="ps",
        help="ps (default), wide, yaml, json or custom-columns=COL,...",
    )
    p.add_argument("-A", "--all-namespaces", action="store_true", help="all namespaces")
    p.add_argument("--export", action="store_true", help="drop cluster-specific metadata")

    p = sub.add_parser("patch", help="patch a resource")
    _common(p)
    p.add_argument("kind")
    p.add_argument("name")
    p.add_argument("-p", "--patch", required=True, help="the patch (JSON or YAML)")
    p.add_argument(
        "-t",
        "--type",
        default="strategic",
        choices=("strategic", "merge", "json"),
        help="strategic and merge: RFC 7386 merge patch; json: RFC 6902 operations",
    )
    p.add_argument("-n", "--namespace", default=None)

    p = sub.add_parser("label", help="add, change or remove a label on a resource")
    _common(p)
    p.add_argument("kind")
    p.add_argument("name")
    p.add_argument("label", help="key=value, or key with --remove")
    p.add_argument("--overwrite", action="store_true", help="change an existing value")
    p.add_argument("--remove", action="store_true", help="remove the label")
    p.add_argument("-n", "--namespace", default=None)

    p = sub.add_parser("validate", help="validate resource files without touching the datastore")
    _common(p)
    _file_args(p, required=True)

    from tortie.ctl import ipam, lab, node

    lab.register(sub)
    ipam.register(sub)
    node.register(sub)

    p = sub.add_parser("version", help="show client and cluster version")
    _common(p)
    p.add_argument("--client", action="store_true", help="client version only")
    return parser


def cmd_version(args: argparse.Namespace, client_factory: Callable) -> int:
    from tortie.datastore.client import ResourceError

    print(f"Client Version:    v{__version__}")
    if args.client:
        return 0
    try:
        info = client_factory().get("ClusterInformation", "default")
    except ResourceError as exc:
        print("Cluster Version:   unknown")
        print("Cluster Type:      unknown")
        sys.stderr.write(f"could not read ClusterInformation(default): {exc}\n")
        return 0
    spec = info.spec  # type: ignore[attr-defined]
    print(f"Cluster Version:   {spec.calico_version or 'unknown'}")
    print(f"Cluster Type:      {spec.cluster_type or 'unknown'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from tortie.ctl import ipam, lab, node, resources

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    config = args.config

    def client_factory():  # type: ignore[no-untyped-def]
        from tortie.ctl.context import open_client

        return open_client(config)

    commands: dict[str, Callable[[argparse.Namespace, Callable], int]] = {
        "create": resources.cmd_write,
        "apply": resources.cmd_write,
        "replace": resources.cmd_write,
        "delete": resources.cmd_delete,
        "get": resources.cmd_get,
        "patch": resources.cmd_patch,
        "label": resources.cmd_label,
        "validate": resources.cmd_validate,
        "version": cmd_version,
        "lab": lab.cmd_lab,
        "ipam": ipam.cmd_ipam,
        "node": node.cmd_node,
    }
    for attr in ("skip_exists", "skip_not_exists", "skip_empty", "recursive", "export"):
        if not hasattr(args, attr):
            setattr(args, attr, False)
    for attr in ("namespace", "filename"):
        if not hasattr(args, attr):
            setattr(args, attr, None)
    try:
        return commands[args.command](args, client_factory)
    except CtlError as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # datastore errors and anything unforeseen: a message, no traceback
        from tortie.datastore.backend import DatastoreError
        from tortie.datastore.config import ConfigError

        if isinstance(exc, DatastoreError | ConfigError):
            sys.stderr.write(f"error: {exc}\n")
            return 1
        if "--debug-traceback" in sys.argv or __import__("os").environ.get("TORTIE_DEBUG"):
            raise
        sys.stderr.write(f"internal error: {type(exc).__name__}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""`tortie-cni`: install the plugin binaries, write a network configuration, run the daemon.

    tortie-cni install --bin-dir /opt/cni/bin        # writes `tortie` and `tortie-ipam`
    tortie-cni config --name k8s-pod-network --etcd-endpoints http://10.0.0.1:2379 \\
        [--nodename node1] [--mtu 1440] [--policy k8s] > /etc/cni/net.d/10-tortie.conflist
    tortie-cni daemon [--socket NAME] ...            # see tortie.cni.daemon

The installed binaries are launcher scripts: `#!<this venv's python> -IS` (isolated, no
`site`: the interpreter starts in ~10 ms instead of ~25 ms), the package's and its
dependencies' directories put on `sys.path` explicitly, then `tortie.cni.client.main`.
`install_plugins()` and `netconf()` are the same steps as functions, for tests and tortie-node.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["PLUGIN_NAMES", "install_plugins", "launcher", "main", "netconf"]

PLUGIN_NAMES = ("tortie", "tortie-ipam")


def _import_paths() -> list[str]:
    import tortie

    root = str(Path(tortie.__file__).resolve().parent.parent)
    purelib = sysconfig.get_paths()["purelib"]
    return list(dict.fromkeys([root, purelib]))


def launcher(plugin: str, python: str | None = None, paths: Iterable[str] | None = None) -> str:
    """The text of the launcher script for `plugin`."""
    python = python or sys.executable
    paths = list(paths) if paths is not None else _import_paths()
    return (
        f"#!{python} -IS\n"
        f"# The {plugin} CNI plugin of Tortie, installed by `tortie-cni install`.\n"
        "import sys\n"
        f"sys.path[0:0] = {paths!r}\n"
        "from tortie.cni.client import main\n"
        f"sys.exit(main({plugin!r}))\n"
    )


def install_plugins(bin_dir: str | os.PathLike[str], python: str | None = None) -> list[Path]:
    """Write the `tortie` and `tortie-ipam` launchers into `bin_dir` (atomically replaced)."""
    out = []
    directory = Path(bin_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = _import_paths()
    for plugin in PLUGIN_NAMES:
        target = directory / plugin
        tmp = directory / f".{plugin}.tmp{os.getpid()}"
        tmp.write_text(launcher(plugin, python, paths))
        tmp.chmod(0o755)
        tmp.replace(target)
        out.append(target)
    return out


def netconf(
    name: str,
    *,
    etcd_endpoints: str,
    nodename: str | None = None,
    cni_version: str = "1.0.0",
    mtu: int = 0,
    policy: str = "",
    ipam: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    conflist: bool = True,
) -> dict[str, Any]:
    """A Calico-style network configuration (a conflist by default) for the tortie plugin."""
    plugin: dict[str, Any] = {
        "type": "tortie",
        "datastore_type": "etcdv3",
        "etcd_endpoints": etcd_endpoints,
        "log_level": "info",
        "ipam": ipam or {"type": "tortie-ipam"},
    }
    if nodename:
        plugin["nodename"] = nodename
    if mtu:
        plugin["mtu"] = mtu
    if policy:
        plugin["policy"] = {"type": policy}
    plugin.update(extra or {})
    if not conflist:
        return {"cniVersion": cni_version, "name": name, **plugin}
    return {"cniVersion": cni_version, "name": name, "plugins": [plugin]}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["daemon"]:
        from tortie.cni.daemon import main as daemon_main

        return daemon_main(argv[1:])
    parser = argparse.ArgumentParser(prog="tortie-cni", description="Tortie's CNI plugin")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_install = sub.add_parser("install", help="write the plugin binaries into a CNI bin dir")
    p_install.add_argument("--bin-dir", default="/opt/cni/bin")
    p_install.add_argument("--python", default=sys.executable)
    p_conf = sub.add_parser("config", help="print a network configuration list")
    p_conf.add_argument("--name", default="k8s-pod-network")
    p_conf.add_argument("--etcd-endpoints", default="http://127.0.0.1:2379")
    p_conf.add_argument("--nodename", default=None)
    p_conf.add_argument("--cni-version", default="1.0.0")
    p_conf.add_argument("--mtu", type=int, default=0)
    p_conf.add_argument("--policy", default="", choices=["", "k8s"])
    sub.add_parser("daemon", help="run the node's CNI daemon (tortie-cni daemon --help)")
    opts = parser.parse_args(argv)
    if opts.cmd == "install":
        for path in install_plugins(opts.bin_dir, opts.python):
            print(path)
        return 0
    conf = netconf(opts.name, etcd_endpoints=opts.etcd_endpoints, nodename=opts.nodename,
                   cni_version=opts.cni_version, mtu=opts.mtu, policy=opts.policy)
    print(json.dumps(conf, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``tortiectl node diags``: one tarball with what support needs from a node (calicoctl's diags).

Collected into a temporary directory, then ``diags-<YYYYMMDD_HHMMSS>.tar.gz`` inside it:

- host networking: ``ss -antp`` (``netstat``), ``ip addr``/``link``/``route``/``rule``/
  ``neigh`` for both families (all routing tables), ``iptables-save -c`` and
  ``ip6tables-save -c``, ``ipset list``;
- BIRD over its control socket: ``show status``, ``show protocols all``, ``show route all``;
- tortie-node: its status file and every log under the log directory (each process's
  ``current`` plus up to ``max_logs`` rotated files), confd's status file and ``bird.cfg``;
- the datastore through tortiectl: nodes, IP pools, BGP configuration and peers, Felix
  configuration, cluster information, IPAM configuration, host endpoints, policies, workload
  endpoints (``-o yaml``), and ``tortiectl ipam show --show-blocks``.

A command that fails is reported (``Failed to run command: ...``) and the rest goes on; when
the datastore does not answer, the remaining datastore dumps are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

__all__ = ["HOST_COMMANDS", "RESOURCE_KINDS", "collect_diags"]

HOST_COMMANDS: tuple[tuple[str, str, list[str]], ...] = (
    ("Dumping netstat", "netstat", ["ss", "-antp"]),
    ("Dumping routes (IPv4)", "ipv4_route", ["ip", "-4", "route", "show", "table", "all"]),
    ("Dumping routes (IPv6)", "ipv6_route", ["ip", "-6", "route", "show", "table", "all"]),
    ("Dumping routing rules", "ip_rule", ["ip", "rule", "show"]),
    ("Dumping interface info (IPv4)", "ipv4_addr", ["ip", "-4", "addr", "show"]),
    ("Dumping interface info (IPv6)", "ipv6_addr", ["ip", "-6", "addr", "show"]),
    ("Dumping links", "ip_link", ["ip", "-d", "link", "show"]),
    ("Dumping neighbours (IPv4)", "ipv4_neigh", ["ip", "-4", "neigh", "show"]),
    ("Dumping neighbours (IPv6)", "ipv6_neigh", ["ip", "-6", "neigh", "show"]),
    ("Dumping iptables (IPv4)", "ipv4_tables", ["iptables-save", "-c"]),
    ("Dumping iptables (IPv6)", "ipv6_tables", ["ip6tables-save", "-c"]),
    ("Dumping ipsets", "ipsets", ["ipset", "list"]),
)

RESOURCE_KINDS: tuple[tuple[str, bool], ...] = (
    ("nodes", False),
    ("ippools", False),
    ("bgpconfigurations", False),
    ("bgppeers", False),
    ("felixconfigurations", False),
    ("clusterinformations", False),
    ("ipamconfigurations", False),
    ("hostendpoints", False),
    ("tiers", False),
    ("globalnetworkpolicies", False),
    ("networkpolicies", True),
    ("workloadendpoints", True),
)

BIRD_COMMANDS = (
    ("show status", "bird_status"),
    ("show protocols all", "bird_protocols"),
    ("show route all", "bird_routes"),
)


def _say(out: Callable[[str], None], text: str) -> None:
    out(text + "\n")


def _run(argv: Sequence[str], timeout: float = 30.0) -> tuple[str, str | None]:
    """(stdout, error or None)."""
    if shutil.which(argv[0]) is None and not os.path.isabs(argv[0]):
        return "", f"{argv[0]}: command not found"
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "", str(exc)
    if proc.returncode != 0:
        return proc.stdout, (proc.stderr.strip() or f"exit status {proc.returncode}")
    return proc.stdout, None


def _copy_logs(log_dir: Path, dest: Path, max_logs: int) -> int:
    """Each process's ``current`` and its newest ``max_logs`` rotations; files copied."""
    copied = 0
    if not log_dir.is_dir():
        return 0
    for sub in sorted(p for p in log_dir.iterdir() if p.is_dir()):
        files = [sub / "current"] + [sub / f"current.{i}" for i in range(1, max_logs + 1)]
        extra = [p for p in sub.iterdir() if p.is_file() and not p.name.startswith("current")]
        for f in files + extra:
            if f.is_file():
                target = dest / sub.name / f.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
                copied += 1
    for f in log_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
            copied += 1
    return copied


def collect_diags(
    *,
    log_dir: str,
    bird_socket: str | None,
    status_file: str | None,
    confd_dir: str | None,
    ctl_argv: Sequence[str],
    max_logs: int = 5,
    out: Callable[[str], None] = sys.stdout.write,
    workdir: str | None = None,
) -> Path:
    """Collect everything (module docstring) and return the tarball's path."""
    tmp = Path(tempfile.mkdtemp(prefix="tortie-diags", dir=workdir))
    root = tmp / "diagnostics"
    root.mkdir()
    _say(out, "Collecting diagnostics")
    _say(out, f"Using temp dir: {tmp}")
    (root / "date").write_text(datetime.now().astimezone().isoformat() + "\n")
    (root / "hostname").write_text(os.uname().nodename + "\n")

    for what, name, argv in HOST_COMMANDS:
        _say(out, what)
        text, err = _run(argv)
        (root / name).write_text(text + (f"\n# error: {err}\n" if err else ""))
        if err:
            _say(out, f"Failed to run command: {' '.join(argv)}\nError: {err}")

    if bird_socket:
        from tortie.confd.bird import BirdControl, BirdError

        _say(out, "Dumping BIRD status")
        control = BirdControl(bird_socket, timeout=10.0)
        for command, name in BIRD_COMMANDS:
            try:
                reply = control.request(command)
                (root / name).write_text("\n".join(t for _, t in reply) + "\n")
            except BirdError as exc:
                _say(out, f"Failed to query BIRD ({command}): {exc}")
                break

    node_dir = root / "tortie-node"
    node_dir.mkdir()
    if status_file and os.path.exists(status_file):
        shutil.copy2(status_file, node_dir / os.path.basename(status_file))
    if confd_dir:
        for name in ("bird.cfg", "confd-status.json", "bird.cfg.rejected"):
            path = Path(confd_dir) / name
            if path.is_file():
                shutil.copy2(path, node_dir / name)

    _say(out, "Copying Tortie logs")
    logs = root / "logs"
    logs.mkdir()
    if _copy_logs(Path(log_dir), logs, max_logs) == 0:
        _say(out, f"No logs found in {log_dir}")

    _say(out, "Dumping datastore resources")
    resources = root / "resources"
    resources.mkdir()
    datastore_ok = True
    for kind, namespaced in RESOURCE_KINDS:
        if not datastore_ok:
            break
        argv = [*ctl_argv, "get", kind, "-o", "yaml", *(["-A"] if namespaced else [])]
        text, err = _run(argv, timeout=20)
        (resources / f"{kind}.yaml").write_text(text + (f"\n# error: {err}\n" if err else ""))
        if err:
            _say(out, f"Failed to run command: tortiectl get {kind}\nError: {err}")
            if "connect" in err.lower() or "unavailable" in err.lower() or "timed out" in err:
                _say(out, "The datastore does not answer: skipping the other datastore dumps")
                datastore_ok = False
    if datastore_ok:
        text, err = _run([*ctl_argv, "ipam", "show", "--show-blocks"], timeout=20)
        (resources / "ipam_show").write_text(text + (f"\n# error: {err}\n" if err else ""))

    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    tarball = tmp / f"diags-{stamp}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(root, arcname=f"diags-{stamp}")
    shutil.rmtree(root)
    _say(out, f"Diags saved to {tarball}")
    _say(out, "If required, you can upload the diagnostics bundle to a file sharing service.")
    return tarball

"""``tortiectl node checksystem``: can this host run a Tortie node? (calicoctl's checksystem).

Four sections, each row printed as calicoctl prints it (a name padded to 20 between tabs,
then OK or FAIL):

1. **Kernel version**: at least 2.6.24 (network namespaces and veth), as calicoctl.
2. **Kernel modules**: calicoctl's list, each found as calicoctl finds it (``modules.dep``,
   ``modules.builtin``, ``lsmod``, the kernel config, ``/proc/net/ip_tables_matches``), *or*
   proven by a feature probe (below) — hosts without ``/lib/modules`` (containers, some VMs)
   are judged by what works. Modules Tortie does not use (``vfio-pci``, ``xt_bpf``, ``ipt_ipvs``,
   ``xt_u32``, ``nf_conntrack_netlink``) and the IPv6 ones only warn.
3. **Kernel features** (Tortie's addition): probes run in a scratch network namespace
   (``unshare --net``) so the host's own tables and links are never touched: an ipset, the
   iptables matches and targets Felix writes, IPv6 iptables, a VXLAN device; IPIP and
   WireGuard devices are reported but optional (IPIP pools and WireGuard need them).
4. **Binaries**: ``ip``, ``iptables-restore``/``-save``, ``ipset``, and ``bird`` for the BIRD
   backend.

The verdict line is calicoctl's: ``System meets minimum system requirements to run Calico!``
or ``System doesn't meet one or more minimum systems requirements to run Calico``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "MIN_KERNEL",
    "REQUIRED_MODULES",
    "CheckReport",
    "compare_versions",
    "format_row",
    "run_checksystem",
]

MIN_KERNEL = "2.6.24"

#: calicoctl's modules -> the kernel config option it also looks for.
REQUIRED_MODULES: dict[str, str] = {
    "ip_set": "CONFIG_IP_SET",
    "ip6_tables": "CONFIG_IP6_NF_IPTABLES",
    "ip_tables": "CONFIG_IP_NF_IPTABLES",
    "ipt_ipvs": "CONFIG_NETFILTER_XT_MATCH_IPVS",
    "vfio-pci": "CONFIG_VFIO",
    "xt_bpf": "CONFIG_BPF",
    "ipt_REJECT": "CONFIG_NFT_REJECT",
    "ipt_rpfilter": "CONFIG_IP_NF_MATCH_RPFILTER",
    "xt_rpfilter": "CONFIG_IP_NF_MATCH_RPFILTER",
    "ipt_set": "CONFIG_NET_EMATCH_IPSET",
    "nf_conntrack_netlink": "CONFIG_NF_CT_NETLINK",
    "xt_addrtype": "CONFIG_NETFILTER_XT_MATCH_ADDRTYPE",
    "xt_conntrack": "CONFIG_NETFILTER_XT_MATCH_CONNTRACK",
    "xt_icmp": "icmp",
    "xt_icmp6": "icmp",
    "xt_mark": "CONFIG_IP_NF_TARGET_MARK",
    "xt_multiport": "CONFIG_IP_NF_MATCH_MULTIPORT",
    "xt_set": "CONFIG_NETFILTER_XT_SET",
    "xt_u32": "CONFIG_NETFILTER_XT_MATCH_U32",
}
#: Modules whose absence only warns: Tortie does not use them, or only for IPv6.
OPTIONAL_MODULES = {"ipt_ipvs", "vfio-pci", "xt_bpf", "xt_u32", "nf_conntrack_netlink"}
IPV6_MODULES = {"ip6_tables", "xt_icmp6"}
#: module -> the feature probe that proves it works.
MODULE_PROBES = {
    "ip_set": "ipset",
    "ip_tables": "iptables",
    "ip6_tables": "ip6tables",
    "ipt_set": "set match",
    "xt_set": "set match",
    "xt_conntrack": "conntrack",
    "ipt_REJECT": "REJECT",
    "ipt_rpfilter": "rpfilter",
    "xt_rpfilter": "rpfilter",
    "xt_addrtype": "addrtype",
    "xt_icmp": "icmp",
    "xt_icmp6": "icmp6",
    "xt_mark": "mark",
    "xt_multiport": "multiport",
    "xt_u32": "u32",
    "ipt_ipvs": "ipvs",
}
OPTIONAL_FEATURES = {"ipip device", "wireguard device", "u32", "ipvs", "rpfilter"}

# Runs inside `unshare --net`: every probe in one fresh namespace; prints {name: error|null}.
PROBE_SCRIPT = r"""
import json, subprocess
def run(*argv, data=None):
    p = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=20)
    return None if p.returncode == 0 else (p.stderr or p.stdout or f"exit {p.returncode}").strip()
out = {}
out["ipset"] = run("ipset", "create", "tortie-probe", "hash:net")
out["iptables"] = run("iptables", "-w", "-N", "TORTIE-PROBE")
rules = {
    "set match": ["-m", "set", "--match-set", "tortie-probe", "src"],
    "conntrack": ["-m", "conntrack", "--ctstate", "INVALID"],
    "mark": ["-m", "mark", "--mark", "0x10000/0x10000"],
    "MARK": ["-j", "MARK", "--set-xmark", "0x10000/0x10000"],
    "multiport": ["-p", "tcp", "-m", "multiport", "--dports", "22,179"],
    "addrtype": ["-m", "addrtype", "--dst-type", "LOCAL"],
    "icmp": ["-p", "icmp", "--icmp-type", "8"],
    "REJECT": ["-j", "REJECT"],
    "comment": ["-m", "comment", "--comment", "tortie"],
    "u32": ["-m", "u32", "--u32", "0>>22&0x3C@4=0x29"],
    "ipvs": ["-m", "ipvs", "--ipvs"],
}
for name, rule in rules.items():
    out[name] = run("iptables", "-w", "-A", "TORTIE-PROBE", *rule)
out["rpfilter"] = run("iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-m", "rpfilter")
out["ip6tables"] = run("ip6tables", "-w", "-N", "TORTIE-PROBE")
out["icmp6"] = run("ip6tables", "-w", "-A", "TORTIE-PROBE", "-p", "ipv6-icmp",
                   "--icmpv6-type", "128")
out["vxlan device"] = run("ip", "link", "add", "vxlan-probe", "type", "vxlan", "id", "4096",
                          "dstport", "4789")
out["ipip device"] = run("ip", "link", "add", "tunl-probe", "type", "ipip",
                         "remote", "192.0.2.1")
out["wireguard device"] = run("ip", "link", "add", "wg-probe", "type", "wireguard")
print(json.dumps(out))
"""


def format_row(value: str, result: str) -> str:
    return f"\t\t{value:<20s}\t\t\t\t\t{result}"


def compare_versions(version: str, minimum: str) -> bool:
    """``version >= minimum`` on the leading numeric parts (``6.18.0-fc`` -> 6, 18, 0)."""

    def parts(v: str) -> list[int]:
        nums = re.findall(r"\d+", v.split("-", 1)[0])
        return [int(n) for n in nums]

    return parts(version) >= parts(minimum)


@dataclass
class CheckReport:
    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def row(self, value: str, result: str, fatal: bool = True) -> None:
        self.lines.append(format_row(value, result))
        if result != "OK" and fatal:
            self.ok = False


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _kernel_config(release: str, override: str | None) -> str | None:
    if override:
        return override
    for path in (
        "/usr/src/linux/.config",
        f"/boot/config-{release}",
        f"/usr/src/linux-{release}/.config",
        f"/usr/src/linux-headers-{release}/.config",
        f"/lib/modules/{release}/build/.config",
    ):
        if os.path.exists(path):
            return path
    return None


def module_found(module: str, option: str, release: str, kernel_config: str | None) -> bool:
    """calicoctl's search: loadable, built-in, loaded, kernel config, iptables matches."""
    ko = re.compile(rf"/{re.escape(module)}\.ko")
    for path in (f"/lib/modules/{release}/modules.dep", f"/lib/modules/{release}/modules.builtin"):
        if any(ko.search(line) for line in _read_lines(path)):
            return True
    if any(line.split(" ", 1)[0] == module for line in _read_lines("/proc/modules")):
        return True
    if kernel_config and any(line.startswith(f"{option}=") for line in _read_lines(kernel_config)):
        return True
    return option in _read_lines("/proc/net/ip_tables_matches")


def probe_features(
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> dict[str, str | None] | str:
    """Feature probes in a scratch network namespace: {feature: error or None}, or why the
    probes could not run at all."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare (util-linux) is not installed"
    try:
        proc = run(
            [unshare, "--net", "--", sys.executable, "-c", PROBE_SCRIPT],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        return (proc.stderr or proc.stdout).strip() or f"exit {proc.returncode}"
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"unexpected probe output: {proc.stdout[:200]!r}"


def run_checksystem(
    *,
    kernel_config: str | None = None,
    backend: str = "bird",
    release: str | None = None,
    features: Mapping[str, str | None] | str | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> CheckReport:
    """Every check (see the module docstring); ``features`` may be given (tests)."""
    report = CheckReport()
    release = release or os.uname().release
    report.lines.append("Checking kernel version...")
    if compare_versions(release, MIN_KERNEL):
        report.row(release, "OK")
    else:
        report.row(release, "FAIL")
        report.lines.append(
            f"Minimum kernel version to run Calico is {MIN_KERNEL}. Detected kernel version: "
            f"{release}"
        )

    if features is None:
        features = probe_features()
    probed: Mapping[str, str | None] = features if isinstance(features, Mapping) else {}

    report.lines.append("Checking kernel modules...")
    config_path = _kernel_config(release, kernel_config)
    missing = []
    for module, option in sorted(REQUIRED_MODULES.items()):
        probe = MODULE_PROBES.get(module)
        works = probe is not None and probe in probed and probed[probe] is None
        if works or module_found(module, option, release, config_path):
            report.row(module, "OK")
            continue
        missing.append(module)
        report.lines.append(
            f"WARNING: Unable to detect the {module} module as Loaded/Builtin module or lsmod"
        )
        fatal = module not in OPTIONAL_MODULES and module not in IPV6_MODULES
        report.row(module, "FAIL" if fatal else "FAIL (optional)", fatal=fatal)
    if "ip6_tables" in missing:
        report.lines.append(
            "WARNING: IPv6 will be unavailable as ip6_tables kernel module is not found"
        )

    report.lines.append("Checking kernel features (probed in a scratch network namespace)...")
    if isinstance(features, str):
        report.lines.append(f"WARNING: could not run the probes: {features}")
    else:
        for name, error in probed.items():
            if error is None:
                report.row(name, "OK")
            else:
                optional = name in OPTIONAL_FEATURES
                report.row(name, "FAIL (optional)" if optional else "FAIL", fatal=not optional)
                if not optional:
                    report.lines.append(f"\t\t  {error.splitlines()[0][:120]}")

    report.lines.append("Checking binaries...")
    needed = ["ip", "iptables-restore", "iptables-save", "ipset"]
    if backend == "bird":
        needed.append("bird")
    for binary in [*needed, "ip6tables-restore", "conntrack"]:
        found = which(binary)
        report.row(binary, "OK" if found else "FAIL", fatal=binary in needed)

    if report.ok:
        report.lines.append("System meets minimum system requirements to run Calico!")
    else:
        report.lines.append(
            "System doesn't meet one or more minimum systems requirements to run Calico"
        )
    return report

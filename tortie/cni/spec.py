"""The CNI protocol itself, independent of Calico: versions, environment, errors and results.

What the runtime hands a plugin (CNI spec 1.1, with the older versions it still allows):

- `CNI_COMMAND` (`ADD`, `DEL`, `CHECK`, `STATUS`, `GC`, `VERSION`), `CNI_CONTAINERID`,
  `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` (`K=V;K=V`), `CNI_PATH` (`:`-separated) in the
  environment (`cmd_args_from_env` checks which each command needs: error code 4);
- the network configuration as JSON on stdin (with `prevResult` when chained, and
  `cni.dev/valid-attachments` for GC).

What it gets back: a result on stdout (ADD), nothing (DEL, CHECK, STATUS, GC), the version
info (VERSION), or an error `{"cniVersion", "code", "msg", "details"}` with a non-zero exit.
Results are written in the format of the configuration's `cniVersion`: `ip4`/`ip6` objects
for 0.1.0/0.2.0, `ips` with a `version` field for 0.3.x/0.4.0, without it for 1.x (1.1 adds
interface and route `mtu`). `Result.from_json` reads any of them (a chained `prevResult`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CURRENT_VERSION",
    "SUPPORTED_VERSIONS",
    "CNIError",
    "CmdArgs",
    "IPConfig",
    "Interface",
    "Result",
    "Route",
    "cmd_args_from_env",
    "parse_cni_args",
    "parse_version",
    "version_info",
]

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# Well-known error codes (CNI spec "Error codes"); 100 and up are the plugin's own.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
# Tortie's own codes.
PLUGIN_ERROR = 100  # anything else (Calico's CNI plugin reports all its errors as 100)
DATASTORE_ERROR = 101  # the datastore refused or failed an operation
NO_ADDRESSES = 102  # IPAM found no free address in the pools this request may use
DATAPLANE_ERROR = 103  # creating or configuring the veth, addresses or routes failed
CHECK_FAILED = 104  # CHECK found the container's networking not as ADD left it
IPAM_PLUGIN_ERROR = 105  # the delegated IPAM plugin failed or returned garbage


class CNIError(Exception):
    """An error to report to the runtime as CNI error JSON (and a non-zero exit)."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg if not details else f"{msg}: {details}")
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str = CURRENT_VERSION) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def parse_version(version: str) -> tuple[int, int, int]:
    """`"0.3.1"` -> (0, 3, 1); CNIError 1 when it is not a version at all."""
    parts = version.split(".")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if not 1 <= len(nums) <= 3 or any(n < 0 for n in nums):
        raise CNIError(INCOMPATIBLE_VERSION, f"invalid cniVersion {version!r}")
    nums += [0] * (3 - len(nums))
    return nums[0], nums[1], nums[2]


def check_version(version: str) -> str:
    """The configuration's version if this plugin speaks it; CNIError 1 otherwise."""
    if version not in SUPPORTED_VERSIONS:
        parse_version(version)
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"incompatible CNI versions: config is {version!r}, plugin supports "
            f"{', '.join(SUPPORTED_VERSIONS)}",
        )
    return version


def version_info(version: str = CURRENT_VERSION) -> dict[str, Any]:
    """What VERSION prints."""
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


# ---------------------------------------------------------------------------------------------
# The environment


@dataclass(frozen=True)
class CmdArgs:
    """One invocation: the `CNI_*` variables and the raw stdin."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""
    path: tuple[str, ...] = ()
    stdin: bytes = b""

    @property
    def cni_args(self) -> dict[str, str]:
        return parse_cni_args(self.args)


def _valid_container_id(cid: str) -> bool:
    return bool(cid) and cid[0].isascii() and cid[0].isalnum() and all(
        c.isascii() and (c.isalnum() or c in "_.-") for c in cid
    )


def _valid_ifname(name: str) -> bool:
    return (
        0 < len(name) < 16
        and name not in (".", "..")
        and not any(c in "/:" or c.isspace() for c in name)
    )


def cmd_args_from_env(env: Mapping[str, str], stdin: bytes) -> CmdArgs:
    """Read and check the `CNI_*` variables for the command they name (error code 4)."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CNIError(INVALID_ENVIRONMENT, "required environment variable CNI_COMMAND is missing")
    if command not in COMMANDS:
        raise CNIError(
            INVALID_ENVIRONMENT,
            f"unknown CNI_COMMAND {command!r}",
            f"expected one of {', '.join(COMMANDS)}",
        )
    out = CmdArgs(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=env.get("CNI_ARGS", ""),
        path=tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
        stdin=stdin,
    )
    if command in ("ADD", "DEL", "CHECK"):
        required = ["CNI_CONTAINERID", "CNI_IFNAME"]
        if command != "DEL":
            required += ["CNI_NETNS", "CNI_PATH"]
        missing = [v for v in required if not env.get(v)]
        if missing:
            raise CNIError(
                INVALID_ENVIRONMENT,
                f"required environment variable(s) {', '.join(missing)} missing for {command}",
            )
        if not _valid_container_id(out.container_id):
            raise CNIError(
                INVALID_ENVIRONMENT,
                f"invalid CNI_CONTAINERID {out.container_id!r}",
                "it must start with a letter or digit, followed by letters, digits, '_', '.' "
                "or '-'",
            )
        if not _valid_ifname(out.ifname):
            raise CNIError(
                INVALID_ENVIRONMENT,
                f"invalid CNI_IFNAME {out.ifname!r}",
                "an interface name has 1-15 characters and no '/', ':' or whitespace",
            )
        parse_cni_args(out.args)  # malformed CNI_ARGS is an environment error too
    return out


def parse_cni_args(text: str) -> dict[str, str]:
    """`CNI_ARGS` ("K=V;K2=V2") as a dict. Unknown keys are the caller's to ignore (Calico
    always adds `IgnoreUnknown=1`); a pair without `=` is an error (code 4), as in libcni."""
    out: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENVIRONMENT, f"invalid CNI_ARGS pair {pair!r}", "expected K=V")
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Results

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # 1.1 fields we only pass along

    def to_json(self, major_minor: tuple[int, int]) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.mtu and major_minor >= (1, 1):
            out["mtu"] = self.mtu
        if self.sandbox:
            out["sandbox"] = self.sandbox
        if major_minor >= (1, 1):
            out.update(self.extra)
        return out


@dataclass
class IPConfig:
    address: IPInterface
    gateway: str | None = None
    interface: int | None = None

    @property
    def version(self) -> int:
        return self.address.version

    def to_json(self, major_minor: tuple[int, int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if major_minor < (1, 0):
            out["version"] = str(self.address.version)
        if self.interface is not None:
            out["interface"] = self.interface
        out["address"] = self.address.with_prefixlen
        if self.gateway:
            out["gateway"] = self.gateway
        return out


@dataclass
class Route:
    dst: str
    gw: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # 1.1: mtu, advmss, priority, ...

    @property
    def version(self) -> int:
        return ipaddress.ip_network(self.dst, strict=False).version

    def to_json(self, major_minor: tuple[int, int]) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": self.dst}
        if self.gw:
            out["gw"] = self.gw
        if major_minor >= (1, 1):
            out.update(self.extra)
        return out


@dataclass
class Result:
    """A plugin result in version-neutral form."""

    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: dict[str, Any] = field(default_factory=dict)

    def to_json(self, version: str) -> dict[str, Any]:
        major, minor, _ = parse_version(version)
        mm = (major, minor)
        if mm < (0, 3):
            return self._legacy_json(version)
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [i.to_json(mm) for i in self.interfaces]
        out["ips"] = [ip.to_json(mm) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_json(mm) for r in self.routes]
        out["dns"] = dict(self.dns)
        return out

    def _legacy_json(self, version: str) -> dict[str, Any]:
        """0.1.0/0.2.0: the first address of each family, with that family's routes."""
        out: dict[str, Any] = {"cniVersion": version}
        for fam, key in ((4, "ip4"), (6, "ip6")):
            ip = next((i for i in self.ips if i.version == fam), None)
            if ip is None:
                continue
            block: dict[str, Any] = {"ip": ip.address.with_prefixlen}
            if ip.gateway:
                block["gateway"] = ip.gateway
            routes = [r.to_json((0, 2)) for r in self.routes if r.version == fam]
            if routes:
                block["routes"] = routes
            out[key] = block
        out["dns"] = dict(self.dns)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        """Parse a result of any version (a chained `prevResult`, an IPAM plugin's output)."""
        if not isinstance(data, Mapping):
            raise CNIError(DECODE_FAILURE, "a CNI result must be a JSON object")
        try:
            res = cls(dns=dict(data.get("dns") or {}))
            if "ips" in data or "interfaces" in data:
                for i in data.get("interfaces") or []:
                    known = {"name", "mac", "sandbox", "mtu"}
                    res.interfaces.append(
                        Interface(
                            name=str(i["name"]),
                            mac=str(i.get("mac") or ""),
                            sandbox=str(i.get("sandbox") or ""),
                            mtu=int(i["mtu"]) if i.get("mtu") else None,
                            extra={k: v for k, v in i.items() if k not in known},
                        )
                    )
                for ip in data.get("ips") or []:
                    idx = ip.get("interface")
                    res.ips.append(
                        IPConfig(
                            ipaddress.ip_interface(ip["address"]),
                            ip.get("gateway") or None,
                            int(idx) if idx is not None else None,
                        )
                    )
                res.routes = [_route(r) for r in data.get("routes") or []]
            else:
                for key in ("ip4", "ip6"):
                    block = data.get(key)
                    if block:
                        res.ips.append(
                            IPConfig(ipaddress.ip_interface(block["ip"]), block.get("gateway"))
                        )
                        res.routes += [_route(r) for r in block.get("routes") or []]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CNIError(DECODE_FAILURE, "cannot decode CNI result", repr(exc)) from None
        return res


def _route(r: Mapping[str, Any]) -> Route:
    ipaddress.ip_network(r["dst"], strict=False)
    return Route(
        str(r["dst"]),
        r.get("gw") or None,
        {k: v for k, v in r.items() if k not in ("dst", "gw")},
    )


def merge_results(prev: Result | None, own: Result) -> Result:
    """A chained plugin's output: the previous result with this plugin's additions after it
    (interface indexes of our addresses shifted past the previous interfaces)."""
    if prev is None:
        return own
    offset = len(prev.interfaces)
    ips = list(prev.ips) + [
        IPConfig(ip.address, ip.gateway, None if ip.interface is None else ip.interface + offset)
        for ip in own.ips
    ]
    return Result(
        interfaces=list(prev.interfaces) + list(own.interfaces),
        ips=ips,
        routes=list(prev.routes) + list(own.routes),
        dns=own.dns or prev.dns,
    )


def sandbox_addresses(result: Result, ifname: str, netns: str) -> list[IPConfig]:
    """The addresses a result gives to interface `ifname` in `netns` (all, when the result
    names no interfaces, as IPAM results do)."""
    indexes = {
        n
        for n, i in enumerate(result.interfaces)
        if i.name == ifname and (not i.sandbox or not netns or i.sandbox == netns)
    }
    if not result.interfaces or all(ip.interface is None for ip in result.ips):
        return list(result.ips)
    return [ip for ip in result.ips if ip.interface in indexes]


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))

"""The network configuration the `tortie` and `tortie-ipam` plugins read: Calico's keys.

A Calico CNI configuration carries the plugin's own settings next to the CNI fields
(`cni-plugin/pkg/types/types.go`); this module parses the ones Tortie honours:

    {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tortie",
     "datastore_type": "etcdv3", "etcd_endpoints": "http://10.0.0.1:2379",
     "etcd_key_file": "", "etcd_cert_file": "", "etcd_ca_cert_file": "",
     "nodename": "node1", "nodename_file": "/var/lib/calico/nodename",
     "mtu": 1440, "num_queues": 1, "ipam_lock_file": "/var/run/calico/ipam.lock",
     "log_level": "info", "log_file_path": "/var/log/calico/cni/cni.log",
     "ipam": {"type": "tortie-ipam", "assign_ipv4": "true", "assign_ipv6": "false",
              "ipv4_pools": ["10.65.0.0/16", "my-pool"], "ipv6_pools": []},
     "container_settings": {"allow_ip_forwarding": false},
     "policy": {"type": "k8s"}, "args": {"cni": {"labels": [{"key": "app", "value": "web"}]}}}

Like Calico (which decodes with Go's `encoding/json`), unknown keys are ignored: runtimes add
their own (`capabilities`, `runtimeConfig`, `prevResult`). A known key of the wrong type is
an invalid configuration (error code 7); text that is not JSON is a decode failure (6).

The node name is, in Calico's order: `nodename`, the contents of `nodename_file` (default
`/var/lib/calico/nodename`) if it exists, the deprecated `hostname`, the host name. Calico
insists that the nodename file exists unless `nodename_file_optional` is set; Tortie does
that only when `nodename_file_optional` is explicitly `false` (a lab runs many nodes on one
filesystem, so one file cannot name them all). The MTU is `mtu`, else `/var/lib/calico/mtu`.

The datastore: the `etcd_*` keys override the environment (`ETCD_ENDPOINTS`...), as Calico's
`CreateClient` does by setting the environment before loading the client configuration.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tortie.cni.spec import DECODE_FAILURE, INVALID_CONFIG, UNSUPPORTED_FIELD, CNIError

__all__ = ["IPAMConf", "NetConf", "parse_netconf"]

DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_MTU_FILE = "/var/lib/calico/mtu"
DEFAULT_IPAM_LOCK_FILE = "/var/run/calico/ipam.lock"
DEFAULT_IPAM = "tortie-ipam"
_NETWORK_NAME = re.compile(r"^[a-zA-Z0-9_.\-]+$")
_LOG_LEVELS = ("debug", "info", "warning", "warn", "error", "fatal", "panic", "")


@dataclass(frozen=True)
class IPAMConf:
    type: str = DEFAULT_IPAM
    assign_ipv4: bool = True
    assign_ipv6: bool = False
    ipv4_pools: tuple[str, ...] = ()
    ipv6_pools: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NetConf:
    """The parsed configuration (the raw JSON stays in `raw` for delegation and chaining)."""

    cni_version: str
    name: str
    type: str
    ipam: IPAMConf
    nodename: str
    mtu: int = 0
    num_queues: int = 1
    datastore_env: Mapping[str, str] = field(default_factory=dict)
    ipam_lock_file: str = DEFAULT_IPAM_LOCK_FILE
    log_level: str = "info"
    log_file_path: str = ""
    policy_type: str = ""
    allow_ip_forwarding: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    prev_result: Mapping[str, Any] | None = None
    dns: Mapping[str, Any] = field(default_factory=dict)
    valid_attachments: tuple[tuple[str, str], ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    def datastore_config(self, env: Mapping[str, str] | None = None) -> Any:
        """The `CalicoAPIConfig` to reach the datastore (config keys over the environment)."""
        from tortie.datastore.config import ConfigError, config_from_env

        merged = dict(os.environ if env is None else env)
        merged.update(self.datastore_env)
        try:
            return config_from_env(merged)
        except ConfigError as exc:
            raise CNIError(INVALID_CONFIG, "invalid datastore configuration", str(exc)) from None


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CNIError(INVALID_CONFIG, f"invalid network configuration: {key!r} must be a {names}",
                       f"got {value!r}")
    return value


def _bool_string(obj: Mapping[str, Any], key: str, default: bool) -> bool:
    """Calico's `assign_ipv4`/`assign_ipv6` are strings ("true"/"false"); accept booleans too."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CNIError(INVALID_CONFIG, f"invalid ipam.{key} {value!r}: use \"true\" or \"false\"")


def _pools(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = _get(obj, key, list, [])
    if not all(isinstance(p, str) and p for p in value):
        raise CNIError(INVALID_CONFIG, f"ipam.{key} must be a list of pool CIDRs or names")
    return tuple(value)


def _labels(args: Any) -> dict[str, str]:
    """Workload labels passed in `args`: the CNI convention (`args.cni.labels`, a list of
    {key, value}) and Mesos' (`args."org.apache.mesos".network_info.labels.labels`), which
    Calico reads."""
    if not isinstance(args, Mapping):
        return {}
    out: dict[str, str] = {}
    lists = []
    cni = args.get("cni")
    if isinstance(cni, Mapping) and isinstance(cni.get("labels"), list):
        lists.append(cni["labels"])
    mesos = args.get("org.apache.mesos")
    if isinstance(mesos, Mapping):
        info = mesos.get("network_info") or {}
        labels = (info.get("labels") or {}) if isinstance(info, Mapping) else {}
        if isinstance(labels, Mapping) and isinstance(labels.get("labels"), list):
            lists.append(labels["labels"])
    for items in lists:
        for item in items:
            if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
                raise CNIError(INVALID_CONFIG, "args labels must be {\"key\": ..., \"value\": ...}")
            out[item["key"]] = str(item.get("value", ""))
    return out


def _attachments(raw: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    items = raw.get("cni.dev/valid-attachments", raw.get("cni.dev/attachments"))
    if items is None:
        return None
    if not isinstance(items, list):
        raise CNIError(INVALID_CONFIG, "cni.dev/valid-attachments must be a list")
    out = []
    for a in items:
        if not isinstance(a, Mapping) or not isinstance(a.get("containerID"), str):
            raise CNIError(INVALID_CONFIG, "each valid attachment needs a containerID")
        out.append((a["containerID"], str(a.get("ifname") or "")))
    return tuple(out)


def read_file(path: str) -> str:
    """A small file's stripped contents, or "" when it does not exist."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise CNIError(INVALID_CONFIG, f"cannot read {path}", exc.strerror or str(exc)) from None


def determine_nodename(raw: Mapping[str, Any]) -> str:
    if name := _get(raw, "nodename", str, ""):
        return name
    path = _get(raw, "nodename_file", str, "") or DEFAULT_NODENAME_FILE
    if raw.get("nodename_file_optional") is False and not os.path.exists(path):
        raise CNIError(
            INVALID_CONFIG,
            f"{path} does not exist",
            "check that tortie-node is running and has written it, or set nodename",
        )
    if name := read_file(path):
        return name
    if name := _get(raw, "hostname", str, ""):
        return name
    return socket.gethostname().lower()


def _datastore_env(raw: Mapping[str, Any]) -> dict[str, str]:
    env = {}
    dtype = _get(raw, "datastore_type", str, "")
    if dtype:
        if dtype.lower() == "kubernetes":
            raise CNIError(
                UNSUPPORTED_FIELD,
                "datastore_type \"kubernetes\" is not supported: Tortie only supports etcdv3",
            )
        env["DATASTORE_TYPE"] = dtype
    if _get(raw, "etcd_discovery_srv", str, ""):
        raise CNIError(UNSUPPORTED_FIELD, "etcd_discovery_srv is not supported",
                       "list the servers in etcd_endpoints instead")
    for key in ("etcd_scheme", "etcd_authority"):
        if _get(raw, key, str, ""):
            raise CNIError(
                UNSUPPORTED_FIELD,
                f"{key} is no longer supported (Calico v3 dropped it)",
                "use etcd_endpoints, e.g. \"http://127.0.0.1:2379\"",
            )
    for key, var in (
        ("etcd_endpoints", "ETCD_ENDPOINTS"),
        ("etcd_key_file", "ETCD_KEY_FILE"),
        ("etcd_cert_file", "ETCD_CERT_FILE"),
        ("etcd_ca_cert_file", "ETCD_CA_CERT_FILE"),
        ("etcd_username", "ETCD_USERNAME"),
        ("etcd_password", "ETCD_PASSWORD"),
    ):
        if value := _get(raw, key, str, ""):
            # Both spellings, so that a CALICO_-prefixed variable cannot win over the config.
            env[var] = env["CALICO_" + var] = value
    return env


def parse_netconf(stdin: bytes, *, need_name: bool = True) -> NetConf:
    """Parse the network configuration from stdin (CNIError 6 or 7 when it is wrong)."""
    try:
        raw = json.loads(stdin or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(DECODE_FAILURE, "failed to load netconf", str(exc)) from None
    if not isinstance(raw, dict):
        raise CNIError(DECODE_FAILURE, "failed to load netconf", "expected a JSON object")
    version = _get(raw, "cniVersion", str, "") or "0.2.0"  # Calico's default
    name = _get(raw, "name", str, "")
    if need_name and not name:
        raise CNIError(INVALID_CONFIG, "the network configuration has no name")
    if name and not _NETWORK_NAME.match(name):
        raise CNIError(
            INVALID_CONFIG,
            f"invalid network name {name!r}",
            "only letters a-z, numbers 0-9, and symbols _.- are supported",
        )
    ipam_raw = _get(raw, "ipam", dict, {})
    ipam = IPAMConf(
        type=_get(ipam_raw, "type", str, "") or DEFAULT_IPAM,
        assign_ipv4=_bool_string(ipam_raw, "assign_ipv4", True),
        assign_ipv6=_bool_string(ipam_raw, "assign_ipv6", False),
        ipv4_pools=_pools(ipam_raw, "ipv4_pools"),
        ipv6_pools=_pools(ipam_raw, "ipv6_pools"),
        raw=ipam_raw,
    )
    mtu = _get(raw, "mtu", int, 0)
    if not mtu and (text := read_file(DEFAULT_MTU_FILE)):
        try:
            mtu = int(text)
        except ValueError:
            raise CNIError(INVALID_CONFIG, f"invalid MTU in {DEFAULT_MTU_FILE}: {text!r}") from None
    if mtu and not 68 <= mtu <= 65535:
        raise CNIError(INVALID_CONFIG, f"invalid mtu {mtu}: must be between 68 and 65535")
    level = _get(raw, "log_level", str, "info").lower()
    if level not in _LOG_LEVELS:
        raise CNIError(INVALID_CONFIG, f"invalid log_level {level!r}",
                       "use debug, info, warning or error")
    policy = _get(raw, "policy", dict, {})
    settings = _get(raw, "container_settings", dict, {})
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CNIError(INVALID_CONFIG, "prevResult must be a JSON object")
    return NetConf(
        cni_version=version,
        name=name,
        type=_get(raw, "type", str, ""),
        ipam=ipam,
        nodename=determine_nodename(raw),
        mtu=mtu,
        num_queues=max(1, _get(raw, "num_queues", int, 1)),
        datastore_env=_datastore_env(raw),
        ipam_lock_file=_get(raw, "ipam_lock_file", str, "") or DEFAULT_IPAM_LOCK_FILE,
        log_level=level or "info",
        log_file_path=_get(raw, "log_file_path", str, ""),
        policy_type=_get(policy, "type", str, ""),
        allow_ip_forwarding=bool(_get(settings, "allow_ip_forwarding", bool, False)),
        labels=_labels(raw.get("args")),
        prev_result=prev,
        dns=_get(raw, "dns", dict, {}),
        valid_attachments=_attachments(raw),
        raw=raw,
    )

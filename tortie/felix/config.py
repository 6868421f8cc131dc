"""Felix's configuration: parameters, their defaults, and Calico's order of precedence.

Sources, highest priority first (as Calico's Felix):

1. environment variables ``FELIX_<PARAMNAME>`` (upper case, e.g. ``FELIX_IPTABLESREFRESHINTERVAL``),
2. the config file (INI, section ``[global]``; default ``/etc/tortie/felix.cfg``),
3. the datastore: ``FelixConfiguration`` ``node.<hostname>``,
4. the datastore: ``FelixConfiguration`` ``default``,
5. the built-in defaults.

Only the parameters Tortie's Felix acts on are listed; every other FelixConfiguration field is
accepted by the API and ignored here. A change of an effective value after start-up makes the
daemon restart itself, as Calico's Felix does (``Config.restart_needed``).
"""

from __future__ import annotations

import configparser
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tortie.api.validators import parse_duration

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "/etc/tortie/felix.cfg"


class ConfigError(ValueError):
    pass


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "y", "on"):
        return True
    if s in ("false", "0", "no", "n", "off", ""):
        return False
    raise ConfigError(f"{v!r} is not a boolean")


def _duration(v: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    s = str(v).strip()
    try:
        return float(s)  # plain seconds, as Calico's *Secs parameters
    except ValueError:
        pass
    try:
        return parse_duration(s)
    except ValueError:
        raise ConfigError(f"{v!r} is not a duration (e.g. 90s, 1m30s)") from None


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ConfigError(f"{v!r} is not an integer")
    if isinstance(v, int):
        return v
    try:
        return int(str(v).strip(), 0)
    except ValueError:
        raise ConfigError(f"{v!r} is not an integer") from None


def _str(v: Any) -> str:
    return str(v)


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        s = str(v).strip()
        for c in choices:
            if s.lower() == c.lower():
                return c
        raise ConfigError(f"{v!r} is not one of {', '.join(choices)}")

    return parse


@dataclass(frozen=True, slots=True)
class ProtoPort:
    protocol: str  # tcp | udp | sctp
    port: int
    net: str | None = None

    def __str__(self) -> str:
        return (
            f"{self.protocol}:{self.port}"
            if not self.net
            else f"{self.protocol}:{self.net}:{self.port}"
        )


def _ports(v: Any) -> tuple[ProtoPort, ...]:
    """``tcp:22,udp:68`` (env/file) or ``[{protocol, port, net}]`` (datastore); ``none``."""
    if isinstance(v, list | tuple):
        out = []
        for item in v:
            proto = getattr(item, "protocol", None) or (
                item.get("protocol") if isinstance(item, dict) else None
            )
            port = getattr(item, "port", None) or (
                item.get("port") if isinstance(item, dict) else None
            )
            net = getattr(item, "net", None) or (
                item.get("net") if isinstance(item, dict) else None
            )
            out.append(ProtoPort(str(proto or "tcp").lower(), _int(port), net))
        return tuple(out)
    s = str(v).strip()
    if s.lower() in ("", "none"):
        return ()
    out = []
    for part in s.split(","):
        bits = part.strip().split(":")
        if len(bits) == 1:
            out.append(ProtoPort("tcp", _int(bits[0])))
        elif len(bits) == 2:
            out.append(ProtoPort(bits[0].lower(), _int(bits[1])))
        else:
            out.append(ProtoPort(bits[0].lower(), _int(bits[-1]), ":".join(bits[1:-1])))
        if out[-1].protocol not in ("tcp", "udp", "sctp"):
            raise ConfigError(f"{part!r}: protocol must be tcp, udp or sctp")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Param:
    name: str  # Calico's parameter name, e.g. IptablesRefreshInterval
    parse: Callable[[Any], Any]
    default: Any
    field: str | None = None  # FelixConfiguration spec attribute (snake_case); None: not there
    restart: bool = True  # a change needs a restart


DEFAULT_FAILSAFE_IN = "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
DEFAULT_FAILSAFE_OUT = "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"

PARAMS: tuple[Param, ...] = (
    Param("FelixHostname", _str, "", None),
    Param("DatastoreType", _one_of("etcdv3", "kubernetes"), "etcdv3", None),
    Param("EtcdEndpoints", _str, "", None),
    Param("EtcdKeyFile", _str, "", None),
    Param("EtcdCertFile", _str, "", None),
    Param("EtcdCaFile", _str, "", None),
    Param(
        "LogSeverityScreen",
        _one_of("Debug", "Info", "Warning", "Error", "Fatal"),
        "Info",
        "log_severity_screen",
        restart=False,
    ),
    Param("LogFilePath", _str, "", "log_file_path"),
    Param("HealthEnabled", _bool, False, "health_enabled"),
    Param("HealthHost", _str, "localhost", "health_host"),
    Param("HealthPort", _int, 9099, "health_port"),
    Param("PrometheusMetricsEnabled", _bool, False, "prometheus_metrics_enabled"),
    Param("PrometheusMetricsHost", _str, "", "prometheus_metrics_host"),
    Param("PrometheusMetricsPort", _int, 9091, "prometheus_metrics_port"),
    Param("IptablesRefreshInterval", _duration, 180.0, "iptables_refresh_interval"),
    Param("IpsetsRefreshInterval", _duration, 90.0, "ipsets_refresh_interval"),
    Param("RouteRefreshInterval", _duration, 90.0, "route_refresh_interval"),
    Param("InterfaceRefreshInterval", _duration, 90.0, "interface_refresh_interval"),
    Param("IptablesMarkMask", _int, 0xFFFF0000, "iptables_mark_mask"),
    Param("ChainInsertMode", _one_of("insert", "append"), "insert", "chain_insert_mode"),
    Param(
        "DefaultEndpointToHostAction",
        _one_of("Drop", "Accept", "Return"),
        "Drop",
        "default_endpoint_to_host_action",
    ),
    Param(
        "IptablesFilterAllowAction",
        _one_of("Accept", "Return"),
        "Accept",
        "iptables_filter_allow_action",
    ),
    Param(
        "IptablesMangleAllowAction",
        _one_of("Accept", "Return"),
        "Accept",
        "iptables_mangle_allow_action",
    ),
    Param(
        "FailsafeInboundHostPorts",
        _ports,
        _ports(DEFAULT_FAILSAFE_IN),
        "failsafe_inbound_host_ports",
    ),
    Param(
        "FailsafeOutboundHostPorts",
        _ports,
        _ports(DEFAULT_FAILSAFE_OUT),
        "failsafe_outbound_host_ports",
    ),
    Param("InterfacePrefix", _str, "cali", "interface_prefix"),
    Param("ReportingIntervalSecs", _duration, 30.0, "reporting_interval"),
    Param("ReportingTTLSecs", _duration, 90.0, "reporting_ttl"),
    Param("EndpointReportingEnabled", _bool, False, "endpoint_reporting_enabled"),
    Param("IPv6Support", _bool, False, "ipv6_support"),
    Param("VXLANEnabled", _bool, False, "vxlan_enabled"),
    Param("VXLANPort", _int, 4789, "vxlan_port"),
    Param("VXLANVNI", _int, 4096, "vxlan_vni"),
    Param("VXLANMTU", _int, 1450, "vxlan_mtu"),
    Param("AllowVXLANPacketsFromWorkloads", _bool, False, "allow_vxlan_packets_from_workloads"),
    Param("AllowIPIPPacketsFromWorkloads", _bool, False, "allow_ipip_packets_from_workloads"),
    Param("NATOutgoingAddress", _str, "", "nat_outgoing_address"),
    Param("DisableConntrackInvalidCheck", _bool, False, "disable_conntrack_invalid_check"),
    Param("RouteSource", _one_of("CalicoIPAM", "WorkloadIPs"), "CalicoIPAM", "route_source"),
    Param("DeviceRouteProtocol", _int, 3, "device_route_protocol"),
    Param("LogPrefix", _str, "calico-packet", "log_prefix"),
    # Off in policy-only mode (no networking): no overlay (VXLAN) device or routes to other
    # nodes; routes to this node's own workloads are still programmed.
    Param("ProgramRoutes", _bool, True, None),
)
PARAMS_BY_NAME = {p.name: p for p in PARAMS}
PARAMS_BY_LOWER = {p.name.lower(): p for p in PARAMS}


class Config:
    """The effective configuration; attribute access by Calico's parameter name."""

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.sources = dict(sources)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def restart_needed(self, other: Config) -> list[str]:
        """The parameters that differ and need a restart to take effect."""
        return [
            p.name
            for p in PARAMS
            if p.restart and self._values.get(p.name) != other._values.get(p.name)
        ]


def env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, value in environ.items():
        if key.startswith("FELIX_"):
            param = PARAMS_BY_LOWER.get(key[6:].lower())
            if param is not None:
                out[param.name] = value
    return out


def file_overrides(path: str | None) -> dict[str, str]:
    path = path or DEFAULT_CONFIG_FILE
    if not os.path.exists(path):
        return {}
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from None
    out = {}
    for section in parser.sections():
        for key, value in parser.items(section):
            param = PARAMS_BY_LOWER.get(key.lower())
            if param is None:
                log.warning("unknown parameter in config file", extra={"param": key, "file": path})
                continue
            out[param.name] = value
    return out


def datastore_values(spec: Any) -> dict[str, Any]:
    """The parameters a FelixConfiguration spec sets (unset fields are skipped)."""
    out: dict[str, Any] = {}
    if spec is None:
        return out
    for p in PARAMS:
        if p.field is not None:
            value = getattr(spec, p.field, None)
            if value is not None:
                out[p.name] = value
    return out


def load(
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
    global_spec: Any = None,
    node_spec: Any = None,
) -> Config:
    """The effective configuration from all sources; raises ConfigError naming the bad one."""
    environ = os.environ if environ is None else environ
    layers = [
        ("default FelixConfiguration", datastore_values(global_spec)),
        ("node FelixConfiguration", datastore_values(node_spec)),
        ("config file", file_overrides(config_file or environ.get("FELIX_CONFIGFILE"))),
        ("environment", env_overrides(environ)),
    ]
    values: dict[str, Any] = {p.name: p.default for p in PARAMS}
    sources: dict[str, str] = dict.fromkeys(values, "default")
    for source, layer in layers:
        for name, raw in layer.items():
            param = PARAMS_BY_NAME[name]
            try:
                values[name] = param.parse(raw)
            except ConfigError as exc:
                if source == "environment" or source == "config file":
                    raise ConfigError(f"{name} from the {source}: {exc}") from None
                # a bad datastore value is ignored, as Calico does, keeping the lower layer
                log.warning("ignoring invalid %s from %s: %s", name, source, exc)
                continue
            sources[name] = source
    if not values["FelixHostname"]:
        values["FelixHostname"] = (
            environ.get("NODENAME") or environ.get("HOSTNAME") or socket.gethostname()
        )
        sources["FelixHostname"] = "environment" if environ.get("NODENAME") else "hostname"
    return Config(values, sources)

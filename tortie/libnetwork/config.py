"""`LibnetworkConfig`: how `tortie-libnetwork` is set up, from its command line and environment.

The environment variables are Calico libnetwork-plugin's, so a calico/node deployment's
settings carry over:

| variable | default | meaning |
|---|---|---|
| `CALICO_LIBNETWORK_HOSTNAME`, `NODENAME` | nodename file, `HOSTNAME`, host name | the node |
| `CALICO_LIBNETWORK_NAMESPACE` | `libnetwork` | the WorkloadEndpoints' namespace |
| `CALICO_LIBNETWORK_CREATE_PROFILES` | `true` | a Profile per network, named after it |
| `CALICO_LIBNETWORK_LABEL_ENDPOINTS` | `true` (Calico: `false`) | copy container labels |
| `CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT` | `5s` | how long to look for a container's labels |
| `CALICO_LIBNETWORK_VETH_MTU` | `0` (kernel default) | MTU of the veths |
| `CALICO_LIBNETWORK_IFPREFIX` | `cali` | prefix of the interface inside containers |
| `DOCKER_HOST` | `unix:///var/run/docker.sock` | the daemon asked for names, labels |
| `TORTIE_LIBNETWORK_PLUGIN_DIR` | `/run/docker/plugins` | where the sockets go |
| `TORTIE_LIBNETWORK_SCOPE` | `local` | the network driver's scope (`global` needs a swarm) |

Copied container labels are those named `org.projectcalico.label.<key>` (they become `<key>`).
The datastore comes from the usual Calico client configuration (`ETCD_ENDPOINTS` etc., see
`tortie.datastore.config`). Command-line options override the environment.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "LibnetworkConfig", "parse_duration"]

DEFAULT_PLUGIN_DIR = "/run/docker/plugins"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_DRIVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """The configuration is unusable; the message names the setting."""


def parse_duration(text: str, name: str) -> float:
    """Seconds from `5s`, `500ms`, `1m` or a bare number of seconds (Go-style, simplified)."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"{name}={text!r}: use a duration such as 5s or 500ms")
    value = float(m.group(1))
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name}={text!r}: use true or false")


def default_nodename(env: Mapping[str, str], nodename_file: str = DEFAULT_NODENAME_FILE) -> str:
    """The node's name as Calico's components find it (first that is set wins)."""
    for var in ("CALICO_LIBNETWORK_HOSTNAME", "NODENAME"):
        if env.get(var, "").strip():
            return env[var].strip()
    try:
        with open(nodename_file) as fh:
            name = fh.read().strip()
        if name:
            return name
    except OSError:
        pass
    return env.get("HOSTNAME", "").strip() or socket.gethostname()


@dataclass(frozen=True)
class LibnetworkConfig:
    """Everything `run()` needs (see the module docstring for each setting's source)."""

    nodename: str
    plugin_dir: str = DEFAULT_PLUGIN_DIR
    network_driver: str = "tortie"
    ipam_driver: str = "tortie-ipam"
    docker_host: str = DEFAULT_DOCKER_HOST
    namespace: str = "libnetwork"
    scope: str = "local"
    create_profiles: bool = True
    label_endpoints: bool = True
    label_poll_timeout: float = 5.0
    veth_mtu: int = 0
    if_prefix: str = "cali"
    log_level: str = "info"
    #: A `tortie.datastore.config.CalicoAPIConfig`; None loads the usual client configuration.
    datastore: Any = None

    def __post_init__(self) -> None:
        for what, name in (("network driver", self.network_driver),
                           ("IPAM driver", self.ipam_driver)):
            if not _DRIVER_NAME.match(name):
                raise ConfigError(f"{what} name {name!r}: use letters, digits, '.', '_', '-'")
        if self.network_driver == self.ipam_driver:
            raise ConfigError("the network and IPAM drivers need different names (sockets)")
        if self.scope not in ("local", "global"):
            raise ConfigError(f"scope {self.scope!r}: use local or global")
        if not self.nodename:
            raise ConfigError("the node name is empty: set NODENAME")
        if not 0 <= self.veth_mtu <= 65535:
            raise ConfigError(f"CALICO_LIBNETWORK_VETH_MTU={self.veth_mtu}: 0..65535")
        if not self.if_prefix or len(self.if_prefix) > 12:
            raise ConfigError(f"CALICO_LIBNETWORK_IFPREFIX={self.if_prefix!r}: 1-12 characters")

    @property
    def network_socket(self) -> str:
        return os.path.join(self.plugin_dir, f"{self.network_driver}.sock")

    @property
    def ipam_socket(self) -> str:
        return os.path.join(self.plugin_dir, f"{self.ipam_driver}.sock")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> LibnetworkConfig:
        """The configuration from the environment; keyword arguments that are not None win."""
        env = os.environ if env is None else env
        mtu_text = env.get("CALICO_LIBNETWORK_VETH_MTU", "").strip() or "0"
        try:
            mtu = int(mtu_text)
        except ValueError:
            raise ConfigError(f"CALICO_LIBNETWORK_VETH_MTU={mtu_text!r} is not a number") from None
        timeout_text = env.get("CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT", "").strip()
        values: dict[str, Any] = {
            "nodename": default_nodename(env),
            "plugin_dir": env.get("TORTIE_LIBNETWORK_PLUGIN_DIR", "").strip()
            or DEFAULT_PLUGIN_DIR,
            "docker_host": env.get("DOCKER_HOST", "").strip() or DEFAULT_DOCKER_HOST,
            "namespace": env.get("CALICO_LIBNETWORK_NAMESPACE", "").strip() or "libnetwork",
            "scope": env.get("TORTIE_LIBNETWORK_SCOPE", "").strip().lower() or "local",
            "create_profiles": _bool(env, "CALICO_LIBNETWORK_CREATE_PROFILES", True),
            "label_endpoints": _bool(env, "CALICO_LIBNETWORK_LABEL_ENDPOINTS", True),
            "label_poll_timeout": (
                parse_duration(timeout_text, "CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT")
                if timeout_text else 5.0
            ),
            "veth_mtu": mtu,
            "if_prefix": env.get("CALICO_LIBNETWORK_IFPREFIX", "").strip() or "cali",
            "log_level": env.get("TORTIE_LIBNETWORK_LOGLEVEL", "").strip().lower() or "info",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

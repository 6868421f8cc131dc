"""Datastore client configuration: calicoctl's `CalicoAPIConfig`, from a file or the environment.

Where the configuration comes from follows calicoctl (libcalico-go `apiconfig` and calicoctl's
client manager):

1. an explicit config file (`tortiectl --config FILE`): read it; it must exist;
2. otherwise the default file `/etc/tortie/tortiectl.cfg`, if it exists;
3. otherwise the environment: `DATASTORE_TYPE`, `ETCD_ENDPOINTS`, `ETCD_USERNAME`,
   `ETCD_PASSWORD`, `ETCD_KEY_FILE`, `ETCD_CERT_FILE`, `ETCD_CA_CERT_FILE`, each also accepted
   with a `CALICO_` prefix, which wins (`CALICO_ETCD_ENDPOINTS`...);
4. with nothing set: etcdv3 at `http://127.0.0.1:2379`.

A file is used alone: the environment does not override or fill in what a file leaves out
(calicoctl behaves the same). The file is YAML or JSON:

    apiVersion: projectcalico.org/v3
    kind: CalicoAPIConfig
    metadata: {}
    spec:
      datastoreType: etcdv3
      etcdEndpoints: https://10.0.0.1:2379,https://10.0.0.2:2379
      etcdUsername: ...          etcdPassword: ...
      etcdKeyFile: ...           etcdCertFile: ...           etcdCACertFile: ...
      # or the PEM text inline: etcdKey, etcdCert, etcdCACert

Unknown fields are errors, as in calicoctl. `ETCD_SCHEME`/`ETCD_AUTHORITY` were dropped by
calicoctl v3; Tortie refuses them with a message pointing at `ETCD_ENDPOINTS` rather than
silently connecting to the default endpoint. Only the etcdv3 datastore exists in Tortie.

PyYAML is imported only when a file is actually read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_ENDPOINT",
    "CalicoAPIConfig",
    "ConfigError",
    "config_from_env",
    "config_from_text",
    "load_config",
    "load_config_file",
]

DEFAULT_CONFIG_PATH = "/etc/tortie/tortiectl.cfg"
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
API_VERSION = "projectcalico.org/v3"
KIND = "CalicoAPIConfig"
ETCDV3 = "etcdv3"


class ConfigError(ValueError):
    """The datastore configuration is invalid; the message says what and where."""


# spec field name -> (dataclass attribute, environment variable name without prefix)
_SPEC_FIELDS: dict[str, tuple[str, str | None]] = {
    "datastoreType": ("datastore_type", "DATASTORE_TYPE"),
    "etcdEndpoints": ("etcd_endpoints", "ETCD_ENDPOINTS"),
    "etcdUsername": ("etcd_username", "ETCD_USERNAME"),
    "etcdPassword": ("etcd_password", "ETCD_PASSWORD"),
    "etcdKeyFile": ("etcd_key_file", "ETCD_KEY_FILE"),
    "etcdCertFile": ("etcd_cert_file", "ETCD_CERT_FILE"),
    "etcdCACertFile": ("etcd_ca_cert_file", "ETCD_CA_CERT_FILE"),
    # Inline PEM text: file only (calicoctl does not read these from the environment).
    "etcdKey": ("etcd_key", None),
    "etcdCert": ("etcd_cert", None),
    "etcdCACert": ("etcd_ca_cert", None),
}
# calicoctl fields that Tortie knows but does not support: a clear error, not "unknown field".
_UNSUPPORTED_SPEC_FIELDS = {
    "etcdDiscoverySrv": "DNS SRV discovery is not supported; list etcdEndpoints instead",
    "kubeconfig": "the Kubernetes datastore is not supported; use datastoreType etcdv3",
    "k8sAPIEndpoint": "the Kubernetes datastore is not supported; use datastoreType etcdv3",
    "k8sKeyFile": "the Kubernetes datastore is not supported; use datastoreType etcdv3",
    "k8sCertFile": "the Kubernetes datastore is not supported; use datastoreType etcdv3",
    "k8sCAFile": "the Kubernetes datastore is not supported; use datastoreType etcdv3",
    "k8sAPIToken": "the Kubernetes datastore is not supported; use datastoreType etcdv3",
    "k8sInsecureSkipTLSVerify": "the Kubernetes datastore is not supported",
    "kubeconfigInline": "the Kubernetes datastore is not supported; use datastoreType etcdv3",
}


@dataclass(frozen=True)
class CalicoAPIConfig:
    """How to reach the datastore. Build it with `load_config()`, or directly in code."""

    datastore_type: str = ETCDV3
    etcd_endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    etcd_username: str = ""
    etcd_password: str = field(default="", repr=False)
    etcd_key_file: str = ""
    etcd_cert_file: str = ""
    etcd_ca_cert_file: str = ""
    etcd_key: str = field(default="", repr=False)
    etcd_cert: str = ""
    etcd_ca_cert: str = ""
    #: Where this configuration came from: a file path, "environment" or "defaults".
    source: str = "defaults"

    @classmethod
    def for_endpoints(
        cls, endpoints: str | list[str] | tuple[str, ...], **kw: Any
    ) -> CalicoAPIConfig:
        """A validated config for the given endpoint(s) (comma-separated string or list)."""
        if isinstance(endpoints, str):
            endpoints = split_endpoints(endpoints)
        return cls(etcd_endpoints=tuple(endpoints), source="code", **kw).validated()

    @property
    def uses_tls(self) -> bool:
        return any(ep.startswith("https://") for ep in self.etcd_endpoints)

    def validated(self) -> CalicoAPIConfig:
        """Check the configuration; return it with endpoints normalised; raise ConfigError."""
        where = f" (in {self.source})" if self.source not in ("defaults", "code") else ""
        dtype = (self.datastore_type or ETCDV3).strip()
        if dtype.lower() != ETCDV3:
            raise ConfigError(
                f"datastoreType {dtype!r}{where} is not supported: Tortie only supports "
                f"'etcdv3'"
            )
        if not self.etcd_endpoints:
            raise ConfigError(f"no etcd endpoints configured{where}: set etcdEndpoints")
        endpoints = tuple(_normalise_endpoint(ep, where) for ep in self.etcd_endpoints)
        schemes = {ep.split(":", 1)[0] for ep in endpoints}
        if len(schemes) > 1:
            raise ConfigError(
                f"etcd endpoints{where} mix http and https: {', '.join(endpoints)}"
            )
        for file_attr, inline_attr, label in (
            ("etcd_key_file", "etcd_key", "etcdKey"),
            ("etcd_cert_file", "etcd_cert", "etcdCert"),
            ("etcd_ca_cert_file", "etcd_ca_cert", "etcdCACert"),
        ):
            if getattr(self, file_attr) and getattr(self, inline_attr):
                raise ConfigError(
                    f"both {label}File and inline {label} are set{where}: use one of them"
                )
        has_key = bool(self.etcd_key_file or self.etcd_key)
        has_cert = bool(self.etcd_cert_file or self.etcd_cert)
        if has_key != has_cert:
            raise ConfigError(
                f"a client certificate needs both a certificate and a key{where}: "
                "set etcdCertFile and etcdKeyFile together"
            )
        has_tls_material = has_key or bool(self.etcd_ca_cert_file or self.etcd_ca_cert)
        if has_tls_material and "https" not in schemes:
            raise ConfigError(
                f"TLS certificates are configured{where} but the etcd endpoints use http: "
                f"{', '.join(endpoints)}; use https:// endpoints"
            )
        if self.etcd_password and not self.etcd_username:
            raise ConfigError(f"etcdPassword is set without etcdUsername{where}")
        return replace(self, datastore_type=ETCDV3, etcd_endpoints=endpoints)


def split_endpoints(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _normalise_endpoint(ep: str, where: str) -> str:
    ep = ep.strip()
    try:
        parts = urlsplit(ep)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"invalid etcd endpoint {ep!r}{where}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"invalid etcd endpoint {ep!r}{where}: expected a URL like {DEFAULT_ENDPOINT} "
            "or https://etcd1:2379"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"invalid etcd endpoint {ep!r}{where}: only scheme://host:port")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port or 2379}"


# ---------------------------------------------------------------------------------------------
# Loading


def _from_spec(spec: Mapping[str, Any], source: str) -> CalicoAPIConfig:
    kwargs: dict[str, Any] = {}
    for name, value in spec.items():
        if name in _UNSUPPORTED_SPEC_FIELDS:
            raise ConfigError(f"spec.{name} in {source}: {_UNSUPPORTED_SPEC_FIELDS[name]}")
        if name not in _SPEC_FIELDS:
            known = ", ".join(_SPEC_FIELDS)
            raise ConfigError(f"unknown field spec.{name} in {source} (known fields: {known})")
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"spec.{name} in {source} must be a string, got {value!r}")
        attr = _SPEC_FIELDS[name][0]
        kwargs[attr] = tuple(split_endpoints(value)) if attr == "etcd_endpoints" else value
    return CalicoAPIConfig(source=source, **kwargs).validated()


def config_from_text(text: str, source: str = "<string>") -> CalicoAPIConfig:
    """Parse a CalicoAPIConfig document (YAML or JSON)."""
    import yaml  # imported lazily: only tortiectl with a config file pays for it

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse {source} as YAML or JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source} must hold a CalicoAPIConfig document (a mapping)")
    unknown = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if unknown:
        raise ConfigError(f"unknown top-level field(s) in {source}: {', '.join(sorted(unknown))}")
    if doc.get("apiVersion") != API_VERSION:
        raise ConfigError(
            f"invalid config file {source}: unknown apiVersion {doc.get('apiVersion')!r} "
            f"(expected {API_VERSION!r})"
        )
    if doc.get("kind") != KIND:
        raise ConfigError(
            f"invalid config file {source}: expected kind {KIND!r}, got {doc.get('kind')!r}"
        )
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"spec in {source} must be a mapping")
    return _from_spec(spec, source)


def load_config_file(path: str) -> CalicoAPIConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    return config_from_text(text, path)


def config_from_env(env: Mapping[str, str] | None = None) -> CalicoAPIConfig:
    """The configuration from environment variables (CALICO_-prefixed names win)."""
    env = os.environ if env is None else env
    kwargs: dict[str, Any] = {}
    for attr, var in _SPEC_FIELDS.values():
        if var is None:
            continue
        value = env.get("CALICO_" + var) or env.get(var)
        if value:
            kwargs[attr] = tuple(split_endpoints(value)) if attr == "etcd_endpoints" else value
    legacy = [v for v in ("ETCD_AUTHORITY", "ETCD_SCHEME") if env.get(v)]
    if legacy and "etcd_endpoints" not in kwargs:
        raise ConfigError(
            f"{' and '.join(legacy)} are no longer supported (calicoctl v3 dropped them): "
            f"set ETCD_ENDPOINTS instead, e.g. ETCD_ENDPOINTS={DEFAULT_ENDPOINT}"
        )
    if not kwargs:
        return CalicoAPIConfig(source="defaults").validated()
    return CalicoAPIConfig(source="environment", **kwargs).validated()


def load_config(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    default_path: str = DEFAULT_CONFIG_PATH,
) -> CalicoAPIConfig:
    """The configuration tortiectl and the daemons use (precedence in the module docstring)."""
    if path:
        if not os.path.exists(path):
            raise ConfigError(f"config file {path} does not exist")
        return load_config_file(path)
    if default_path and os.path.exists(default_path):
        return load_config_file(default_path)
    return config_from_env(env)

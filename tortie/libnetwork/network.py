"""`NetworkDriver`: Docker's remote network driver API (`tortie`), as Calico's plugin answers it.

Docker's calls for `docker network create` and `docker run --net N` on one host, and what
the driver does (Calico's `driver/network_driver.go` unless marked *Tortie*):

- `CreateNetwork`: refuse options Tortie does not honour (`--internal`, `--opt ...`: "Tortie
  driver does not support the flag --internal.") and networks whose IPAM driver is not
  `tortie-ipam` (recognised by the placeholder gateway). *Tortie*: the network's Profile is
  created in the background as soon as Docker can name the network (Docker does not pass the
  name); `CreateEndpoint` makes sure of it in any case.
- `CreateEndpoint`: the WorkloadEndpoint `<node>-libnetwork-libnetwork-<endpoint ID>` in
  namespace `libnetwork`: orchestrator and workload `libnetwork`, the endpoint ID, this node,
  the address(es) IPAM assigned as /32 (/128), interface `cali<ID[:11]>`, the MAC, and the
  network's name as its profile. The Profile (named after the network: egress allowed,
  ingress from members of the network, which carry the label it applies, `has(<network>)`)
  is created first if it does not exist. *Tortie*: the container's MAC is chosen here
  (`02:` + the endpoint ID's first 10 hex digits, or the user's `--mac-address`) and given to
  Docker, so the endpoint is written once, complete.
- `Join`: the veth (`tortie.libnetwork.veth`); the answer names the temporary end for Docker
  to move in and rename (`<prefix>0`), the gateway 169.254.1.1 and a link route to it (and
  the host side's link-local address for IPv6), with `DisableGatewayService`. Then, in the
  background, the container's labels with the prefix `org.projectcalico.label.` are looked up
  through the Docker API (Docker passes them to no driver call) and written to the endpoint.
- `Leave`: delete the veth. `DeleteEndpoint`: delete the WorkloadEndpoint (IPAM's
  `ReleaseAddress` frees the address).
- `DeleteNetwork`: *Tortie*: delete the network's Profile when this driver created it and no
  WorkloadEndpoint uses it any more (with `local` scope every host has its own network of that
  name, all sharing the Profile).
- `EndpointOperInfo`, `DiscoverNew`/`DiscoverDelete`, `ProgramExternalConnectivity`/
  `RevokeExternalConnectivity`, `AllocateNetwork`/`FreeNetwork`: nothing to do.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tortie.libnetwork import veth
from tortie.libnetwork.config import LibnetworkConfig
from tortie.libnetwork.dockerapi import DockerAPI, DockerAPIError
from tortie.libnetwork.protocol import (
    ANY_POOL_V4,
    ANY_POOL_V6,
    GATEWAY_V4,
    GLOBAL_ADDRESS_SPACE,
    LABEL_PREFIX,
    LOCAL_ADDRESS_SPACE,
    DriverError,
    opt_str,
)

__all__ = ["PROFILE_ANNOTATION", "NetworkDriver", "container_mac", "endpoint_name"]

log = logging.getLogger(__name__)

ORCHESTRATOR = "libnetwork"
#: Set on Profiles this driver creates (value: the network's name): only those are deleted.
PROFILE_ANNOTATION = "libnetwork.tortie/network"
_KNOWN_NETWORK_OPTIONS = ("com.docker.network.enable_ipv6",)
_HOST_MAC_LINK_LOCAL = "fe80::ecee:eeff:feee:eeee"  # EUI-64 of ee:ee:ee:ee:ee:ee
_ROUTE_CONNECTED = 1

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _escape(part: str) -> str:
    return part.replace("-", "--")


def endpoint_name(node: str, endpoint_id: str) -> str:
    """The WorkloadEndpoint name libcalico-go gives a libnetwork endpoint."""
    return "-".join(_escape(p) for p in (node, ORCHESTRATOR, ORCHESTRATOR, endpoint_id))


def container_mac(endpoint_id: str) -> str:
    """A locally administered unicast MAC derived from the endpoint ID."""
    digits = (endpoint_id.lower() + "0" * 10)[:10]
    try:
        int(digits, 16)
    except ValueError:  # Docker's IDs are hex; anything else still gets a stable MAC
        digits = hashlib.sha256(endpoint_id.encode()).hexdigest()[:10]
    return "02:" + ":".join(digits[i : i + 2] for i in range(0, 10, 2))


@dataclass(frozen=True)
class _Endpoint:
    network_id: str
    ips: tuple[IPInterface, ...]
    wep: str


class Dataplane:
    """The kernel side of Join/Leave (replaced by a fake in unit tests)."""

    def create(self, host_if: str, temp_if: str, ips: Sequence[IPInterface], mtu: int) -> None:
        try:
            veth.create(host_if, temp_if, ips, mtu=mtu)
        except veth.VethError as exc:
            raise DriverError(str(exc)) from None

    def delete(self, host_if: str, temp_if: str) -> None:
        try:
            veth.delete(host_if, temp_if)
        except veth.VethError as exc:
            raise DriverError(str(exc)) from None


class NetworkDriver:
    """The `NetworkDriver.*` methods (see the module docstring). Thread-safe."""

    def __init__(
        self,
        config: LibnetworkConfig,
        resources: Any,
        docker: DockerAPI | None = None,
        dataplane: Dataplane | None = None,
        *,
        background: Callable[[Callable[[], None]], Any] | None = None,
    ) -> None:
        self.config = config
        self.resources = resources  # a tortie.datastore.client.ResourceClient
        self.docker = docker if docker is not None else DockerAPI(config.docker_host)
        self.dataplane = dataplane if dataplane is not None else Dataplane()
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}  # network ID -> name
        self._endpoints: dict[str, _Endpoint] = {}
        self._deleted: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._background = background or self._submit

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="libnetwork-bg")
            pool = self._pool

        def guarded() -> None:
            try:
                fn()
            except Exception:
                log.exception("background task failed")

        pool.submit(guarded)

    def handlers(self) -> dict[str, Any]:
        return {
            "NetworkDriver.GetCapabilities": self.get_capabilities,
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.AllocateNetwork": self.allocate_network,
            "NetworkDriver.FreeNetwork": self.nothing,
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.EndpointOperInfo": self.endpoint_oper_info,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.DiscoverNew": self.nothing,
            "NetworkDriver.DiscoverDelete": self.nothing,
            "NetworkDriver.ProgramExternalConnectivity": self.nothing,
            "NetworkDriver.RevokeExternalConnectivity": self.nothing,
        }

    # --- trivial ----------------------------------------------------------------------------
    def get_capabilities(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"Scope": self.config.scope}

    def nothing(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def allocate_network(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"Options": {}}

    def endpoint_oper_info(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"Value": {}}

    # --- networks ---------------------------------------------------------------------------
    def create_network(self, body: Mapping[str, Any]) -> dict[str, Any]:
        network_id = _required(body, "NetworkID")
        check_network_options(body.get("Options") or {})
        for data in body.get("IPv4Data") or []:
            if (data or {}).get("Gateway") != ANY_POOL_V4:
                raise DriverError(
                    f"Non-Tortie IPAM driver is used: create the network with --ipam-driver "
                    f"{self.config.ipam_driver}"
                )
        for data in body.get("IPv6Data") or []:
            data = data or {}
            if data.get("AddressSpace") not in (LOCAL_ADDRESS_SPACE, GLOBAL_ADDRESS_SPACE) \
                    and data.get("Gateway") != ANY_POOL_V6:
                raise DriverError(
                    f"Non-Tortie IPAM driver is used: create the network with --ipam-driver "
                    f"{self.config.ipam_driver}"
                )
        with self._lock:
            self._deleted.discard(network_id)
        if self.config.create_profiles:
            self._background(lambda: self._profile_for_new_network(network_id))
        log.info("network %s created", network_id[:12])
        return {}

    def _profile_for_new_network(self, network_id: str) -> None:
        """Name the network as soon as Docker has stored it, and make its Profile."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with self._lock:
                if network_id in self._deleted:
                    return
            try:
                name = self.docker.network_name(network_id)
            except DockerAPIError:
                time.sleep(0.05)
                continue
            with self._lock:
                self._names[network_id] = name
            self.ensure_profile(name)
            return
        log.info("network %s: no name from Docker yet; its profile will be created with its "
                 "first endpoint", network_id[:12])

    def delete_network(self, body: Mapping[str, Any]) -> dict[str, Any]:
        network_id = _required(body, "NetworkID")
        with self._lock:
            self._deleted.add(network_id)
            name = self._names.pop(network_id, None)
        if name is None and self.config.create_profiles:
            try:
                name = self.docker.network_name(network_id)
            except DockerAPIError as exc:
                log.info("network %s: cannot name it (%s); its profile is kept",
                         network_id[:12], exc)
        if name and self.config.create_profiles:
            try:
                self.remove_profile_if_unused(name)
            except Exception as exc:  # never block `docker network rm` on the profile
                log.warning("network %s: profile %s not removed: %s", network_id[:12], name, exc)
        log.info("network %s deleted", network_id[:12])
        return {}

    def network_name(self, network_id: str) -> str:
        with self._lock:
            name = self._names.get(network_id)
        if name is not None:
            return name
        try:
            name = self.docker.network_name(network_id)
        except DockerAPIError as exc:
            raise DriverError(f"Network {network_id} inspection error: {exc}") from None
        with self._lock:
            self._names[network_id] = name
        return name

    # --- profiles ---------------------------------------------------------------------------
    def ensure_profile(self, name: str) -> None:
        """Create the network's Profile unless one of that name exists (never updated)."""
        from tortie.api import ValidationError, validate
        from tortie.datastore.client import ResourceError, ResourceExists, ResourceNotFound

        try:
            self.resources.get("Profile", name)
            return
        except ResourceNotFound:
            pass
        except ResourceError as exc:
            raise DriverError(f"cannot read profile {name}: {exc}") from None
        try:
            profile = validate(
                {
                    "apiVersion": "projectcalico.org/v3",
                    "kind": "Profile",
                    "metadata": {"name": name, "annotations": {PROFILE_ANNOTATION: name}},
                    "spec": {
                        "ingress": [{"action": "Allow", "source": {"selector": f"has({name})"}}],
                        "egress": [{"action": "Allow"}],
                        "labelsToApply": {name: ""},
                    },
                }
            )
        except ValidationError as exc:
            raise DriverError(
                f"network name {name!r} cannot name a Tortie profile ({exc}): rename the "
                "network, or run the driver with CALICO_LIBNETWORK_CREATE_PROFILES=false"
            ) from None
        try:
            self.resources.create(profile)
            log.info("profile %s created", name)
        except ResourceExists:
            pass
        except ResourceError as exc:
            raise DriverError(f"cannot create profile {name}: {exc}") from None

    def profile_in_use(self, name: str) -> bool:
        weps = self.resources.list("WorkloadEndpoint").items
        return any(name in (w.spec.profiles or ()) for w in weps)

    def remove_profile_if_unused(self, name: str) -> bool:
        """Delete the Profile if this driver made it and no endpoint names it. An endpoint
        created meanwhile is seen by the second look, and the Profile comes back."""
        from tortie.datastore.client import ResourceConflict, ResourceNotFound

        try:
            profile = self.resources.get("Profile", name)
        except ResourceNotFound:
            return False
        if (profile.metadata.annotations or {}).get(PROFILE_ANNOTATION) != name:
            log.info("profile %s was not created by this driver: kept", name)
            return False
        if self.profile_in_use(name):
            return False
        try:
            self.resources.delete("Profile", name, None, profile.metadata.resource_version)
        except (ResourceNotFound, ResourceConflict):
            return False
        if self.profile_in_use(name):
            self.ensure_profile(name)
            return False
        log.info("profile %s deleted", name)
        return True

    # --- endpoints --------------------------------------------------------------------------
    def create_endpoint(self, body: Mapping[str, Any]) -> dict[str, Any]:
        from tortie.api import ValidationError, validate
        from tortie.datastore.client import ResourceError, ResourceExists

        network_id = _required(body, "NetworkID")
        endpoint_id = _required(body, "EndpointID")
        iface = body.get("Interface") or {}
        ips = _addresses(opt_str(iface, "Address"), opt_str(iface, "AddressIPv6"))
        user_mac = opt_str(iface, "MacAddress").lower()
        mac = user_mac or container_mac(endpoint_id)
        profiles: list[str] = []
        if self.config.create_profiles:
            name = self.network_name(network_id)
            self.ensure_profile(name)
            profiles.append(name)
        wep_name = endpoint_name(self.config.nodename, endpoint_id)
        doc = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": wep_name, "namespace": self.config.namespace},
            "spec": {
                "orchestrator": ORCHESTRATOR,
                "workload": ORCHESTRATOR,
                "node": self.config.nodename,
                "endpoint": endpoint_id,
                "ipNetworks": [f"{ip.ip}/{ip.max_prefixlen}" for ip in ips],
                "interfaceName": veth.host_ifname(endpoint_id),
                "mac": mac,
                "profiles": profiles,
            },
        }
        try:
            wep = validate(doc)
        except ValidationError as exc:
            raise DriverError(f"invalid WorkloadEndpoint for endpoint {endpoint_id}: {exc}") \
                from None
        try:
            try:
                self.resources.create(wep)
            except ResourceExists:  # a replayed request: make it what this one says
                self.resources.update(wep)
        except ResourceError as exc:
            raise DriverError(f"Workload endpoint creation error: {exc}") from None
        if profiles:
            self.ensure_profile(profiles[0])  # a `docker network rm` elsewhere may have raced
        with self._lock:
            self._endpoints[endpoint_id] = _Endpoint(network_id, tuple(ips), wep_name)
        log.info("endpoint %s: %s on %s", endpoint_id[:12],
                 ", ".join(str(ip.ip) for ip in ips), profiles[0] if profiles else network_id)
        return {"Interface": {} if user_mac else {"MacAddress": mac}}

    def delete_endpoint(self, body: Mapping[str, Any]) -> dict[str, Any]:
        from tortie.datastore.client import ResourceError, ResourceNotFound

        endpoint_id = _required(body, "EndpointID")
        with self._lock:
            self._endpoints.pop(endpoint_id, None)
        name = endpoint_name(self.config.nodename, endpoint_id)
        try:
            self.resources.delete("WorkloadEndpoint", name, self.config.namespace)
        except ResourceNotFound:
            pass
        except ResourceError as exc:
            raise DriverError(f"Endpoint {endpoint_id} removal error: {exc}") from None
        log.info("endpoint %s deleted", endpoint_id[:12])
        return {}

    def _endpoint_ips(self, endpoint_id: str) -> tuple[IPInterface, ...]:
        from tortie.datastore.client import ResourceError

        with self._lock:
            ep = self._endpoints.get(endpoint_id)
        if ep is not None:
            return ep.ips
        try:  # created before this process started
            wep = self.resources.get("WorkloadEndpoint",
                                     endpoint_name(self.config.nodename, endpoint_id),
                                     self.config.namespace)
        except ResourceError:
            return ()
        return tuple(ipaddress.ip_interface(n) for n in wep.spec.ip_networks or ())

    # --- join / leave -----------------------------------------------------------------------
    def join(self, body: Mapping[str, Any]) -> dict[str, Any]:
        network_id = _required(body, "NetworkID")
        endpoint_id = _required(body, "EndpointID")
        host_if = veth.host_ifname(endpoint_id)
        temp_if = veth.temp_ifname(endpoint_id)
        ips = self._endpoint_ips(endpoint_id)
        self.dataplane.create(host_if, temp_if, ips, self.config.veth_mtu)
        resp: dict[str, Any] = {
            "InterfaceName": {"SrcName": temp_if, "DstPrefix": self.config.if_prefix},
            "Gateway": GATEWAY_V4,
            "StaticRoutes": [
                {"Destination": f"{GATEWAY_V4}/32", "RouteType": _ROUTE_CONNECTED,
                 "NextHop": ""},
            ],
            "DisableGatewayService": True,
        }
        if any(ip.version == 6 for ip in ips):
            resp["GatewayIPv6"] = _HOST_MAC_LINK_LOCAL
            resp["StaticRoutes"].append(
                {"Destination": f"{_HOST_MAC_LINK_LOCAL}/128",
                 "RouteType": _ROUTE_CONNECTED, "NextHop": ""}
            )
        if self.config.label_endpoints:
            self._background(lambda: self.apply_container_labels(network_id, endpoint_id))
        return resp

    def leave(self, body: Mapping[str, Any]) -> dict[str, Any]:
        endpoint_id = _required(body, "EndpointID")
        self.dataplane.delete(veth.host_ifname(endpoint_id), veth.temp_ifname(endpoint_id))
        return {}

    # --- labels -----------------------------------------------------------------------------
    def _container_of(self, network_id: str, endpoint_id: str, deadline: float) -> str | None:
        while True:
            try:
                containers = self.docker.network(network_id).get("Containers") or {}
                for cid, info in containers.items():
                    if (info or {}).get("EndpointID") == endpoint_id \
                            and not cid.startswith("ep-"):
                        return str(cid)
            except DockerAPIError as exc:
                log.debug("network %s inspection: %s", network_id[:12], exc)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def apply_container_labels(self, network_id: str, endpoint_id: str) -> bool:
        """Copy the container's `org.projectcalico.label.*` labels to its endpoint."""
        deadline = time.monotonic() + self.config.label_poll_timeout
        cid = self._container_of(network_id, endpoint_id, deadline)
        if cid is None:
            log.warning("endpoint %s: no container found for it in %.1fs: labels not applied",
                        endpoint_id[:12], self.config.label_poll_timeout)
            return False
        while True:
            try:
                labels = self.docker.container_labels(cid)
                break
            except DockerAPIError as exc:
                if time.monotonic() >= deadline:
                    log.warning("container %s: cannot read its labels: %s", cid[:12], exc)
                    return False
                time.sleep(0.05)
        wanted = {k[len(LABEL_PREFIX):]: v for k, v in labels.items()
                  if k.startswith(LABEL_PREFIX) and len(k) > len(LABEL_PREFIX)}
        if not wanted:
            return False
        return self._label_endpoint(endpoint_id, cid, wanted)

    def _label_endpoint(self, endpoint_id: str, cid: str, wanted: Mapping[str, str]) -> bool:
        from tortie.api import ValidationError, validate
        from tortie.datastore.client import ResourceConflict, ResourceError, ResourceNotFound

        name = endpoint_name(self.config.nodename, endpoint_id)
        for _ in range(10):
            try:
                wep = self.resources.get("WorkloadEndpoint", name, self.config.namespace)
            except ResourceNotFound:
                return False  # the container is gone already
            doc = wep.to_dict()
            meta = doc["metadata"]
            meta["labels"] = {**(meta.get("labels") or {}), **wanted}
            try:
                updated = validate(doc)
            except ValidationError as exc:
                log.warning("container %s: labels %s not applied: %s", cid[:12],
                            sorted(wanted), exc)
                return False
            try:
                self.resources.update(updated)
            except (ResourceConflict, ResourceNotFound):
                continue
            except ResourceError as exc:
                log.warning("endpoint %s: labels not written: %s", endpoint_id[:12], exc)
                return False
            log.info("endpoint %s: labels %s", endpoint_id[:12],
                     ",".join(f"{k}={v}" for k, v in sorted(wanted.items())))
            return True
        log.warning("endpoint %s: labels not written: it kept changing", endpoint_id[:12])
        return False


def _required(body: Mapping[str, Any], key: str) -> str:
    value = opt_str(body, key)
    if not value:
        raise DriverError(f"malformed request: {key} is missing")
    return value


def check_network_options(options: Mapping[str, Any]) -> None:
    """Refuse every `docker network create` option but --ipv6 (Calico's wording)."""
    for key in sorted(options):
        if key in _KNOWN_NETWORK_OPTIONS:
            continue
        value = options[key]
        flag, shown, several = key, "", False
        if isinstance(value, bool):
            is_set = value
            flag = "--" + key.removeprefix("com.docker.network.")
        elif isinstance(value, Mapping):
            is_set = bool(value)
            flag = ", ".join(sorted(value))
            several = len(value) > 1
        else:
            is_set = True
            shown = f" ({value})" if value not in (None, "") else ""
        if is_set:
            word = "flags" if several else "flag"
            raise DriverError(f"Tortie driver does not support the {word} {flag}{shown}.")


def _addresses(v4: str, v6: str) -> list[IPInterface]:
    if not v4 and not v6:
        raise DriverError("No address assigned for endpoint: the network must use the "
                          "Tortie IPAM driver")
    out: list[IPInterface] = []
    for text, prefix in ((v4, 32), (v6, 128)):
        if not text:
            continue
        try:
            ip = ipaddress.ip_interface(text).ip
        except ValueError:
            raise DriverError(f"Parsing {text} as CIDR failed") from None
        out.append(ipaddress.ip_interface(f"{ip}/{prefix}"))
    return out

"""`IpamDriver`: Docker's remote IPAM API (`tortie-ipam`) over Tortie's block IPAM.

Behaviour follows Calico's libnetwork-plugin (`driver/ipam_driver.go`):

- `RequestPool`: without `--subnet` the pool is "every Tortie pool of this family"
  (ID `CalicoPoolIPv4`/`CalicoPoolIPv6`, CIDR `0.0.0.0/0`/`::/0`); with `--subnet` the CIDR
  must be exactly an IPPool's, and it becomes the pool ID. `--ip-range` and `--ipam-opt` are
  refused. The answer carries the placeholder gateway, so Docker never asks for one.
- `RequestAddress`: no address = auto-assign on this node (from the network's pool, or from
  any pool); an address (`docker run --ip`) = assign exactly that one, which must be inside an
  enabled pool. A gateway request (`--gateway`) is refused. The answer is a /32 (/128).
  Allocations carry no handle (Docker tells IPAM nothing about the endpoint); their `node`
  attribute names this node.
- `ReleaseAddress`: releases the address (idempotent); the placeholder gateway is ignored.
- `ReleasePool`, `GetCapabilities`, `GetDefaultAddressSpaces`: as Calico.

Each handler takes the decoded request body and returns the response body; failures raise
`DriverError` with the message the user will see.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from typing import Any

from tortie.ipam import AutoAssignArgs, IPAMClient, IPAMError, NoMatchingPool, PoolsExhausted
from tortie.libnetwork.protocol import (
    ANY_POOL_V4,
    ANY_POOL_V6,
    GATEWAY_OPTION,
    GLOBAL_ADDRESS_SPACE,
    LOCAL_ADDRESS_SPACE,
    POOL_ID_V4,
    POOL_ID_V6,
    REQUEST_ADDRESS_TYPE,
    DriverError,
    opt_str,
)

__all__ = ["IpamDriver"]

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpamDriver:
    """The `IpamDriver.*` methods (see the module docstring)."""

    def __init__(self, ipam: IPAMClient, nodename: str) -> None:
        self.ipam = ipam
        self.nodename = nodename

    def handlers(self) -> dict[str, Any]:
        return {
            "IpamDriver.GetCapabilities": self.get_capabilities,
            "IpamDriver.GetDefaultAddressSpaces": self.get_default_address_spaces,
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": self.release_pool,
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }

    # --- pools ----------------------------------------------------------------------------
    def get_capabilities(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def get_default_address_spaces(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "LocalDefaultAddressSpace": LOCAL_ADDRESS_SPACE,
            "GlobalDefaultAddressSpace": GLOBAL_ADDRESS_SPACE,
        }

    def _pool_cidrs(self) -> dict[Network, str]:
        """Every IPPool's CIDR -> its name."""
        out: dict[Network, str] = {}
        for pool in self.ipam.resources.list("IPPool").items:
            try:
                out[ipaddress.ip_network(pool.spec.cidr, strict=False)] = pool.name  # type: ignore[attr-defined]
            except ValueError:
                continue
        return out

    def request_pool(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if opt_str(body, "SubPool"):
            raise DriverError(
                "Tortie IPAM does not support sub pool configuration on 'docker network "
                "create' (--ip-range). Tortie IP pools should be configured first and IP "
                "assignment is from those pre-configured pools."
            )
        if body.get("Options"):
            names = ", ".join(sorted(body["Options"]))
            raise DriverError(f"Arbitrary options are not supported (--ipam-opt {names}).")
        v6 = bool(body.get("V6"))
        pool_id, pool = (POOL_ID_V6, ANY_POOL_V6) if v6 else (POOL_ID_V4, ANY_POOL_V4)
        gateway = pool
        requested = opt_str(body, "Pool")
        if requested:
            try:
                net = ipaddress.ip_network(requested, strict=False)
            except ValueError:
                raise DriverError(f"Invalid CIDR {requested!r} (--subnet).") from None
            if net.version != (6 if v6 else 4):
                raise DriverError(f"--subnet {requested} is not an IPv{6 if v6 else 4} CIDR.")
            if net not in self._pool_cidrs():
                raise DriverError(
                    f"The requested subnet {requested} must match the CIDR of a configured "
                    "Tortie IP Pool (tortiectl get ippools), or leave out --subnet to use all "
                    "pools."
                )
            pool_id = pool = str(net)
        log.debug("pool %s for a new network", pool_id)
        return {"PoolID": pool_id, "Pool": pool, "Data": {GATEWAY_OPTION: gateway}}

    def release_pool(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    # --- addresses ------------------------------------------------------------------------
    def request_address(self, body: Mapping[str, Any]) -> dict[str, Any]:
        options = body.get("Options") or {}
        if options.get(REQUEST_ADDRESS_TYPE) == GATEWAY_OPTION:
            raise DriverError(
                "Tortie IPAM does not support specifying a gateway (--gateway): workloads "
                "route through 169.254.1.1 on their host."
            )
        pool_id = opt_str(body, "PoolID")
        address = opt_str(body, "Address")
        attrs = {"node": self.nodename}
        if address:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                raise DriverError(f"{address!r} is not an IP address (--ip).") from None
            try:
                self.ipam.assign_ip(str(ip), None, attrs, self.nodename)
            except IPAMError as exc:
                raise DriverError(f"IP assignment error: {exc}") from None
            log.info("assigned %s (requested)", ip)
            return {"Address": f"{ip}/{ip.max_prefixlen}"}
        version, pools = self._pools_for(pool_id)
        args = AutoAssignArgs(
            num4=1 if version == 4 else 0,
            num6=1 if version == 6 else 0,
            attrs=attrs,
            hostname=self.nodename,
            ipv4_pools=pools if version == 4 else (),
            ipv6_pools=pools if version == 6 else (),
        )
        try:
            result = self.ipam.auto_assign(args)
        except NoMatchingPool as exc:
            raise DriverError(
                f"IP assignment error: {exc} (create one with tortiectl apply, or check the "
                "pools' nodeSelector and disabled fields)"
            ) from None
        except PoolsExhausted as exc:
            raise DriverError(f"IP assignment error: {exc}") from None
        except IPAMError as exc:
            raise DriverError(f"IP assignment error: {exc}") from None
        got = result.ipv4 or result.ipv6
        if len(got) != 1:
            raise DriverError(f"Unexpected number of assigned IP addresses: {got}")
        ip = got[0].ip
        log.info("assigned %s", ip)
        return {"Address": f"{ip}/{ip.max_prefixlen}"}

    def _pools_for(self, pool_id: str) -> tuple[int, tuple[str, ...]]:
        if pool_id == POOL_ID_V4:
            return 4, ()
        if pool_id == POOL_ID_V6:
            return 6, ()
        try:
            net = ipaddress.ip_network(pool_id, strict=False)
        except ValueError:
            raise DriverError(f"Invalid pool ID {pool_id!r}: not a Tortie network's pool.") \
                from None
        if net not in self._pool_cidrs():
            raise DriverError(
                f"The network references a Tortie IP pool ({net}) which has been deleted. "
                "Please re-instate the pool before using the network."
            )
        return net.version, (str(net),)

    def release_address(self, body: Mapping[str, Any]) -> dict[str, Any]:
        address = opt_str(body, "Address")
        try:
            ip = ipaddress.ip_address(address.split("/", 1)[0])
        except ValueError:
            raise DriverError(f"{address!r} is not an IP address.") from None
        if ip.is_unspecified:  # the placeholder gateway Docker "releases" with its network
            return {}
        try:
            self.ipam.release_ips([str(ip)])
        except IPAMError as exc:
            raise DriverError(f"IP releasing error, ip: {ip}: {exc}") from None
        log.info("released %s", ip)
        return {}

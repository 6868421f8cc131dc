"""Docker's plugin protocol as the drivers see it: names, constants and the error type.

Docker talks to a plugin with `POST /<Interface>.<Method>` and a JSON body on a unix socket
in its plugin directory; the answer is JSON with content type
`application/vnd.docker.plugins.v1+json`. A failure is HTTP 500 with `{"Err": "<message>"}`,
which Docker shows the user as `Error response from daemon: <Interface>.<Method>: <message>`
(so a message says what went wrong and what to do, in the user's terms).

The identifiers Docker stores and passes back are Calico's, so networks and tooling carry
over: pool IDs `CalicoPoolIPv4`/`CalicoPoolIPv6` for "every pool" (a pool's CIDR when the
network was created with `--subnet`), address spaces `CalicoLocalAddressSpace` and
`CalicoGlobalAddressSpace`, and the placeholder gateway `0.0.0.0/0` (`::/0`) that keeps
Docker from asking IPAM for a gateway and tells the network driver that Tortie IPAM is in use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CONTENT_TYPE",
    "GATEWAY_V4",
    "GLOBAL_ADDRESS_SPACE",
    "LABEL_PREFIX",
    "LOCAL_ADDRESS_SPACE",
    "POOL_ID_V4",
    "POOL_ID_V6",
    "DriverError",
    "opt_str",
]

CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"

POOL_ID_V4 = "CalicoPoolIPv4"
POOL_ID_V6 = "CalicoPoolIPv6"
LOCAL_ADDRESS_SPACE = "CalicoLocalAddressSpace"
GLOBAL_ADDRESS_SPACE = "CalicoGlobalAddressSpace"
ANY_POOL_V4 = "0.0.0.0/0"
ANY_POOL_V6 = "::/0"
GATEWAY_OPTION = "com.docker.network.gateway"
REQUEST_ADDRESS_TYPE = "RequestAddressType"

#: The workload's next hop, answered by proxy ARP on the host side of its veth.
GATEWAY_V4 = "169.254.1.1"
#: Container labels with this prefix become WorkloadEndpoint labels (prefix removed).
LABEL_PREFIX = "org.projectcalico.label."


class DriverError(Exception):
    """A request failed; the message goes back to Docker (and so to the user) as `Err`."""


def opt_str(body: Mapping[str, Any], key: str) -> str:
    """A string field of a request body ('' when absent or null); DriverError if not a string."""
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DriverError(f"malformed request: {key} must be a string, not {value!r}")
    return value

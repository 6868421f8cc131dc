"""Every resource kind; importing this package registers them all."""

from tortie.api.kinds import (  # noqa: F401
    bgp,
    cluster,
    endpoints,
    felixconfig,
    ipam,
    networksets,
    node,
    policy,
    tier,
)

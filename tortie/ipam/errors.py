"""The errors IPAM raises. Each message says what happened and, where it can, what to do.

`IPAMError` is the base of all of them; callers that only need "it failed, tell the user" catch
that. The subclasses let the CNI plugin and tortiectl tell the common cases apart (no address
left, address taken, address not assigned) without parsing messages.
"""

from __future__ import annotations

__all__ = [
    "AddressInUse",
    "AddressNotAssigned",
    "BlockLimitReached",
    "IPAMError",
    "NoMatchingPool",
    "NotInPool",
    "PoolsExhausted",
    "TooManyConflicts",
]


class IPAMError(Exception):
    """An IPAM operation failed; the message says why."""


class NoMatchingPool(IPAMError):
    """No enabled IP pool qualifies for this request (version, node, namespace, use)."""


class PoolsExhausted(IPAMError):
    """Fewer addresses than requested could be found; nothing from the request is kept."""


class BlockLimitReached(PoolsExhausted):
    """The node owns `maxBlocksPerHost` blocks, all full, and may not claim another."""


class AddressInUse(IPAMError):
    """A specific address was requested but is already assigned."""

    def __init__(self, ip: str, handle: str | None) -> None:
        held = f"handle {handle}" if handle else "no handle"
        super().__init__(
            f"IP {ip} is already assigned ({held}): choose another address, or release it first "
            f"(tortiectl ipam release --ip={ip}) if its owner is gone"
        )
        self.ip = ip
        self.handle = handle


class NotInPool(IPAMError):
    """A specific address was requested outside every enabled IP pool."""


class AddressNotAssigned(IPAMError):
    """The address has no allocation in IPAM."""

    def __init__(self, ip: str) -> None:
        super().__init__(f"IP {ip} is not assigned")
        self.ip = ip


class TooManyConflicts(IPAMError):
    """Compare-and-swap kept failing: too many allocators are writing the same keys."""

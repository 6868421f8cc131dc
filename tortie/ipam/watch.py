"""What every allocation reads, kept current by a watch: for long-lived IPAM clients.

A one-shot process (the CNI plugin) reads IP pools, IPReservations and the IPAMConfiguration
from etcd on every request. A long-lived one (the libnetwork driver, tortie-node, benchmarks)
can instead keep them in memory with a `Syncer` (list, then watch) and save those round trips:
`IPAMClient(backend, watch=True)`.

Freshness: a change reaches the cache within the watch latency (milliseconds). Until the first
snapshot is complete, or if the Syncer fails, nothing is served from the cache and the client
reads etcd as usual. The client also re-reads etcd when the cached view finds no usable pool
(a pool created an instant ago). Allocation itself never depends on the cache for correctness:
blocks and handles are always compare-and-swapped against etcd.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tortie.datastore import keys
from tortie.datastore.backend import KV, Backend
from tortie.datastore.syncer import Syncer, SyncStatus, Update
from tortie.ipam.block import NO_RESERVATIONS, AddressFilter
from tortie.ipam.model import IPAMConfig
from tortie.ipam.pools import Pool, reservations_from

__all__ = ["ResourceWatch"]

log = logging.getLogger(__name__)

_KINDS = ("IPPool", "IPReservation", "IPAMConfiguration")


class ResourceWatch:
    """IP pools, reservations and the IPAM configuration, from a Syncer (see module doc)."""

    def __init__(self, backend: Backend) -> None:
        self._prefixes = {kind: keys.resource_prefix(kind) for kind in _KINDS}
        self._raw: dict[str, dict[str, tuple[bytes, int]]] = {kind: {} for kind in _KINDS}
        self._generation: dict[str, int] = dict.fromkeys(_KINDS, 0)
        self._decoded: dict[str, tuple[int, Any]] = {}  # view -> (generation, value)
        self._lock = threading.Lock()
        self._in_sync = False
        self._syncer = Syncer(backend, list(self._prefixes.values()), self,
                              name="tortie-ipam-watch")

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, wait: float = 5.0) -> ResourceWatch:
        self._syncer.start()
        if not self._syncer.wait_in_sync(wait):
            log.info("IPAM watch not in sync after %.1fs: reading etcd directly meanwhile", wait)
        return self

    def stop(self) -> None:
        self._syncer.stop()

    @property
    def ready(self) -> bool:
        return self._in_sync and self._syncer.error is None

    # -- Syncer callbacks ----------------------------------------------------------------------

    def on_status(self, status: SyncStatus) -> None:
        if status is SyncStatus.IN_SYNC:
            self._in_sync = True

    def on_updates(self, updates: list[Update]) -> None:
        with self._lock:
            for u in updates:
                for kind, prefix in self._prefixes.items():
                    if u.key.startswith(prefix):
                        if u.value is None:
                            self._raw[kind].pop(u.key, None)
                        else:
                            self._raw[kind][u.key] = (u.value, u.revision)
                        self._generation[kind] += 1
                        break

    # -- views ---------------------------------------------------------------------------------

    def _view(self, name: str, kind: str, build: Any) -> Any:
        """A value derived from one kind's resources, rebuilt only after that kind changed."""
        with self._lock:
            generation = self._generation[kind]
            cached = self._decoded.get(name)
            if cached is not None and cached[0] == generation:
                return cached[1]
            raw = dict(self._raw[kind])
        value = build(_decode(kind, raw))
        with self._lock:
            self._decoded[name] = (generation, value)
        return value

    def pools(self) -> list[Pool] | None:
        if not self.ready:
            return None
        return list(self._view("pools", "IPPool",
                               lambda items: [Pool.from_resource(r) for r in items]))

    def reservations(self) -> AddressFilter | None:
        if not self.ready:
            return None
        return self._view(  # type: ignore[no-any-return]
            "reservations", "IPReservation",
            lambda items: reservations_from(items) if items else NO_RESERVATIONS,
        )

    def config(self) -> IPAMConfig | None:
        """The IPAMConfiguration `default`, or None when absent (or not in sync yet)."""
        if not self.ready:
            return None
        return self._view(  # type: ignore[no-any-return]
            "config", "IPAMConfiguration",
            lambda items: next(
                (config_of(r) for r in items if r.name == "default"), None
            ),
        )


def config_of(res: Any) -> IPAMConfig:
    """The allocator's settings from an IPAMConfiguration resource (Calico's defaults for
    fields left out)."""
    spec = res.spec
    return IPAMConfig(
        strict_affinity=bool(spec.strict_affinity),
        auto_allocate_blocks=(
            True if spec.auto_allocate_blocks is None else bool(spec.auto_allocate_blocks)
        ),
        max_blocks_per_host=int(spec.max_blocks_per_host or 0),
    )


def _decode(kind: str, raw: dict[str, tuple[bytes, int]]) -> list[Any]:
    from tortie.api import lookup
    from tortie.datastore.client import ResourceClient

    info = lookup(kind)
    assert info is not None
    return [
        ResourceClient.decode(info, KV(key, value, rev, rev, 1))
        for key, (value, rev) in sorted(raw.items())
    ]

"""`Snapshot`: the part of the datastore confd renders from, kept up to date by Syncer updates.

What confd watches (as Calico's BGP syncer does): Nodes, BGPConfigurations, BGPPeers,
BGPFilters, IPPools, and the block affinities of *this* node
(``/calico/ipam/v2/host/<node>/ipv4/block/<cidr>``). Every resource is validated as its kind
on the way in; an invalid one is treated as deleted (and logged), so a bad write can change
what BIRD is told but never break the rendering.

Block affinities follow Calico's confd cache: a ``pending`` affinity is not acted upon (treated
as absent), ``confirmed`` (or no state at all, from older writers) is this node's block,
``pendingDeletion`` keeps its blackhole route but is no longer aggregated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from tortie.datastore import keys
from tortie.datastore.syncer import Update

__all__ = ["WATCHED_KINDS", "BlockAffinity", "Snapshot", "watch_prefixes"]

log = logging.getLogger("tortie.confd")

#: The v3 kinds confd reads.
WATCHED_KINDS = ("Node", "BGPConfiguration", "BGPPeer", "BGPFilter", "IPPool")


def watch_prefixes(node: str) -> list[str]:
    """The datastore prefixes confd watches for ``node``."""
    return [keys.resource_prefix(k) for k in WATCHED_KINDS] + [keys.host_affinity_prefix(node)]


@dataclass(frozen=True)
class BlockAffinity:
    """One of this node's blocks (``cidr`` normalised) and its affinity state."""

    cidr: str
    version: int
    state: str = "confirmed"

    @property
    def confirmed(self) -> bool:
        return self.state == "confirmed"


@dataclass
class Snapshot:
    """confd's copy of the datastore. Plain dicts: tests build one directly."""

    nodes: dict[str, Any] = field(default_factory=dict)
    bgp_configs: dict[str, Any] = field(default_factory=dict)
    peers: dict[str, Any] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    pools: dict[str, Any] = field(default_factory=dict)
    affinities: dict[str, BlockAffinity] = field(default_factory=dict)

    @classmethod
    def of(cls, resources: list[Any], affinities: list[BlockAffinity] | None = None) -> Snapshot:
        """A snapshot holding ``resources`` (validated Resources) and ``affinities``."""
        snap = cls()
        for res in resources:
            snap._table(res.KIND)[res.name] = res
        for aff in affinities or ():
            snap.affinities[aff.cidr] = aff
        return snap

    def _table(self, kind: str) -> dict[str, Any]:
        return {
            "Node": self.nodes,
            "BGPConfiguration": self.bgp_configs,
            "BGPPeer": self.peers,
            "BGPFilter": self.filters,
            "IPPool": self.pools,
        }[kind]

    # --- updates from the Syncer ---------------------------------------------------------
    def apply(self, update: Update) -> bool:
        """Apply one datastore update; True if it may change the rendered configuration."""
        if update.key.startswith(keys.RESOURCES_PREFIX):
            return self._apply_resource(update)
        if update.key.startswith(keys.IPAM_PREFIX):
            return self._apply_affinity(update)
        return False

    def _apply_resource(self, update: Update) -> bool:
        from tortie.api import ValidationError, validate

        try:
            kind, _, name = keys.parse_resource_key(update.key)
        except ValueError:
            return False
        if kind not in WATCHED_KINDS:
            return False
        table = self._table(kind)
        if update.value is None:
            return table.pop(name, None) is not None
        try:
            resource = validate(json.loads(update.value))
        except (ValueError, ValidationError) as exc:
            log.warning("ignoring invalid %s %s (treated as deleted): %s", kind, name, exc)
            return table.pop(name, None) is not None
        if kind != resource.KIND:
            log.warning("ignoring a %s stored under a %s key %s", resource.KIND, kind, update.key)
            return table.pop(name, None) is not None
        table[name] = resource
        return True

    def _apply_affinity(self, update: Update) -> bool:
        try:
            parsed = keys.parse_host_affinity_key(update.key)
        except ValueError:
            return False
        affinity = None if update.value is None else _parse_affinity(parsed, update.value)
        if affinity is None:
            return self.affinities.pop(parsed.cidr, None) is not None
        if self.affinities.get(parsed.cidr) == affinity:
            return False
        self.affinities[parsed.cidr] = affinity
        return True


def _parse_affinity(key: keys.HostAffinityKey, value: bytes) -> BlockAffinity | None:
    """The affinity in a stored value, or None when it is not (yet, or any more) in force."""
    try:
        data = json.loads(value) if value.strip() else {}
    except ValueError:
        log.warning("ignoring unparseable block affinity at %s", key)
        return None
    if not isinstance(data, dict):
        data = {}
    state = data.get("state") or "confirmed"
    deleted = data.get("deleted") in (True, "true")
    if deleted or state == "pending":
        return None
    return BlockAffinity(key.cidr, key.version, str(state))

"""The small IPAM records besides blocks, as libcalico-go stores them (pure; no I/O).

- `IPAMHandle` at `/calico/ipam/v2/handle/<id>`: `{"block": {"10.65.0.0/26": 2}, "deleted":
  false}`, how many addresses the handle holds in each block (`lib/backend/model/ipam_handle.go`;
  the handle id is the key, not a field: libcalico-go tags it `json:"-"`).
- `BlockAffinity` at `/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`: `{"state": "confirmed",
  "deleted": false}`; the state goes `pending` -> `confirmed` when a node claims a block, and
  `pendingDeletion` while it lets it go (`lib/backend/model/block_affinity.go`).
- `IPAMConfig` at `/calico/ipam/v2/config`: `{"strict_affinity": true, "auto_allocate_blocks":
  true, "maxBlocksPerHost": 4}`, zero values omitted (`lib/backend/model/ipam_config.go`).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "STATE_CONFIRMED",
    "STATE_PENDING",
    "STATE_PENDING_DELETION",
    "BlockAffinity",
    "IPAMConfig",
    "IPAMHandle",
]

STATE_CONFIRMED = "confirmed"
STATE_PENDING = "pending"
STATE_PENDING_DELETION = "pendingDeletion"


@dataclass
class IPAMHandle:
    handle_id: str
    block: dict[str, int] = field(default_factory=dict)
    deleted: bool = False

    @classmethod
    def from_json(cls, handle_id: str, raw: bytes | str) -> IPAMHandle:
        data = json.loads(raw)
        return cls(
            handle_id,
            {str(k): int(v) for k, v in (data.get("block") or {}).items()},
            bool(data.get("deleted", False)),
        )

    def to_json(self) -> bytes:
        return json.dumps({"block": self.block, "deleted": self.deleted},
                          separators=(",", ":")).encode()

    def increment(self, cidr: str, num: int) -> None:
        self.block[cidr] = self.block.get(cidr, 0) + num

    def decrement(self, cidr: str, num: int) -> None:
        """Take `num` off the block's count, dropping the entry at zero. Never goes below
        zero: an over-long decrement (the handle undercounted) just drops the entry."""
        left = self.block.get(cidr, 0) - num
        if left > 0:
            self.block[cidr] = left
        else:
            self.block.pop(cidr, None)

    def empty(self) -> bool:
        return not self.block

    def total(self, version: int | None = None) -> int:
        return sum(
            n
            for cidr, n in self.block.items()
            if version is None or ipaddress.ip_network(cidr).version == version
        )


@dataclass
class BlockAffinity:
    state: str = STATE_CONFIRMED
    deleted: bool = False

    @classmethod
    def from_json(cls, raw: bytes | str) -> BlockAffinity:
        data: dict[str, Any] = json.loads(raw) if raw else {}
        # An empty state is what very old Calico wrote: treat it as confirmed, as Calico does.
        return cls(str(data.get("state") or STATE_CONFIRMED), bool(data.get("deleted", False)))

    def to_json(self) -> bytes:
        return json.dumps({"state": self.state, "deleted": self.deleted},
                          separators=(",", ":")).encode()


@dataclass(frozen=True)
class IPAMConfig:
    """The allocator's settings. Defaults (no config stored) are Calico's."""

    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = 0

    @classmethod
    def from_json(cls, raw: bytes | str) -> IPAMConfig:
        data = json.loads(raw) if raw else {}
        return cls(
            strict_affinity=bool(data.get("strict_affinity", False)),
            auto_allocate_blocks=bool(data.get("auto_allocate_blocks", False)),
            max_blocks_per_host=int(data.get("maxBlocksPerHost") or 0),
        )

    def to_json(self) -> bytes:
        out: dict[str, Any] = {}
        if self.strict_affinity:
            out["strict_affinity"] = True
        if self.auto_allocate_blocks:
            out["auto_allocate_blocks"] = True
        if self.max_blocks_per_host:
            out["maxBlocksPerHost"] = self.max_blocks_per_host
        return json.dumps(out, separators=(",", ":")).encode()

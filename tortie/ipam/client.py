"""`IPAMClient`: Calico's block IPAM over any `Backend`, every write a compare-and-swap.

This module owns the datastore side of IPAM: reading pools, reservations, the Node and the
allocator's config; finding, claiming, confirming and releasing block affinities; writing
blocks and handles with retries on conflict. The block arithmetic is in `tortie.ipam.block`,
pool choice in `tortie.ipam.pools`. It follows libcalico-go's `lib/ipam/ipam.go` and
`ipam_block_reader_writer.go`, with one difference: a block and the handles whose counts
change with it are written in one datastore transaction (`Backend.txn`), where libcalico-go
writes the handle and then the block. The stored JSON is libcalico-go's either way.

Auto-assignment, per IP version
  1. Pools: enabled pools of that version whose nodeSelector matches the Node's labels (and
     namespaceSelector the namespace's), allowing the intended use; or the pools the request
     names. Reserved addresses (IPReservations) are never auto-assigned.
  2. The node's affine blocks first (`/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`), in key
     order. Empty affine blocks of pools that no longer select the node are released.
  3. When they are full, claim a new block, unless the node already has `maxBlocksPerHost`
     blocks (the request's limit or the config's, the stricter; 20 when neither is set, as
     current Calico): write the affinity as `pending`, create the block (a create is its own
     compare-and-swap: of two nodes racing for a block, one wins and the other deletes its
     pending affinity and looks again), then mark the affinity `confirmed`. The block to claim
     is the first free one walking the pool from a host-dependent starting point; when no block
     is left, an *empty* block another node claimed over a minute ago is reclaimed.
  4. Still short and `strictAffinity` is off: borrow free addresses from other nodes' blocks.
  5. Still short: nothing from the request is kept (addresses already taken are released) and
     `PoolsExhausted` (or `BlockLimitReached`) says why.
  Each allocation from a block is one transaction: the block and the handle
  (`/calico/ipam/v2/handle/<id>`, its count for the block incremented), conditioned on the
  block's mod revision and the handle's (or the handle's absence: a new handle is assumed
  absent until a conflict says otherwise). Both are written or neither, so a crash leaves
  neither an allocation without its handle nor a handle overcounting. A failed transaction
  returns the block and the handle as they are now; the allocation is recomputed from them,
  without another read.

Release returns addresses to the end of the block's free list (FIFO reuse). A block left empty
and without affinity is deleted. The block (or its deletion) and the decremented handles are
again one transaction (release by handle: that handle, as read; release by address: the
handles the block names, read first). Release by handle is idempotent.

Requests per allocation. A fresh client (the one-shot CNI plugin) reads pools, reservations
and config, the host's affinities and its block, then writes block and handle in one
transaction. A long-lived client saves most of that: it remembers, per host, the block it
wrote last (as written: the next transaction proves it current, or fails and returns the
current block), and with `watch=True` keeps pools, reservations and config in memory
(`tortie.ipam.watch`), so a steady-state allocation is one request: one transaction, one disk
sync in etcd. Its concurrent requests for one host queue for the host's block (no
compare-and-swap conflicts among themselves), and those that queued while a transaction was in
flight go together in the next one: the block once, each request's handle (group commit).

Logging is quiet: debug for the normal flow, warnings only for odd datastore states.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tortie.datastore import keys
from tortie.datastore.backend import (
    KV,
    Backend,
    Compare,
    Delete,
    KeyExists,
    KeyNotFound,
    Op,
    Put,
    RevisionConflict,
)
from tortie.ipam.block import (
    NO_RESERVATIONS,
    AddressFilter,
    AffinityMismatch,
    AllocationBlock,
    AlreadyAssigned,
    IPAddress,
    Network,
    ReleaseConflict,
    ReleaseOptions,
    sanitize_handle,
)
from tortie.ipam.errors import (
    AddressInUse,
    AddressNotAssigned,
    BlockLimitReached,
    IPAMError,
    NoMatchingPool,
    NotInPool,
    PoolsExhausted,
    TooManyConflicts,
)
from tortie.ipam.model import (
    STATE_CONFIRMED,
    STATE_PENDING,
    STATE_PENDING_DELETION,
    BlockAffinity,
    IPAMConfig,
    IPAMHandle,
)
from tortie.ipam.pools import (
    Pool,
    block_generator,
    determine_pools,
    fnv1_32,
    pool_for_ip,
    random_block_generator,
    reservations_from,
)
from tortie.ipam.watch import ResourceWatch, config_of

if TYPE_CHECKING:
    from tortie.datastore.client import ResourceClient

__all__ = [
    "DATASTORE_RETRIES",
    "DEFAULT_MAX_BLOCKS_PER_HOST",
    "EMPTY_BLOCK_MIN_RECLAIM_AGE",
    "TUNNEL_KINDS",
    "AssignResult",
    "AutoAssignArgs",
    "BlockUtilization",
    "IPAMClient",
    "PoolUtilization",
]

log = logging.getLogger(__name__)

#: How often a compare-and-swap is retried before giving up (libcalico-go's datastoreRetries).
DATASTORE_RETRIES = 100
#: Block limit per node when neither the request nor the config sets one (current Calico).
DEFAULT_MAX_BLOCKS_PER_HOST = 20
#: An empty block claimed less than this long ago is not taken from its node (seconds).
EMPTY_BLOCK_MIN_RECLAIM_AGE = 60.0

#: Tunnel address kinds: (handle prefix, allocation `type` attribute, IP version).
TUNNEL_KINDS: dict[str, tuple[str, str, int]] = {
    "vxlan": ("vxlan-tunnel-addr-", "vxlanTunnelAddress", 4),
    "vxlan-v6": ("vxlan-v6-tunnel-addr-", "vxlanV6TunnelAddress", 6),
    "ipip": ("ipip-tunnel-addr-", "ipipTunnelAddress", 4),
    "wireguard": ("wireguard-tunnel-addr-", "wireguardTunnelAddress", 4),
    "wireguard-v6": ("wireguard-v6-tunnel-addr-", "wireguardV6TunnelAddress", 6),
}

_USES = ("Workload", "Tunnel")


@dataclass
class AutoAssignArgs:
    """What to auto-assign (libcalico-go's `AutoAssignArgs`).

    `ipv4_pools`/`ipv6_pools` name pools by CIDR or name; empty means every enabled pool that
    selects the node. `max_blocks_per_host` 0 means "the config's limit". `namespace_labels`
    are matched against pools' namespaceSelector (None counts as no labels).
    """

    num4: int = 0
    num6: int = 0
    handle_id: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    ipv4_pools: Sequence[str] = ()
    ipv6_pools: Sequence[str] = ()
    max_blocks_per_host: int = 0
    intended_use: str = "Workload"
    namespace_labels: dict[str, str] | None = None


@dataclass
class AssignResult:
    """The addresses assigned, each with its *block's* prefix length (10.65.0.5/26), as
    libcalico-go returns them; the CNI plugin hands workloads a /32 (/128) of the address."""

    ipv4: list[ipaddress.IPv4Interface] = field(default_factory=list)
    ipv6: list[ipaddress.IPv6Interface] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [str(i.ip) for i in (*self.ipv4, *self.ipv6)]


@dataclass(frozen=True)
class BlockUtilization:
    cidr: Network
    capacity: int
    available: int
    affinity: str | None


@dataclass
class PoolUtilization:
    """One pool's blocks (name and cidr None: blocks that belong to no pool)."""

    name: str | None
    cidr: Network | None
    blocks: list[BlockUtilization] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        if self.cidr is None:
            return sum(b.capacity for b in self.blocks)
        return self.cidr.num_addresses

    @property
    def in_use(self) -> int:
        return sum(b.capacity - b.available for b in self.blocks)

    @property
    def available(self) -> int:
        return self.capacity - self.in_use


# -- internal signals ---------------------------------------------------------------------------


class _NoFreeBlocks(Exception):
    pass


class _BlockClaimConflict(Exception):
    """Another node owns the block we wanted."""


class _StaleAffinity(Exception):
    """Our affinity points at a block that belongs to someone else; it has been deleted."""


class _BlockNotEmpty(Exception):
    pass


@dataclass
class _Context:
    pools: list[Pool]
    reserved: AddressFilter
    config: IPAMConfig
    node_labels: dict[str, str] | None = None
    affinities: list[KV] | None = None  # None: not read yet
    hinted: tuple[KV, AllocationBlock] | None = None


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age_seconds(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (datetime.now(UTC) - when).total_seconds()


def _parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip().split("/", 1)[0])
    except ValueError:
        raise IPAMError(f"invalid IP address {text!r}") from None


def _handle(handle_id: str | None) -> str | None:
    """A handle id as stored (sanitised, as libcalico-go does); None for no handle."""
    if not handle_id:
        return None
    handle = sanitize_handle(handle_id)
    if not handle or "/" in handle:
        raise IPAMError(f"invalid handle id {handle_id!r}: it must be non-empty, without '/'")
    return handle


def _interface(ip: IPAddress, block: AllocationBlock) -> Any:
    return ipaddress.ip_interface(f"{ip}/{block.cidr.prefixlen}")


_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tortie-ipam")
        return _EXECUTOR


class IPAMClient:
    """Calico block IPAM (see the module docstring). Thread-safe; one per process is enough."""

    def __init__(
        self,
        backend: Backend,
        resource_client: ResourceClient | None = None,
        *,
        watch: bool = False,
        parallel_reads: bool = False,
        empty_block_reclaim_age: float = EMPTY_BLOCK_MIN_RECLAIM_AGE,
    ) -> None:
        """`watch=True` keeps pools, reservations and config in memory (tortie.ipam.watch),
        for long-lived processes; call `close()` to stop it. `parallel_reads` issues the reads
        of a request concurrently (helps when etcd is far away and CPUs are idle)."""
        if resource_client is None:
            from tortie.datastore.client import ResourceClient

            resource_client = ResourceClient(backend)
        self.backend = backend
        self.resources = resource_client
        self.parallel_reads = parallel_reads
        self.empty_block_reclaim_age = empty_block_reclaim_age
        # Per (host, version): the block this client allocated from last, and the block as it
        # wrote it (None: read it). If another writer changed it since, the compare-and-swap
        # fails and the block is read again: a stale copy costs one request, never an error.
        self._hints: dict[tuple[str, int], tuple[str, KV | None]] = {}
        self._node_needed = False
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, int], _HostQueue] = {}
        self._watch: ResourceWatch | None = None
        if watch:
            self._watch = ResourceWatch(backend).start()

    def close(self) -> None:
        """Stop the watch, if any (the backend is the caller's to close)."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    def __enter__(self) -> IPAMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # =========================================================================================
    # Reading what allocation depends on

    def _pools(self) -> list[Pool]:
        return [Pool.from_resource(r) for r in self.resources.list("IPPool").items]

    def _reservations(self) -> AddressFilter:
        items = self.resources.list("IPReservation").items
        return reservations_from(items) if items else NO_RESERVATIONS

    def _node_labels(self, node: str) -> dict[str, str] | None:
        from tortie.datastore.client import ResourceNotFound

        try:
            return dict(self.resources.get("Node", node).labels or {})
        except ResourceNotFound:
            return None

    def _host_affinities(self, host: str, version: int) -> list[KV]:
        kvs, _ = self.backend.list(keys.host_affinity_prefix(host, version))
        return kvs

    def _read_block(self, cidr: Network | str) -> tuple[KV, AllocationBlock] | None:
        try:
            kv = self.backend.get(keys.block_key(str(cidr)))
        except KeyNotFound:
            return None
        return kv, AllocationBlock.from_json(kv.value)

    def _gather(self, *calls: Callable[[], Any]) -> list[Any]:
        """Run independent reads, concurrently when that saves round trips."""
        if not self.parallel_reads or len(calls) < 2:
            return [c() for c in calls]
        futures = [_executor().submit(c) for c in calls[1:]]
        first = calls[0]()
        return [first, *(f.result() for f in futures)]

    def _context(
        self, host: str, version: int, *, affinities: bool = False, cached: bool = True
    ) -> _Context:
        """Read, in one go, what an allocation on `host` needs: pools, reservations, config
        (from the watch when there is one); the Node when a pool's nodeSelector needs its
        labels; and either the block this client used last for the host (the usual case: it
        still has room) or the host's affinities."""
        with self._lock:
            hint = self._hints.get((host, version))
            need_node = self._node_needed
        watch = self._watch if cached else None
        pools = watch.pools() if watch else None
        reserved = watch.reservations() if watch else None
        config = watch.config() if watch else None
        calls: list[Callable[[], Any]] = []
        if pools is None:
            calls.append(self._pools)
        if reserved is None:
            calls.append(self._reservations)
        if config is None:
            calls.append(self.get_config)
        if need_node:
            calls.append(lambda: self._node_labels(host))
        use_hint = hint is not None and not affinities
        if use_hint and hint[1] is None:  # type: ignore[index]
            calls.append(lambda: self._read_block(hint[0]))  # type: ignore[index]
        elif not use_hint:
            calls.append(lambda: self._host_affinities(host, version))
        results = self._gather(*calls) if calls else []
        if pools is None:
            pools = results.pop(0)
        if reserved is None:
            reserved = results.pop(0)
        if config is None:
            config = results.pop(0)
        ctx = _Context(pools, reserved, config)
        if need_node:
            ctx.node_labels = results.pop(0)
        if use_hint:
            written = hint[1]  # type: ignore[index]
            ctx.hinted = (
                (written, AllocationBlock.from_json(written.value)) if written is not None
                else results.pop(0)
            )
        else:
            ctx.affinities = results.pop(0)
        needs = any(p.needs_node_labels for p in ctx.pools)
        if needs != need_node:
            with self._lock:
                self._node_needed = needs
            if needs:
                ctx.node_labels = self._node_labels(host)
        return ctx

    def _remember(self, host: str, version: int, cidr: Network, written: KV | None) -> None:
        with self._lock:
            self._hints[(host, version)] = (str(cidr), written)

    def _host_queue(self, host: str, version: int) -> _HostQueue:
        with self._lock:
            return self._queues.setdefault((host, version), _HostQueue())

    def _latest_written(self, host: str, version: int, cidr: Network, kv: KV) -> KV:
        """The block as this process last wrote it, if that is newer than `kv`."""
        with self._lock:
            hint = self._hints.get((host, version))
        written = hint[1] if hint is not None and hint[0] == str(cidr) else None
        if written is not None and written.mod_revision > kv.mod_revision:
            return written
        return kv

    # =========================================================================================
    # Configuration

    def get_config(self) -> IPAMConfig:
        """The allocator's settings: the IPAMConfiguration resource `default`.

        When it does not exist, libcalico-go's `/calico/ipam/v2/config` (or Calico's defaults
        when that is missing too) is used and written as the resource, as libcalico-go creates
        its default config on first use; later reads then cost one lookup.
        """
        from tortie.datastore.client import ResourceNotFound

        try:
            res = self.resources.get("IPAMConfiguration", "default")
        except ResourceNotFound:
            pass
        else:
            return config_of(res)
        try:
            cfg = IPAMConfig.from_json(self.backend.get(keys.ipam_config_key()).value)
        except KeyNotFound:
            cfg = IPAMConfig()
            try:
                self.backend.create(keys.ipam_config_key(), cfg.to_json())
            except KeyExists:
                pass
        self._write_config_resource(cfg, create_only=True)
        return cfg

    def set_config(
        self,
        *,
        strict_affinity: bool | None = None,
        max_blocks_per_host: int | None = None,
        auto_allocate_blocks: bool | None = None,
    ) -> IPAMConfig:
        """Change the given settings (others keep their value); return the new config.

        Written both to `/calico/ipam/v2/config` (libcalico-go's record) and to the
        IPAMConfiguration resource `default`, so `tortiectl get ipamconfig` agrees.
        """
        current = self.get_config()
        new = IPAMConfig(
            strict_affinity=current.strict_affinity if strict_affinity is None
            else strict_affinity,
            auto_allocate_blocks=current.auto_allocate_blocks if auto_allocate_blocks is None
            else auto_allocate_blocks,
            max_blocks_per_host=current.max_blocks_per_host if max_blocks_per_host is None
            else max_blocks_per_host,
        )
        if new.max_blocks_per_host < 0:
            raise IPAMError("maxBlocksPerHost must be 0 (no limit) or more")
        if not new.strict_affinity and not new.auto_allocate_blocks:
            raise IPAMError(
                "cannot disable both strictAffinity and autoAllocateBlocks: a node could then "
                "get no address at all"
            )
        if new.max_blocks_per_host > 0 and not new.strict_affinity:
            raise IPAMError(
                "maxBlocksPerHost requires strictAffinity: set --strictaffinity=true as well"
            )
        key = keys.ipam_config_key()
        for _ in range(DATASTORE_RETRIES):
            try:
                kv = self.backend.get(key)
            except KeyNotFound:
                try:
                    self.backend.create(key, new.to_json())
                    break
                except KeyExists:
                    continue
            try:
                self.backend.update(key, new.to_json(), kv.mod_revision)
                break
            except (RevisionConflict, KeyNotFound):
                continue
        else:
            raise TooManyConflicts("could not write the IPAM config: it keeps changing")
        self._write_config_resource(new)
        return new

    def _write_config_resource(self, cfg: IPAMConfig, *, create_only: bool = False) -> None:
        from tortie.api.base import ObjectMeta
        from tortie.api.kinds.ipam import IPAMConfiguration, IPAMConfigurationSpec
        from tortie.datastore.client import ResourceExists

        res = IPAMConfiguration(
            metadata=ObjectMeta(name="default"),
            spec=IPAMConfigurationSpec(
                strict_affinity=cfg.strict_affinity,
                auto_allocate_blocks=cfg.auto_allocate_blocks,
                max_blocks_per_host=cfg.max_blocks_per_host or None,
            ),
        )
        if not create_only:
            from tortie.datastore.client import ResourceNotFound

            try:
                current = self.resources.get("IPAMConfiguration", "default")
            except ResourceNotFound:
                pass
            else:  # keep the fields IPAM does not manage
                spec = current.spec  # type: ignore[attr-defined]
                spec.strict_affinity = cfg.strict_affinity
                spec.auto_allocate_blocks = cfg.auto_allocate_blocks
                spec.max_blocks_per_host = cfg.max_blocks_per_host or None
                res = current
        try:
            self.resources.create(res) if res.metadata.uid is None else self.resources.update(res)
        except ResourceExists:
            if not create_only:
                raise

    # =========================================================================================
    # Auto-assignment

    def auto_assign(self, args: AutoAssignArgs) -> AssignResult:
        """Assign `num4` IPv4 and `num6` IPv6 addresses to `args.handle_id` on `args.hostname`.

        All or nothing: if either family falls short, whatever this call took is released
        and `PoolsExhausted` (or `NoMatchingPool`, `BlockLimitReached`) is raised.
        """
        host = args.hostname or socket.gethostname()
        if args.intended_use not in _USES:
            raise IPAMError(
                f"intended use must be one of {', '.join(_USES)} (got {args.intended_use!r})"
            )
        if args.num4 < 0 or args.num6 < 0:
            raise IPAMError("the number of addresses to assign cannot be negative")
        handle_id = _handle(args.handle_id)
        handle = _HandleRef(handle_id) if handle_id else None
        result = AssignResult()
        taken: list[ReleaseOptions] = []
        try:
            for version, num, requested, out in (
                (4, args.num4, args.ipv4_pools, result.ipv4),
                (6, args.num6, args.ipv6_pools, result.ipv6),
            ):
                if num:
                    out.extend(
                        self._auto_assign(
                            version, num, handle, args, host, list(requested), taken
                        )
                    )
        except BaseException:
            if taken:
                try:
                    self.release_ips(taken)
                except Exception as exc:  # the original error matters more
                    log.warning("could not release %d address(es) after a failed "
                                "assignment: %s", len(taken), exc)
            raise
        return result

    def _auto_assign(
        self,
        version: int,
        num: int,
        handle: _HandleRef | None,
        args: AutoAssignArgs,
        host: str,
        requested: list[str],
        taken: list[ReleaseOptions],
    ) -> list[Any]:
        ctx = self._context(host, version)

        def choose() -> tuple[list[Pool], list[Pool]]:
            return determine_pools(
                ctx.pools,
                version=version,
                requested=requested,
                node=host,
                node_labels=ctx.node_labels,
                namespace_labels=args.namespace_labels,
                use=args.intended_use,
            )

        try:
            pools, selecting = choose()
        except NoMatchingPool:
            if self._watch is None:
                raise
            ctx = self._context(host, version, cached=False)  # a pool created just now?
            pools, selecting = choose()
        config = ctx.config
        limit = args.max_blocks_per_host
        if config.max_blocks_per_host > 0 and (limit <= 0 or limit > config.max_blocks_per_host):
            limit = config.max_blocks_per_host
        if limit <= 0:
            limit = DEFAULT_MAX_BLOCKS_PER_HOST

        def affine_blocks() -> list[tuple[Network, KV]]:
            kvs = ctx.affinities
            if kvs is None:
                kvs = self._host_affinities(host, version)
            affine: list[tuple[Network, KV]] = []
            to_release: list[Network] = []
            for kv in kvs:
                try:
                    cidr = ipaddress.ip_network(keys.parse_host_affinity_key(kv.key).cidr)
                except ValueError:
                    continue
                if pool_for_ip(pools, cidr.network_address) is not None:
                    affine.append((cidr, kv))
                elif pool_for_ip(selecting, cidr.network_address) is None:
                    to_release.append(cidr)
            if to_release:
                self._release_unselected(host, to_release, ctx)
            return affine

        state = _ClaimState(host, version, pools, ctx.reserved, config, limit, affine_blocks)
        hinted = ctx.hinted
        if (
            hinted is not None
            and hinted[1].affine_to(host)
            and pool_for_ip(pools, hinted[1].cidr.network_address) is not None
        ):
            # The block this client used last for the host: still ours and in a usable pool.
            # Its own `affinity` field says so; the affinity list is read only if it is full.
            state.use_hint(hinted)
        else:
            state.load()
        messages: list[str] = []
        attrs = dict(args.attrs) if args.attrs else None
        got = self._assign_loop(
            state, num, handle, attrs, host, version, ctx, limit, messages, taken
        )
        if len(got) < num and not config.strict_affinity:
            got.extend(self._borrow(
                pools, num - len(got), handle, attrs, host, ctx.reserved, messages, taken
            ))
        if len(got) < num:
            names = ", ".join(f"{p.name} ({p.cidr})" for p in pools)
            detail = "; ".join(messages) if messages else "every block is full or reserved"
            raise PoolsExhausted(
                f"could not assign {num} IPv{version} address(es) to node {host} (found "
                f"{len(got)}) from pools {names}: {detail}. Add a pool, or release unused "
                "addresses (tortiectl ipam check)"
            )
        return got

    def _assign_loop(
        self,
        state: _ClaimState,
        num: int,
        handle: _HandleRef | None,
        attrs: dict[str, str] | None,
        host: str,
        version: int,
        ctx: _Context,
        limit: int,
        messages: list[str],
        taken: list[ReleaseOptions],
    ) -> list[Any]:
        """Allocate from the host's blocks (affine first, then newly claimed) until `num`
        addresses are taken or no block is left."""
        config = ctx.config
        got: list[Any] = []
        guard = 0
        while len(got) < num:
            guard += 1
            if guard > DATASTORE_RETRIES:
                raise TooManyConflicts(
                    f"could not assign IPv{version} addresses to node {host}: blocks keep "
                    "filling up under us (too many concurrent IPAM requests?)"
                )
            try:
                (bkv, block), newly = self._find_or_claim_block(state, min_free=1)
            except _NoFreeBlocks:
                if config.strict_affinity:
                    messages.append("no more free affine blocks and strict affinity is enabled")
                break
            except BlockLimitReached as exc:
                raise BlockLimitReached(
                    f"could not assign {num} IPv{version} address(es) to node {host}: it already "
                    f"has {state.blocks_owned} block(s), the limit (maxBlocksPerHost) is {limit}, "
                    "and they are full: raise the limit (tortiectl ipam configure "
                    "--max-blocks-per-host=N) or release unused addresses"
                ) from exc
            if newly:
                state.claimed += 1
            new_ips = self._assign_from_block(
                bkv, block, num - len(got), handle, attrs, host,
                strict=config.strict_affinity, reserved=ctx.reserved, messages=messages,
                remember=version,
            )
            for ip, _cidr, blk in new_ips:
                taken.append(ReleaseOptions(str(ip), handle.id if handle else None))
                got.append(_interface(ip, blk))
        return got

    def _release_unselected(self, host: str, cidrs: list[Network], ctx: _Context) -> None:
        """Release empty affine blocks of pools that no longer select this node."""
        enabled = [p for p in ctx.pools if not p.disabled]
        for cidr in cidrs:
            pool = pool_for_ip(enabled, cidr.network_address)
            if pool is None:
                continue  # block of a deleted or disabled pool: leave it alone, as Calico
            if not pool.needs_node_labels or ctx.node_labels is None:
                continue
            if pool.selects_node(ctx.node_labels):
                continue
            for _ in range(DATASTORE_RETRIES):
                try:
                    self._release_block_affinity(host, cidr, require_empty=True)
                except (_BlockClaimConflict, _BlockNotEmpty, KeyNotFound):
                    pass
                except RevisionConflict:
                    continue
                log.debug("released empty block %s of node %s: its pool no longer selects it",
                          cidr, host)
                break

    def _find_or_claim_block(
        self, state: _ClaimState, min_free: int
    ) -> tuple[tuple[KV, AllocationBlock], bool]:
        """A block of this node with `min_free` free addresses: an affine one, else a newly
        claimed one. Returns ((kv, block), newly_claimed)."""
        while True:
            while state.remaining:
                cidr, aff_kv = state.remaining.pop(0)
                state.tried.add(cidr)
                if state.reserved.matches_whole_cidr(cidr):
                    continue
                if aff_kv is None:  # the hinted block, read already
                    hinted = state.take_hint()
                    if hinted is not None and hinted[1].num_free(state.reserved) >= min_free:
                        return hinted, False
                    continue
                found = self._affine_block(state.host, cidr, aff_kv)
                if found is not None and found[1].num_free(state.reserved) >= min_free:
                    return found, False
            if state.loaded:
                break
            state.load()

        if not state.allow_new_claim:
            raise BlockLimitReached("block limit reached")
        if not state.config.auto_allocate_blocks:
            raise _NoFreeBlocks
        for _ in range(DATASTORE_RETRIES):
            subnet = self._find_usable_block(state)
            for _ in range(DATASTORE_RETRIES):
                try:
                    aff_kv = self._pending_affinity(state.host, subnet)
                    found = self._block_from_affinity(state.host, subnet, aff_kv)
                except (RevisionConflict, KeyNotFound):
                    continue
                except (_BlockClaimConflict, _StaleAffinity):
                    break  # someone else has it: look for another
                if found[1].num_free(state.reserved) >= min_free:
                    return found, True
                break  # filled up meanwhile by another allocator on this node
        raise TooManyConflicts(
            f"could not claim a block for node {state.host}: too many concurrent IPAM requests"
        )

    def _affine_block(
        self, host: str, cidr: Network, aff_kv: KV
    ) -> tuple[KV, AllocationBlock] | None:
        """The block of one of the host's affinities (None: it is not really ours)."""
        for attempt in range(DATASTORE_RETRIES):
            if attempt:
                try:
                    aff_kv = self.backend.get(keys.host_affinity_key(host, str(cidr)))
                except KeyNotFound:
                    return None
            try:
                return self._block_from_affinity(host, cidr, aff_kv)
            except (RevisionConflict, KeyNotFound):
                continue
            except (_StaleAffinity, _BlockClaimConflict):
                return None
        raise TooManyConflicts(f"could not load block {cidr} of node {host}: too many conflicts")

    def _block_from_affinity(
        self,
        host: str,
        cidr: Network,
        aff_kv: KV,
    ) -> tuple[KV, AllocationBlock]:
        """The block an affinity points at: created if missing, the affinity confirmed if it
        is not. Raises RevisionConflict (retry), _StaleAffinity, _BlockClaimConflict."""
        aff = BlockAffinity.from_json(aff_kv.value)
        found = self._read_block(cidr)
        if found is None:
            aff.state = STATE_PENDING
            aff_kv = self.backend.update(aff_kv.key, aff.to_json(), aff_kv.mod_revision)
            return self._claim_affine_block(host, cidr, aff_kv)
        bkv, block = found
        if not block.affine_to(host):
            log.warning("affinity of node %s for block %s is stale (block affinity %s): "
                        "deleting it", host, cidr, block.affinity)
            try:
                self.backend.delete(aff_kv.key, aff_kv.mod_revision)
            except (KeyNotFound, RevisionConflict):
                pass
            raise _StaleAffinity
        if aff.state != STATE_CONFIRMED:
            # Mark pending, bump the block's revision (invalidating anyone mid-release), confirm.
            aff.state = STATE_PENDING
            aff_kv = self.backend.update(aff_kv.key, aff.to_json(), aff_kv.mod_revision)
            bkv = self._write_block(bkv, block)
            aff.state = STATE_CONFIRMED
            self.backend.update(aff_kv.key, aff.to_json(), aff_kv.mod_revision)
        return bkv, block

    def _pending_affinity(self, host: str, cidr: Network) -> KV:
        """Create this node's affinity for `cidr` as pending (or return the existing one,
        marked pending unless already confirmed)."""
        key = keys.host_affinity_key(host, str(cidr))
        try:
            return self.backend.create(key, BlockAffinity(STATE_PENDING).to_json())
        except KeyExists as exc:
            kv = exc.current or self.backend.get(key)
        aff = BlockAffinity.from_json(kv.value)
        if aff.state == STATE_CONFIRMED:
            return kv
        aff.state = STATE_PENDING
        return self.backend.update(key, aff.to_json(), kv.mod_revision)

    def _claim_affine_block(
        self, host: str, cidr: Network, aff_kv: KV
    ) -> tuple[KV, AllocationBlock]:
        block = AllocationBlock.new(cidr, f"host:{host}", claim_time=_now_rfc3339())
        key = keys.block_key(str(cidr))
        try:
            bkv = self.backend.create(key, block.to_json())
        except KeyExists as exc:
            current = exc.current or self.backend.get(key)
            existing = AllocationBlock.from_json(current.value)
            if existing.affine_to(host):
                self._confirm_affinity(aff_kv)
                return current, existing
            log.debug("block %s was claimed by %s first", cidr, existing.affinity)
            try:
                self.backend.delete(aff_kv.key, aff_kv.mod_revision)
            except (KeyNotFound, RevisionConflict):
                pass
            raise _BlockClaimConflict from None
        log.debug("node %s claimed block %s", host, cidr)
        self._confirm_affinity(aff_kv)
        return bkv, block

    def _confirm_affinity(self, aff_kv: KV) -> None:
        try:
            self.backend.update(
                aff_kv.key, BlockAffinity(STATE_CONFIRMED).to_json(), aff_kv.mod_revision
            )
        except (RevisionConflict, KeyNotFound):
            try:
                current = self.backend.get(aff_kv.key)
            except KeyNotFound:
                raise RevisionConflict(aff_kv.key, aff_kv.mod_revision, None) from None
            if BlockAffinity.from_json(current.value).state != STATE_CONFIRMED:
                raise

    def _find_usable_block(self, state: _ClaimState) -> Network:
        """A block CIDR to claim: one that does not exist yet, or (a race) one of ours with
        room; failing that, an empty block of another node claimed long enough ago."""
        kvs, _ = self.backend.list(keys.block_prefix(state.version))
        existing: dict[Network, AllocationBlock] = {}
        for kv in kvs:
            try:
                b = AllocationBlock.from_json(kv.value)
            except (ValueError, KeyError):
                continue
            existing[b.cidr] = b
        empties: list[AllocationBlock] = []
        for pool in state.pools:
            for subnet in _walk_new_blocks(pool, state.host, existing):
                if state.reserved.matches_whole_cidr(subnet):
                    continue
                block = existing.get(subnet)
                if block is None:
                    return subnet
                free = block.num_free(state.reserved)
                if block.affine_to(state.host) and free:
                    return subnet
                if block.is_empty() and free:
                    empties.append(block)
        for block in empties:
            age = _age_seconds(block.affinity_claim_time)
            if age < self.empty_block_reclaim_age:
                continue
            owner = block.host
            try:
                if owner is not None:
                    self._release_block_affinity(
                        owner, block.cidr, require_empty=True,
                        required_sequence=block.sequence_number,
                    )
                else:
                    self._delete_empty_block(block.cidr, block.sequence_number)
            except (IPAMError, _BlockClaimConflict, _BlockNotEmpty, KeyNotFound,
                    RevisionConflict) as exc:
                log.debug("could not reclaim empty block %s: %s", block.cidr, exc)
                continue
            log.info("node %s reclaimed empty block %s from %s", state.host, block.cidr,
                     owner or "no node")
            return block.cidr
        raise _NoFreeBlocks

    def _delete_empty_block(self, cidr: Network, sequence: int) -> None:
        found = self._read_block(cidr)
        if found is None:
            return
        kv, block = found
        if block.sequence_number != sequence or not block.is_empty():
            raise IPAMError(f"block {cidr} changed since it was read")
        self.backend.delete(kv.key, kv.mod_revision)

    def _assign_from_block(
        self,
        bkv: KV,
        block: AllocationBlock,
        num: int,
        handle: _HandleRef | None,
        attrs: dict[str, str] | None,
        host: str,
        *,
        strict: bool,
        reserved: AddressFilter,
        messages: list[str],
        remember: int | None = None,
    ) -> list[tuple[IPAddress, Network, AllocationBlock]]:
        """Take up to `num` addresses from the block with compare-and-swap retries.

        The block and the handle's count are written in one transaction, conditioned on both
        (`_commit_block`); on conflict it returns their current values, from which the
        allocation is recomputed.

        With `remember` (the IP version), the block as written becomes the host's hint for
        the next request, which then need not read it (the next transaction still checks it
        is current), and the write goes through the host's queue: this process's concurrent
        requests for the host do not race each other. Whoever holds the queue's lock commits
        every request waiting for the same block in one transaction (group commit: the block
        once, each request's handle); the others find their addresses there when they get
        the lock.
        """
        me = _Pending(bkv, block.cidr, num, handle, attrs, strict, reserved, messages)
        if remember is None:
            self._commit_batch(host, None, [me], (bkv, block))
            return me.result
        queue = self._host_queue(host, remember)
        with self._lock:
            queue.pending.append(me)
        with queue.commit:
            if not me.done:
                with self._lock:
                    batch = queue.take_batch(me)
                # Start from the newest copy of the block: the batch's, or our last write.
                newest = max((p.bkv for p in batch), key=lambda kv: kv.mod_revision)
                latest = self._latest_written(host, remember, block.cidr, newest)
                current = (
                    (bkv, block) if latest is bkv
                    else (latest, AllocationBlock.from_json(latest.value))
                )
                try:
                    self._commit_batch(host, remember, batch, current)
                except BaseException as exc:
                    for p in batch:
                        p.done, p.error = True, exc
                    raise
        if me.error is not None:
            raise me.error
        return me.result

    def _commit_batch(
        self,
        host: str,
        remember: int | None,
        batch: list[_Pending],
        current: tuple[KV, AllocationBlock],
    ) -> None:
        """Allocate each request of the batch from one block, in order, and write the block
        and their handles in one transaction; retry from the returned values on conflict.
        Every request is `done` on return, with its addresses (maybe none) in `result`."""
        bkv, block = current
        cidr = str(block.cidr)
        for _ in range(DATASTORE_RETRIES):
            outcome: list[tuple[_Pending, list[IPAddress], str | None]] = []
            for p in batch:
                try:
                    ips = block.auto_assign(
                        p.num, p.handle.id if p.handle else None, p.attrs, host=host,
                        affinity_check=p.strict, reserved=p.reserved,
                    )
                except AffinityMismatch as exc:
                    outcome.append((p, [], str(exc)))
                    continue
                outcome.append((p, ips, None))
            handles = [(p.handle, len(ips)) for p, ips, _ in outcome if ips and p.handle]
            if not any(ips for _, ips, _ in outcome):
                written = _Written(True, bkv)  # nothing to write
            else:
                written = self._commit_block(bkv, block, handles, cidr)
                if not written.ok and written.block is not None:
                    bkv, block = written.block, AllocationBlock.from_json(written.block.value)
                    continue
                if written.ok and remember is not None:
                    self._remember(host, remember, block.cidr, written.block)
            for p, ips, message in outcome:
                if message is not None:
                    p.messages.append(message)
                if written.ok:  # else the block is gone: nothing from it
                    p.result = [(ip, block.cidr, block) for ip in ips]
                p.done = True
            return
        raise TooManyConflicts(f"could not write block {cidr}: too many concurrent IPAM requests")

    def _borrow(
        self,
        pools: list[Pool],
        num: int,
        handle: _HandleRef | None,
        attrs: dict[str, str] | None,
        host: str,
        reserved: AddressFilter,
        messages: list[str],
        taken: list[ReleaseOptions],
    ) -> list[Any]:
        """Free addresses from any existing block of the pools (strict affinity off)."""
        version = pools[0].version
        kvs, _ = self.backend.list(keys.block_prefix(version))
        blocks: dict[Network, tuple[KV, AllocationBlock]] = {}
        for kv in kvs:
            try:
                b = AllocationBlock.from_json(kv.value)
            except (ValueError, KeyError):
                continue
            blocks[b.cidr] = (kv, b)
        got: list[Any] = []
        exhausted: list[str] = []
        for pool in pools:
            for cidr in _walk_existing_blocks(pool, host, blocks):
                if len(got) >= num:
                    return got
                bkv, block = blocks[cidr]
                if reserved.matches_whole_cidr(cidr) or not block.num_free(reserved):
                    continue
                for ip, _c, blk in self._assign_from_block(
                    bkv, block, num - len(got), handle, attrs, host,
                    strict=False, reserved=reserved, messages=messages,
                ):
                    taken.append(ReleaseOptions(str(ip), handle.id if handle else None))
                    got.append(_interface(ip, blk))
            if len(got) < num:
                exhausted.append(str(pool.cidr))
        if exhausted:
            messages.append(f"no IPs available in pools: {', '.join(exhausted)}")
        return got

    # =========================================================================================
    # Specific addresses

    def assign_ip(
        self,
        ip: str,
        handle_id: str | None,
        attrs: dict[str, str] | None,
        hostname: str = "",
    ) -> None:
        """Assign one given address (the CNI `IP=` argument). The address must be in an
        enabled pool; its block is claimed for `hostname` if nobody has it. Reservations do not
        apply to a specific request, as in Calico. Raises AddressInUse, NotInPool."""
        host = hostname or socket.gethostname()
        addr = _parse_ip(ip)
        handle = _handle(handle_id)
        pools = [p for p in self._pools() if not p.disabled]
        pool = pool_for_ip(pools, addr)
        if pool is None:
            cidrs = ", ".join(f"{p.name} {p.cidr}" for p in pools) or "none"
            raise NotInPool(
                f"IP {addr} is not in any enabled IP pool (enabled pools: {cidrs}): request "
                "an address inside one, or add a pool that covers it"
            )
        config = self.get_config()
        cidr = pool.block_for(addr)
        ref = _HandleRef(handle) if handle else None
        found: tuple[KV, AllocationBlock] | None = None
        for _ in range(DATASTORE_RETRIES):
            if found is None:
                found = self._read_block(cidr)
            if found is None:
                try:
                    aff_kv = self._pending_affinity(host, cidr)
                    found = self._claim_affine_block(host, cidr, aff_kv)
                except (RevisionConflict, _BlockClaimConflict):
                    continue
            bkv, block = found
            try:
                block.assign(
                    addr, handle, dict(attrs) if attrs else None,
                    host=host, affinity_check=config.strict_affinity,
                )
            except AlreadyAssigned as exc:
                raise AddressInUse(str(addr), exc.handle) from None
            except AffinityMismatch as exc:
                raise IPAMError(
                    f"cannot assign {addr} to node {host}: {exc} (borrowing is not allowed)"
                ) from None
            written = self._commit_block(bkv, block, [(ref, 1)] if ref else [], str(cidr))
            if written.ok:
                return
            # Conflict: go again from the block as it is now (None: gone, claim it again).
            found = written.current_block()
        raise TooManyConflicts(f"could not assign {addr}: too many concurrent IPAM requests")

    # =========================================================================================
    # Release

    def release_ips(self, ips: Iterable[str | ReleaseOptions]) -> list[str]:
        """Release addresses; return those that were not allocated. With ReleaseOptions
        carrying a handle or sequence number, a mismatch refuses that block's release."""
        opts: list[ReleaseOptions] = []
        seen: set[str] = set()
        for item in ips:
            opt = item if isinstance(item, ReleaseOptions) else ReleaseOptions(str(item))
            addr = _parse_ip(opt.address)
            if str(addr) in seen:
                continue
            seen.add(str(addr))
            handle = sanitize_handle(opt.handle) if opt.handle else None
            opts.append(ReleaseOptions(str(addr), handle, opt.sequence_number))
        if not opts:
            return []
        pools = self._pools()
        by_block: dict[Network, list[ReleaseOptions]] = {}
        unallocated: list[str] = []
        homeless: list[ReleaseOptions] = []
        for opt in opts:
            addr = ipaddress.ip_address(opt.address)
            pool = pool_for_ip(pools, addr)
            if pool is None:
                homeless.append(opt)
            else:
                by_block.setdefault(pool.block_for(addr), []).append(opt)
        for cidr, group in by_block.items():
            result = self._release_from_block(cidr, group)
            if result is None:
                homeless.extend(group)  # no block there: maybe the pool was recreated
            else:
                unallocated.extend(str(ip) for ip in result)
        if homeless:
            # Addresses outside every pool (or whose block is not where the pool says): find
            # their block by scanning, as libcalico-go does.
            all_blocks = self._all_block_cidrs()
            rescan: dict[Network, list[ReleaseOptions]] = {}
            for opt in homeless:
                addr = ipaddress.ip_address(opt.address)
                cidr = next((b for b in all_blocks if addr in b), None)
                if cidr is None:
                    unallocated.append(opt.address)
                else:
                    rescan.setdefault(cidr, []).append(opt)
            for cidr, group in rescan.items():
                result = self._release_from_block(cidr, group)
                if result is None:
                    unallocated.extend(o.address for o in group)
                else:
                    unallocated.extend(str(ip) for ip in result)
        order = {o.address: i for i, o in enumerate(opts)}
        return sorted(unallocated, key=lambda a: order.get(a, len(order)))

    def _all_block_cidrs(self) -> list[Network]:
        kvs, _ = self.backend.list(keys.block_prefix())
        out: list[Network] = []
        for kv in kvs:
            try:
                out.append(ipaddress.ip_network(keys.parse_block_key(kv.key).cidr))
            except ValueError:
                continue
        return out

    def _release_from_block(
        self, cidr: Network, opts: list[ReleaseOptions]
    ) -> list[IPAddress] | None:
        """Release addresses of one block; return those not allocated (None: no block).

        The block (deleted when left empty without affinity) and the handles' counts are
        written in one transaction; the handles are read first, once (a conflict returns
        the current values of the block and of every handle)."""
        found = self._read_block(cidr)
        refs: dict[str, _HandleRef] = {}
        for _ in range(DATASTORE_RETRIES):
            if found is None:
                return None
            bkv, block = found
            try:
                unallocated, counts = block.release(opts)
            except ReleaseConflict as exc:
                raise IPAMError(str(exc)) from None
            if len(unallocated) == len(opts):
                return unallocated
            unread = [h for h in counts if h not in refs]
            for h, kv in zip(unread, self._gather(*(
                (lambda h=h: self._get_or_none(keys.handle_key(h))) for h in unread
            )), strict=True):
                refs[h] = _HandleRef(h, kv)
            written = self._commit_block(
                bkv, block, [(refs[h], -n) for h, n in counts.items()], str(cidr),
                delete=block.is_empty() and block.affinity is None,
            )
            if not written.ok:
                found = written.current_block()
                continue
            if block.is_empty() and block.host:
                self._ensure_consistent_affinity(block)
            return unallocated
        raise TooManyConflicts(f"could not release from block {cidr}: too many conflicts")

    def release_by_handle(self, handle_id: str) -> None:
        """Release every address held by the handle and delete it. Idempotent."""
        handle = _handle(handle_id)
        if handle is None:
            return
        try:
            kv = self.backend.get(keys.handle_key(handle))
        except KeyNotFound:
            return
        ref = _HandleRef(handle, kv)
        for cidr in list(IPAMHandle.from_json(handle, kv.value).block):
            self._release_handle_in_block(ref, ipaddress.ip_network(cidr))

    def _release_handle_in_block(self, ref: _HandleRef, cidr: Network) -> None:
        """Free the handle's addresses in one block and drop the block from the handle, in one
        transaction (`ref.kv`: the handle as last read or written, kept up to date)."""
        found = self._read_block(cidr)
        for _ in range(DATASTORE_RETRIES):
            if found is None:
                break
            bkv, block = found
            if not block.release_by_handle(ref.id):
                break
            written = self._commit_block(
                bkv, block, [(ref, None)], str(cidr),
                delete=block.is_empty() and block.affinity is None,
            )
            if not written.ok:
                found = written.current_block()
                continue
            if block.is_empty() and block.host:
                self._ensure_consistent_affinity(block)
            return
        else:
            raise TooManyConflicts(f"could not release handle {ref.id} in block {cidr}")
        # No address of this handle is left in the block: drop the block from the handle.
        self._drop_from_handle(ref, str(cidr))

    def _ensure_consistent_affinity(self, block: AllocationBlock) -> None:
        """An emptied block whose pool no longer selects its node loses its affinity."""
        host = block.host
        if host is None:
            return
        try:
            pool = pool_for_ip([p for p in self._pools() if not p.disabled],
                               block.cidr.network_address)
            if pool is None or not pool.needs_node_labels:
                return
            labels = self._node_labels(host)
            if labels is None or pool.selects_node(labels):
                return
            self._release_block_affinity(host, block.cidr, require_empty=True)
        except (_BlockClaimConflict, _BlockNotEmpty, KeyNotFound, RevisionConflict,
                IPAMError) as exc:
            log.debug("affinity of %s for %s kept: %s", host, block.cidr, exc)

    # =========================================================================================
    # Queries

    def ips_by_handle(self, handle_id: str) -> list[str]:
        handle = _handle(handle_id)
        if handle is None:
            return []
        try:
            kv = self.backend.get(keys.handle_key(handle))
        except KeyNotFound:
            return []
        out: list[str] = []
        for cidr in IPAMHandle.from_json(handle, kv.value).block:
            found = self._read_block(cidr)
            if found is not None:
                out.extend(str(ip) for ip in found[1].ips_by_handle(handle))
        return out

    def _block_of(self, addr: IPAddress) -> tuple[KV, AllocationBlock] | None:
        pool = pool_for_ip(self._pools(), addr)
        if pool is not None:
            found = self._read_block(pool.block_for(addr))
            if found is not None:
                return found
        for cidr in self._all_block_cidrs():
            if addr in cidr:
                return self._read_block(cidr)
        return None

    def get_assignment_attributes(self, ip: str) -> tuple[dict[str, str], str | None]:
        """(attributes, handle) of an assigned address; AddressNotAssigned otherwise."""
        addr = _parse_ip(ip)
        found = self._block_of(addr)
        attr = found[1].attributes_for(addr) if found else None
        if attr is None:
            raise AddressNotAssigned(str(addr))
        return dict(attr.secondary or {}), attr.handle_id

    def get_utilization(self) -> list[PoolUtilization]:
        """Per pool (all pools, by name), its blocks' capacity and free addresses; blocks of
        no pool come last, under a PoolUtilization with name None."""
        pools = sorted(self._pools(), key=lambda p: p.name)
        usage = [PoolUtilization(p.name, p.cidr) for p in pools]
        orphans = PoolUtilization(None, None)
        kvs, _ = self.backend.list(keys.block_prefix())
        for kv in kvs:
            try:
                b = AllocationBlock.from_json(kv.value)
            except (ValueError, KeyError):
                continue
            entry = BlockUtilization(b.cidr, b.num_addresses, len(b.unallocated), b.affinity)
            for u in usage:
                if u.cidr is not None and u.cidr.version == b.version and u.cidr.overlaps(
                    b.cidr  # type: ignore[arg-type]
                ):
                    u.blocks.append(entry)
                    break
            else:
                orphans.blocks.append(entry)
        if orphans.blocks:
            usage.append(orphans)
        for u in usage:
            u.blocks.sort(key=lambda b: (b.cidr.version, int(b.cidr.network_address)))
        return usage

    # =========================================================================================
    # Affinities

    def ensure_block(
        self, hostname: str = "", version: int = 4, pools: Sequence[str] = ()
    ) -> str:
        """Make sure the node has a block (claiming one if needed); return its CIDR."""
        host = hostname or socket.gethostname()
        ctx = self._context(host, version, affinities=True)
        chosen, _ = determine_pools(
            ctx.pools, version=version, requested=list(pools), node=host,
            node_labels=ctx.node_labels, namespace_labels=None, use="Workload",
        )
        affine = [
            (ipaddress.ip_network(keys.parse_host_affinity_key(kv.key).cidr), kv)
            for kv in ctx.affinities or ()
        ]
        affine = [(c, kv) for c, kv in affine if pool_for_ip(chosen, c.network_address)]
        state = _ClaimState(
            host, version, chosen, ctx.reserved, ctx.config, 1 << 30, lambda: affine
        )
        state.load()
        try:
            (_, block), _ = self._find_or_claim_block(state, min_free=0)
        except _NoFreeBlocks:
            raise PoolsExhausted(f"no free block left for node {host} in the pools") from None
        return str(block.cidr)

    def claim_affinity(self, cidr: str, hostname: str = "") -> tuple[list[str], list[str]]:
        """Claim every block inside `cidr` for the node; return (claimed, owned by others)."""
        host = hostname or socket.gethostname()
        net = ipaddress.ip_network(cidr, strict=False)
        pool = pool_for_ip([p for p in self._pools() if not p.disabled], net.network_address)
        if pool is None:
            raise NotInPool(f"the requested CIDR ({net}) is not within any enabled IP pool")
        claimed: list[str] = []
        failed: list[str] = []
        for block_cidr in block_generator(pool, net):
            for _ in range(DATASTORE_RETRIES):
                try:
                    aff_kv = self._pending_affinity(host, block_cidr)
                    self._claim_affine_block(host, block_cidr, aff_kv)
                except RevisionConflict:
                    continue
                except _BlockClaimConflict:
                    failed.append(str(block_cidr))
                    break
                claimed.append(str(block_cidr))
                break
        return claimed, failed

    def release_affinity(self, cidr: str, hostname: str = "", must_be_empty: bool = False) -> None:
        """Release the node's affinity for every block inside `cidr` (others' are left)."""
        host = hostname or socket.gethostname()
        net = ipaddress.ip_network(cidr, strict=False)
        pool = pool_for_ip(self._pools(), net.network_address)
        if pool is None:
            raise NotInPool(f"the requested CIDR ({net}) is not within any IP pool")
        for block_cidr in block_generator(pool, net):
            self._release_affinity_retrying(host, block_cidr, must_be_empty)

    def release_host_affinities(self, hostname: str = "", must_be_empty: bool = False) -> None:
        """Release every block affinity of the node (e.g. when the node is removed)."""
        host = hostname or socket.gethostname()
        kvs, _ = self.backend.list(keys.host_affinity_prefix(host))
        for kv in kvs:
            try:
                cidr = ipaddress.ip_network(keys.parse_host_affinity_key(kv.key).cidr)
            except ValueError:
                continue
            self._release_affinity_retrying(host, cidr, must_be_empty)

    def release_pool_affinities(self, pool: str) -> None:
        """Release every node's affinity for the blocks of a pool (by name or CIDR)."""
        found = next(
            (p for p in self._pools() if p.name == pool or str(p.cidr) == pool.strip()), None
        )
        if found is None:
            try:
                net = ipaddress.ip_network(pool, strict=False)
            except ValueError:
                raise NoMatchingPool(f"no IP pool named or with CIDR {pool}") from None
        else:
            net = found.cidr
        kvs, _ = self.backend.list(keys.host_affinity_prefix())
        for kv in kvs:
            try:
                key = keys.parse_host_affinity_key(kv.key)
            except ValueError:
                continue
            cidr = ipaddress.ip_network(key.cidr)
            if cidr.version == net.version and cidr.subnet_of(net):  # type: ignore[arg-type]
                self._release_affinity_retrying(key.node, cidr, False)

    def remove_ipam_host(self, hostname: str) -> None:
        """Release the node's affinities and remove what is left of its IPAM data."""
        self.release_host_affinities(hostname)
        self.backend.delete_prefix(keys.host_affinity_prefix(hostname))

    def _release_affinity_retrying(self, host: str, cidr: Network, must_be_empty: bool) -> None:
        for _ in range(DATASTORE_RETRIES):
            try:
                self._release_block_affinity(host, cidr, require_empty=must_be_empty)
            except (_BlockClaimConflict, KeyNotFound):
                pass
            except _BlockNotEmpty:
                raise IPAMError(
                    f"block {cidr} of node {host} still has addresses in use: release them "
                    "first, or release the affinity without requiring it to be empty"
                ) from None
            except RevisionConflict:
                continue
            return
        raise TooManyConflicts(f"could not release the affinity of {host} for {cidr}")

    def _release_block_affinity(
        self,
        host: str,
        cidr: Network,
        *,
        require_empty: bool,
        required_sequence: int | None = None,
    ) -> None:
        """libcalico-go's releaseBlockAffinity: mark the affinity pendingDeletion, delete the
        block if empty (else drop its affinity), then delete the affinity."""
        aff_key = keys.host_affinity_key(host, str(cidr))
        aff_kv = self.backend.get(aff_key)
        found = self._read_block(cidr)
        if found is None:
            # No block: the affinity is all there is.
            self.backend.delete(aff_key, aff_kv.mod_revision)
            return
        bkv, block = found
        if required_sequence is not None and block.sequence_number != required_sequence:
            raise IPAMError(f"block {cidr} was updated since it was read")
        if block.affinity is not None and not block.affine_to(host):
            try:
                self.backend.delete(aff_key, aff_kv.mod_revision)
            except (KeyNotFound, RevisionConflict):
                pass
            raise _BlockClaimConflict
        if require_empty and not block.is_empty():
            raise _BlockNotEmpty
        aff = BlockAffinity.from_json(aff_kv.value)
        aff.state = STATE_PENDING_DELETION
        aff_kv = self.backend.update(aff_key, aff.to_json(), aff_kv.mod_revision)
        if block.is_empty():
            try:
                self.backend.delete(bkv.key, bkv.mod_revision)
            except KeyNotFound:
                pass
        else:
            block.affinity = None
            block.affinity_claim_time = None
            self._write_block(bkv, block)
        try:
            self.backend.delete(aff_key, aff_kv.mod_revision)
        except KeyNotFound:
            pass

    # =========================================================================================
    # Tunnel addresses

    def assign_tunnel_address(
        self,
        hostname: str,
        kind: str = "vxlan",
        *,
        pools: Sequence[str] | None = None,
        update_node: bool = True,
    ) -> str:
        """The node's tunnel address of `kind` (vxlan, vxlan-v6, ipip, wireguard, wireguard-v6).

        Idempotent: an address the handle (`vxlan-tunnel-addr-<node>`...) already holds in a
        suitable pool is returned as is. Otherwise one is auto-assigned (intended use Tunnel)
        from the enabled pools selecting the node with that encapsulation enabled (any pool for
        WireGuard), or from `pools`. With `update_node`, the Node's tunnel address field is set
        too (when the Node exists), as calico/node does.
        """
        if kind not in TUNNEL_KINDS:
            raise IPAMError(f"unknown tunnel kind {kind!r}: use one of {', '.join(TUNNEL_KINDS)}")
        prefix, attr_type, version = TUNNEL_KINDS[kind]
        handle = f"{prefix}{hostname}"
        all_pools = self._pools()
        if pools:
            candidates = [p for p in all_pools if p.name in pools or str(p.cidr) in pools]
        else:
            labels = self._node_labels(hostname)
            candidates = [
                p for p in all_pools
                if p.version == version and not p.disabled and p.allows("Tunnel")
                and _encap_enabled(p, kind)
                and (not p.needs_node_labels or (labels is not None and p.selects_node(labels)))
            ]
        if not candidates:
            mode = {"vxlan": "vxlanMode", "vxlan-v6": "vxlanMode", "ipip": "ipipMode"}.get(kind)
            need = f" with {mode} Always or CrossSubnet" if mode else ""
            raise NoMatchingPool(
                f"no enabled IPv{version} pool{need} selects node {hostname} and allows use "
                "Tunnel: enable the encapsulation on a pool, or name the pools explicitly"
            )
        held = self.ips_by_handle(handle)
        keep = [ip for ip in held if pool_for_ip(candidates, ipaddress.ip_address(ip))]
        if keep and len(held) == 1:
            address = keep[0]
        else:
            if held:
                self.release_by_handle(handle)
            result = self.auto_assign(AutoAssignArgs(
                num4=1 if version == 4 else 0,
                num6=1 if version == 6 else 0,
                handle_id=handle,
                attrs={"node": hostname, "type": attr_type},
                hostname=hostname,
                ipv4_pools=[str(p.cidr) for p in candidates] if version == 4 else (),
                ipv6_pools=[str(p.cidr) for p in candidates] if version == 6 else (),
                intended_use="Tunnel",
            ))
            address = result.addresses[0]
        if update_node:
            self._set_node_tunnel_address(hostname, kind, address)
        return address

    def _set_node_tunnel_address(self, hostname: str, kind: str, address: str) -> None:
        from tortie.datastore.client import ResourceConflict, ResourceNotFound

        for _ in range(10):
            try:
                node = self.resources.get("Node", hostname)
            except ResourceNotFound:
                return
            spec = node.spec  # type: ignore[attr-defined]
            if _node_tunnel_address(spec, kind) == address:
                return
            _set_tunnel_field(spec, kind, address)
            try:
                self.resources.update(node)
                return
            except ResourceConflict:
                continue
            except ResourceNotFound:
                return
        raise TooManyConflicts(f"could not record the tunnel address on Node {hostname}")

    # =========================================================================================
    # Writes

    def _write_block(self, kv: KV, block: AllocationBlock) -> KV:
        """Compare-and-swap a block; every write bumps its sequence number, as Calico."""
        block.sequence_number += 1
        return self.backend.update(kv.key, block.to_json(), kv.mod_revision)

    def _get_or_none(self, key: str) -> KV | None:
        try:
            return self.backend.get(key)
        except KeyNotFound:
            return None

    def _commit_block(
        self,
        bkv: KV,
        block: AllocationBlock,
        handles: Sequence[tuple[_HandleRef, int | None]],
        cidr: str,
        *,
        delete: bool = False,
    ) -> _Written:
        """Write the block (or delete it) and adjust each handle's count for it, in one
        transaction conditioned on the block's revision and each handle's (absent when
        `ref.kv` is None): etcd commits it with one disk sync, and a crash cannot leave the
        block and its handles disagreeing.

        A delta adds to the handle's count (creating the handle), a negative one takes off,
        None drops the block from it; a handle left empty is deleted. Every block write bumps
        its sequence number, as Calico. On success the refs hold the handles as written; on
        conflict they hold the handles' current values and the result the block's, ready for
        a retry without another read.
        """
        compares: list[Compare] = [Compare(bkv.key, bkv.mod_revision)]
        ops: list[Op] = []
        value = b""
        if delete:
            ops.append(Delete(bkv.key))
        else:
            block.sequence_number += 1
            value = block.to_json()
            ops.append(Put(bkv.key, value))
        after: list[tuple[_HandleRef, bytes | None]] = []
        for ref, delta in handles:
            compares.append(Compare(ref.key, ref.kv.mod_revision if ref.kv else 0))
            h = IPAMHandle.from_json(ref.id, ref.kv.value) if ref.kv else IPAMHandle(ref.id)
            if delta is None:
                h.block.pop(cidr, None)
            elif delta > 0:
                h.increment(cidr, delta)
            else:
                h.decrement(cidr, -delta)
            if not h.empty():
                data = h.to_json()
                if ref.kv is None or data != ref.kv.value:
                    ops.append(Put(ref.key, data))
                    after.append((ref, data))
            elif ref.kv is not None:
                ops.append(Delete(ref.key))
                after.append((ref, None))
        res = self.backend.txn(compares, ops)
        if not res.succeeded:
            for ref, _ in handles:
                ref.kv = res.current.get(ref.key)
            return _Written(False, res.current.get(bkv.key))
        for ref, data in after:
            ref.kv = None if data is None else _as_written(ref.key, data, res.revision, ref.kv)
        return _Written(True, None if delete else _as_written(bkv.key, value, res.revision, bkv))

    def _drop_from_handle(self, ref: _HandleRef, cidr: str) -> None:
        """Drop the block from the handle (deleting the handle when nothing is left), with
        compare-and-swap retries from the current values a conflict returns."""
        for _ in range(DATASTORE_RETRIES):
            if ref.kv is None:
                return
            h = IPAMHandle.from_json(ref.id, ref.kv.value)
            if cidr not in h.block:
                return
            del h.block[cidr]
            data = h.to_json()
            op: Op = Delete(ref.key) if h.empty() else Put(ref.key, data)
            res = self.backend.txn([Compare(ref.key, ref.kv.mod_revision)], [op])
            if res.succeeded:
                ref.kv = None if h.empty() else _as_written(ref.key, data, res.revision, ref.kv)
                return
            ref.kv = res.current.get(ref.key)
        raise TooManyConflicts(f"could not update handle {ref.id}: too many conflicts")


# -- helpers ------------------------------------------------------------------------------------


@dataclass
class _HandleRef:
    """A request's handle as it last saw or wrote it (`kv` None: believed absent)."""

    id: str
    kv: KV | None = None

    @property
    def key(self) -> str:
        return keys.handle_key(self.id)


#: At most this many requests share one transaction (etcd allows 128 operations in a txn).
_MAX_BATCH = 64


@dataclass(eq=False)
class _Pending:
    """One request's share of a block write (see `IPAMClient._assign_from_block`)."""

    bkv: KV
    cidr: Network
    num: int
    handle: _HandleRef | None
    attrs: dict[str, str] | None
    strict: bool
    reserved: AddressFilter
    messages: list[str]
    done: bool = False
    result: list[tuple[IPAddress, Network, AllocationBlock]] = field(default_factory=list)
    error: BaseException | None = None


@dataclass(eq=False)
class _HostQueue:
    """This process's block writes for one host and IP version: `commit` is held while one
    transaction is built and sent; `pending` (guarded by the client's lock) lists the
    requests waiting for it."""

    commit: threading.Lock = field(default_factory=threading.Lock)
    pending: list[_Pending] = field(default_factory=list)

    def take_batch(self, first: _Pending) -> list[_Pending]:
        """`first` and the waiting requests for the same block, each handle once (a txn
        writes a key once), in arrival order; they leave the queue."""
        batch = [first]
        handles = {first.handle.id} if first.handle else set()
        for p in self.pending:
            if len(batch) >= _MAX_BATCH:
                break
            if p is first or p.cidr != first.cidr:
                continue
            if p.handle is not None:
                if p.handle.id in handles:
                    continue
                handles.add(p.handle.id)
            batch.append(p)
        taken = {id(p) for p in batch}
        self.pending = [p for p in self.pending if id(p) not in taken]
        return batch


@dataclass(frozen=True)
class _Written:
    """`_commit_block`'s outcome. `ok`: `block` is the block as written (None: deleted).
    Not ok: `block` is the block as it is now (None: it does not exist)."""

    ok: bool
    block: KV | None

    def current_block(self) -> tuple[KV, AllocationBlock] | None:
        if self.block is None:
            return None
        return self.block, AllocationBlock.from_json(self.block.value)


def _as_written(key: str, value: bytes, revision: int, prev: KV | None) -> KV:
    """The KV a successful txn left at `key`, given the value it replaced."""
    if prev is None:
        return KV(key, value, revision, revision, 1)
    return KV(key, value, revision, prev.create_revision, prev.version + 1)


class _ClaimState:
    """One request's search for blocks (libcalico-go's blockAssignState): the host's affine
    blocks still to try (the hinted block first, the affinity list read only when needed),
    and how many blocks the host owns against its limit."""

    def __init__(
        self,
        host: str,
        version: int,
        pools: list[Pool],
        reserved: AddressFilter,
        config: IPAMConfig,
        limit: int,
        loader: Callable[[], list[tuple[Network, KV]]],
    ) -> None:
        self.host = host
        self.version = version
        self.pools = pools
        self.reserved = reserved
        self.config = config
        self.limit = limit
        self.remaining: list[tuple[Network, KV | None]] = []
        self.tried: set[Network] = set()
        self.claimed = 0
        self.loaded = False
        self._owned = 0
        self._loader = loader
        self._hinted: tuple[KV, AllocationBlock] | None = None

    def use_hint(self, hinted: tuple[KV, AllocationBlock]) -> None:
        self._hinted = hinted
        self.remaining.append((hinted[1].cidr, None))

    def take_hint(self) -> tuple[KV, AllocationBlock] | None:
        hinted, self._hinted = self._hinted, None
        return hinted

    def load(self) -> None:
        """Read the host's affinities and queue the blocks not tried yet."""
        if self.loaded:
            return
        affine = self._loader()
        self.loaded = True
        self._owned = len(affine)
        self.remaining.extend((c, kv) for c, kv in affine if c not in self.tried)

    @property
    def blocks_owned(self) -> int:
        return self._owned + self.claimed

    @property
    def allow_new_claim(self) -> bool:
        return self.blocks_owned < self.limit


def _walk_new_blocks(
    pool: Pool, host: str, existing: dict[Network, AllocationBlock]
) -> Iterable[Network]:
    """The pool's blocks in the host's order; for huge pools (IPv6), only the first blocks of
    that order plus the existing ones, since the first missing block ends the walk anyway."""
    if pool.num_blocks <= 1 << 16:
        yield from random_block_generator(pool, host)
        return
    for seen, cidr in enumerate(random_block_generator(pool, host), 1):
        yield cidr
        if cidr not in existing or seen > len(existing) + 1:
            return


def _walk_existing_blocks(
    pool: Pool, host: str, blocks: dict[Network, tuple[KV, AllocationBlock]]
) -> list[Network]:
    """The existing blocks of a pool, in the order the host's block generator visits them."""
    inside = [
        c for c in blocks
        if c.version == pool.version and c.subnet_of(pool.cidr)  # type: ignore[arg-type]
    ]
    if not inside:
        return []
    n = pool.num_blocks
    max_len = 32 if pool.version == 4 else 128
    step = 1 << (max_len - pool.block_size)
    base = int(pool.cidr.network_address)
    start = random.Random(fnv1_32(host.encode())).randrange(n) if n else 0
    return sorted(inside, key=lambda c: ((int(c.network_address) - base) // step - start) % n)


def _encap_enabled(pool: Pool, kind: str) -> bool:
    if kind.startswith("vxlan"):
        return pool.vxlan_mode in ("Always", "CrossSubnet")
    if kind == "ipip":
        return pool.ipip_mode in ("Always", "CrossSubnet")
    return True


def _node_tunnel_address(spec: Any, kind: str) -> str | None:
    if kind == "vxlan":
        return spec.ipv4_vxlan_tunnel_addr
    if kind == "vxlan-v6":
        return spec.ipv6_vxlan_tunnel_addr
    if kind == "ipip":
        return spec.bgp.ipv4_ipip_tunnel_addr if spec.bgp else None
    if kind == "wireguard":
        return spec.wireguard.interface_ipv4_address if spec.wireguard else None
    return spec.wireguard.interface_ipv6_address if spec.wireguard else None


def _set_tunnel_field(spec: Any, kind: str, address: str) -> None:
    from tortie.api.kinds.node import NodeBGPSpec, NodeWireguardSpec

    if kind == "vxlan":
        spec.ipv4_vxlan_tunnel_addr = address
    elif kind == "vxlan-v6":
        spec.ipv6_vxlan_tunnel_addr = address
    elif kind == "ipip":
        if spec.bgp is None:
            spec.bgp = NodeBGPSpec()
        spec.bgp.ipv4_ipip_tunnel_addr = address
    else:
        if spec.wireguard is None:
            spec.wireguard = NodeWireguardSpec()
        if kind == "wireguard":
            spec.wireguard.interface_ipv4_address = address
        else:
            spec.wireguard.interface_ipv6_address = address

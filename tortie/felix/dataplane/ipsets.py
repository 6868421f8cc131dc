"""IP sets: Felix's ``cali4*`` (IPv4) and ``cali6*`` (IPv6) sets.

An :class:`IpsetManager` owns the IP sets of one IP version whose names start ``cali4`` or
``cali6``: main sets ``cali40<set id>`` (``cali40s:<selector hash>``, ``cali40all-ipam-pools``,
...) and the temporary ``cali4t<n>`` sets it uses for atomic rewrites.  Callers record the
desired members of each set; :meth:`IpsetManager.apply_updates` and
:meth:`IpsetManager.apply_deletions` make the kernel match.

Safety
    Sets of other software are never read beyond their names and never written.  A set is
    destroyed only when the caller removed it, or — with ``allow_cleanup=True``, i.e. after the
    calculation graph is in sync — when it is one of ours that nobody wants any more.
    Deletions are a separate phase because iptables rules may still reference a set: the
    driver runs *ipset updates → iptables → ipset deletions*.  A set the kernel refuses to
    destroy (still in use) is kept and retried on a later apply.

Batching
    Each phase is a single ``ipset restore`` (run with ``-exist`` so that re-adding a present
    member or deleting an absent one is not an error).  For each changed set we pick the
    cheaper of two scripts: *delta* — ``del``/``add`` lines for the difference against what
    the kernel holds — or *swap* — build the full contents in ``cali4t0``, ``swap`` it with
    the main set (an atomic exchange, so packets never see a half-written set) and destroy
    the temporary set.  Member updates between applies coalesce.

Graceful restart
    At the first apply (and after :meth:`IpsetManager.invalidate`) the manager reads the
    kernel with one ``ipset save`` and diffs against that, so a restarted Felix rewrites no
    set that is already right.

Verified with ipset 7.17: ``ipset swap`` refuses sets of different types (``hash:net`` vs
``hash:ip``) or families but accepts a different ``maxelem``, so a type change destroys and
recreates the set (which fails while iptables still references it); ``hash:net`` rejects
``0.0.0.0/0`` (we store two /1s, as Calico does) and prints /32 (/128) members as bare
addresses; ``ipset restore`` is not transactional — lines before a failing one stay applied,
and the error names the failing line (``Error in line N``).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from tortie.felix.dataplane.commands import (
    ApplyStats,
    CommandRunner,
    DataplaneError,
    run_command,
)

log = logging.getLogger(__name__)

MAX_IPSET_NAME_LENGTH = 31
DEFAULT_MAX_SIZE = 1048576
"""Calico's default ``MaxIpsetSize``."""

HASH_NET = "hash:net"
HASH_IP = "hash:ip"
HASH_IP_PORT = "hash:ip,port"
SET_TYPES = (HASH_NET, HASH_IP, HASH_IP_PORT)

_SWAP_OVERHEAD = 3  # create + swap + destroy
_ERROR_LINE_RE = re.compile(r"Error in line (\d+)")


def ipset_name(set_id: str, ip_version: int = 4) -> str:
    """The dataplane name of a main set: ``cali40`` / ``cali60`` + *set_id*, truncated to
    ipset's 31-character limit (IDs are secure hashes, so truncation keeps them unique)."""
    return f"cali{ip_version}0{set_id}"[:MAX_IPSET_NAME_LENGTH]


@functools.lru_cache(maxsize=1 << 16)
def _canon_net(member: str, version: int) -> tuple[str, ...]:
    net = ipaddress.ip_network(member.strip(), strict=False)
    if net.version != version:
        raise ValueError(f"{member!r} is not an IPv{version} network")
    if net.prefixlen == 0:
        # hash:net cannot hold /0; two halves cover the same space.
        return tuple(str(n) for n in net.subnets(prefixlen_diff=1))
    if net.prefixlen == net.max_prefixlen:
        return (str(net.network_address),)
    return (str(net),)


@functools.lru_cache(maxsize=1 << 16)
def _canon_ip(member: str, version: int) -> str:
    text = member.strip()
    if "/" in text:
        addr, _, plen = text.partition("/")
        if int(plen) != (32 if version == 4 else 128):
            raise ValueError(f"{member!r} is a network, not an address (use hash:net)")
        text = addr
    ip = ipaddress.ip_address(text)
    if ip.version != version:
        raise ValueError(f"{member!r} is not an IPv{version} address")
    return str(ip)


def _canon_ip_port(member: str, version: int) -> str:
    ip_part, sep, proto_port = member.strip().partition(",")
    proto, sep2, port = proto_port.partition(":")
    if not sep or not sep2:
        raise ValueError(f"{member!r} is not <ip>,<proto>:<port>")
    proto = proto.lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"{member!r}: protocol must be tcp, udp or sctp")
    port_no = int(port)
    if not 0 <= port_no <= 65535:
        raise ValueError(f"{member!r}: port out of range")
    return f"{_canon_ip(ip_part, version)},{proto}:{port_no}"


def canonical_members(set_type: str, members: Iterable[str], ip_version: int = 4) -> set[str]:
    """Members as ``ipset save`` prints them, so that a diff against the kernel is exact.

    Invalid members (wrong family, bad syntax) are dropped with a warning rather than
    failing the whole set.  Per-member results are cached: the same pod IPs recur in many
    selectors' sets.
    """
    out: set[str] = set()
    for m in members:
        try:
            if set_type == HASH_NET:
                out.update(_canon_net(m, ip_version))
            elif set_type == HASH_IP:
                out.add(_canon_ip(m, ip_version))
            elif set_type == HASH_IP_PORT:
                out.add(_canon_ip_port(m, ip_version))
            else:
                out.add(m.strip())
        except ValueError as e:
            log.warning("ignoring invalid %s member %r: %s", set_type, m, e)
    return out


@dataclass
class KernelSet:
    """One set as ``ipset save`` showed it."""

    set_type: str
    family: str
    max_size: int
    members: set[str]


def parse_ipset_save(text: str, prefix: str) -> dict[str, KernelSet]:
    """Parse ``ipset save`` output, keeping only sets whose names start with *prefix*."""
    sets: dict[str, KernelSet] = {}
    for line in text.splitlines():
        if line.startswith("add "):
            _, name, member = line.split(" ", 2)
            if name.startswith(prefix):
                ks = sets.get(name)
                if ks is not None:
                    # Extensions (timeout, comment...) are not used by us; keep the element.
                    ks.members.add(member.split(" ", 1)[0])
        elif line.startswith("create "):
            parts = line.split()
            if len(parts) < 3 or not parts[1].startswith(prefix):
                continue
            opts = dict(zip(parts[3::2], parts[4::2], strict=False))
            sets[parts[1]] = KernelSet(
                set_type=parts[2],
                family=opts.get("family", "inet"),
                max_size=int(opts.get("maxelem", "65536")),
                members=set(),
            )
    return sets


@dataclass
class _DesiredSet:
    set_type: str
    members: set[str]


class IpsetManager:
    """The ``cali4*`` or ``cali6*`` IP sets of one IP version; see the module docstring."""

    def __init__(
        self,
        ip_version: int = 4,
        runner: CommandRunner = run_command,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if ip_version not in (4, 6):
            raise ValueError(f"ip_version must be 4 or 6, not {ip_version!r}")
        self.ip_version = ip_version
        self.family = "inet" if ip_version == 4 else "inet6"
        self.owned_prefix = f"cali{ip_version}"
        self.temp_prefix = f"cali{ip_version}t"
        self.max_size = max_size
        self._runner = runner
        self._desired: dict[str, _DesiredSet] = {}
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._kernel: dict[str, KernelSet] | None = None

    def __repr__(self) -> str:
        return f"IpsetManager(ip_version={self.ip_version})"

    def name_for(self, set_id: str) -> str:
        return ipset_name(set_id, self.ip_version)

    # -- intent ---------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if not name.startswith(self.owned_prefix) or name.startswith(self.temp_prefix):
            raise ValueError(
                f"ipset {name!r} is not ours: names must start {self.owned_prefix!r} "
                f"(and not {self.temp_prefix!r}); use ipset_name()"
            )
        if len(name) > MAX_IPSET_NAME_LENGTH:
            raise ValueError(f"ipset name {name!r} exceeds {MAX_IPSET_NAME_LENGTH} characters")

    def replace_members(self, name: str, set_type: str, members: Iterable[str]) -> None:
        """Set the complete desired contents (and type) of a set, creating it if new."""
        self._check_name(name)
        canon = canonical_members(set_type, members, self.ip_version)
        self._removed.discard(name)
        current = self._desired.get(name)
        if current is not None and current.set_type == set_type and current.members == canon:
            return
        self._desired[name] = _DesiredSet(set_type, canon)
        self._dirty.add(name)

    def _get(self, name: str) -> _DesiredSet:
        try:
            return self._desired[name]
        except KeyError:
            raise KeyError(f"ipset {name!r} is unknown; call replace_members() first") from None

    def add_members(self, name: str, members: Iterable[str]) -> None:
        desired = self._get(name)
        new = canonical_members(desired.set_type, members, self.ip_version) - desired.members
        if new:
            desired.members |= new
            self._dirty.add(name)

    def remove_members(self, name: str, members: Iterable[str]) -> None:
        desired = self._get(name)
        gone = canonical_members(desired.set_type, members, self.ip_version) & desired.members
        if gone:
            desired.members -= gone
            self._dirty.add(name)

    def remove_set(self, name: str) -> None:
        """Stop wanting a set; it is destroyed by the next :meth:`apply_deletions`."""
        self._desired.pop(name, None)
        self._dirty.discard(name)
        self._removed.add(name)

    def members(self, name: str) -> frozenset[str]:
        return frozenset(self._get(name).members)

    @property
    def desired_names(self) -> set[str]:
        return set(self._desired)

    # -- kernel state ---------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget what we believe the kernel holds; the next apply re-reads and repairs."""
        self._kernel = None

    def refresh(self) -> None:
        """Re-read the kernel now; the next apply repairs any drift found."""
        self._load(ApplyStats(component=f"ipsets-v{self.ip_version}"))

    def _load(self, stats: ApplyStats) -> None:
        argv = ["ipset", "save"]
        result = self._runner(argv)
        stats.reads += 1
        if not result.ok:
            raise DataplaneError("ipset save failed", command=argv, stderr=result.stderr)
        self._kernel = parse_ipset_save(result.stdout, self.owned_prefix)
        self._dirty = set(self._desired)

    def kernel_sets(self) -> dict[str, KernelSet]:
        if self._kernel is None:
            self.refresh()
        assert self._kernel is not None
        return self._kernel

    # -- apply ----------------------------------------------------------------------------

    def apply(self, allow_cleanup: bool = False) -> ApplyStats:
        """Both phases back to back; the driver calls them separately around iptables."""
        stats = self.apply_updates()
        deletions = self.apply_deletions(allow_cleanup)
        for f in ("reads", "commands", "lines", "written", "deleted", "deferred", "retries"):
            setattr(stats, f, getattr(stats, f) + getattr(deletions, f))
        stats.seconds += deletions.seconds
        return stats

    def apply_updates(self) -> ApplyStats:
        """Create and update sets (one ``ipset restore``); never destroys a main set unless
        its type changed."""
        start = time.monotonic()
        stats = ApplyStats(component=f"ipsets-v{self.ip_version}")
        try:
            if self._kernel is None:
                self._load(stats)
            lines, written = self._update_script(force=False)
            if lines:
                error = self._restore(lines, stats)
                if error is not None:
                    log.warning(
                        "%s: ipset restore failed (%s); re-reading and rewriting in full",
                        self,
                        error.stderr.strip(),
                    )
                    stats.retries += 1
                    self._load(stats)
                    lines, written = self._update_script(force=True)
                    error = self._restore(lines, stats) if lines else None
                    if error is not None:
                        self._kernel = None
                        raise error
                self._record_updates(written)
                stats.written += len(written)
            self._dirty.clear()
        finally:
            stats.seconds = time.monotonic() - start
        return stats

    def _create_line(self, name: str, set_type: str) -> str:
        return f"create {name} {set_type} family {self.family} maxelem {self.max_size}"

    def _update_script(self, force: bool) -> tuple[list[str], list[str]]:
        kernel = self._kernel
        assert kernel is not None
        lines: list[str] = []
        for name in sorted(n for n in kernel if n.startswith(self.temp_prefix)):
            lines.append(f"destroy {name}")  # a leftover of an interrupted run; never in use
            del kernel[name]
        temp = f"{self.temp_prefix}0"
        written: list[str] = []
        for name in sorted(self._dirty):
            desired = self._desired[name]
            ks = kernel.get(name)
            if ks is None:
                lines.append(self._create_line(name, desired.set_type))
                lines.extend(f"add {name} {m}" for m in sorted(desired.members))
            elif ks.set_type != desired.set_type or ks.family != self.family:
                # The kernel cannot swap sets of different types: replace in place.
                lines.append(f"destroy {name}")
                lines.append(self._create_line(name, desired.set_type))
                lines.extend(f"add {name} {m}" for m in sorted(desired.members))
            else:
                adds = desired.members - ks.members
                dels = ks.members - desired.members
                resize = ks.max_size != self.max_size
                if not (adds or dels or resize or force):
                    continue
                if force or resize or len(adds) + len(dels) > len(desired.members) + _SWAP_OVERHEAD:
                    lines.append(self._create_line(temp, desired.set_type))
                    lines.extend(f"add {temp} {m}" for m in sorted(desired.members))
                    lines.append(f"swap {temp} {name}")
                    lines.append(f"destroy {temp}")
                else:
                    lines.extend(f"del {name} {m}" for m in sorted(dels))
                    lines.extend(f"add {name} {m}" for m in sorted(adds))
            written.append(name)
        return lines, written

    def _record_updates(self, written: list[str]) -> None:
        kernel = self._kernel
        assert kernel is not None
        for name in written:
            desired = self._desired[name]
            kernel[name] = KernelSet(
                desired.set_type, self.family, self.max_size, set(desired.members)
            )

    def _restore(self, lines: list[str], stats: ApplyStats) -> DataplaneError | None:
        argv = ["ipset", "-exist", "restore"]
        result = self._runner(argv, input="\n".join(lines) + "\n")
        stats.commands += 1
        stats.lines += len(lines)
        if result.ok:
            return None
        bad = None
        m = _ERROR_LINE_RE.search(result.stderr)
        if m and 0 < int(m.group(1)) <= len(lines):
            bad = lines[int(m.group(1)) - 1]
        return DataplaneError(
            f"{self}: ipset restore failed (rc={result.returncode})",
            command=argv,
            stderr=result.stderr,
            line=bad,
        )

    def apply_deletions(self, allow_cleanup: bool = False) -> ApplyStats:
        """Destroy removed sets (and, with *allow_cleanup*, stale ones of ours) in one
        ``ipset restore``; a set still in use is kept for a later apply."""
        start = time.monotonic()
        stats = ApplyStats(component=f"ipsets-v{self.ip_version}")
        try:
            if self._kernel is None:
                self._load(stats)
            kernel = self._kernel
            assert kernel is not None
            self._removed = {n for n in self._removed if n in kernel}
            doomed = set(self._removed)
            if allow_cleanup:
                doomed |= {n for n in kernel if n not in self._desired}
            pending = sorted(doomed)
            deferred: list[str] = []
            while pending:
                lines = [f"destroy {n}" for n in pending]
                error = self._restore(lines, stats)
                if error is None:
                    done, pending = pending, []
                else:
                    m = _ERROR_LINE_RE.search(error.stderr)
                    if not m or not 0 < int(m.group(1)) <= len(pending):
                        self._kernel = None
                        raise error
                    failed = int(m.group(1)) - 1
                    done = pending[:failed]
                    log.warning(
                        "%s: cannot destroy ipset %s yet (%s); will retry",
                        self,
                        pending[failed],
                        error.stderr.strip(),
                    )
                    deferred.append(pending[failed])
                    pending = pending[failed + 1 :]
                for n in done:
                    kernel.pop(n, None)
                    self._removed.discard(n)
                stats.deleted += len(done)
            stats.deferred = len(deferred)
        finally:
            stats.seconds = time.monotonic() - start
        return stats

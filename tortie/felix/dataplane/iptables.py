"""iptables tables: Felix's ``cali-`` chains and its hooks into the kernel chains.

A :class:`Table` owns one iptables table (``filter``, ``nat``, ``mangle`` or ``raw``) for one IP
version.  Callers record *intent* — the full contents of each chain they want, and the rules
they want inserted into the kernel's own chains — and :meth:`Table.apply` makes the kernel match.

Safety
    Only chains whose names start with ``cali-`` are owned, plus the rules in other chains that
    carry a ``cali:<hash>`` comment (our insertions, e.g. ``-j cali-INPUT`` at the top of
    ``INPUT``).  Other software's chains and rules are never modified, deleted or reordered;
    insertions are removed by rule number only after the kernel state has been read in the
    same apply.  Nothing stale is deleted unless the caller says it is in sync
    (``apply(allow_cleanup=True)``), so a restarted Felix that has only seen part of the
    datastore does not tear down working rules.

Batching
    Each apply writes the whole table delta with a single ``iptables-restore --noflush``
    transaction, which the kernel applies atomically.  A changed chain is rewritten whole
    (``:cali-x - [0:0]`` flushes it, then its rules are appended) inside that transaction.
    Updates between applies are coalesced: updating a chain ten times costs one rewrite.

Hashes and graceful restart
    Every rule we write carries ``-m comment --comment "cali:<hash>"``, a 16-character hash
    that chains in the chain name and every earlier rule (Calico's scheme), so comparing a
    chain with the kernel is comparing two lists of hashes.  On its first apply (and after
    :meth:`Table.invalidate`/:meth:`Table.refresh`) a table reads the kernel with
    ``iptables-save -t <table>`` and writes only the chains whose hashes differ; a restarted
    Felix with the same desired state runs no ``iptables-restore`` at all.  Drift (a rule
    deleted by hand, a foreign rule appended to a ``cali-`` chain) is repaired the same way.

Dependency tracking
    iptables refuses to delete a chain that is still referenced, and refuses a jump to a chain
    that does not exist yet.  Within one transaction we therefore declare every new, changed
    and doomed chain first, then write rules, then fix the kernel-chain insertions, and only
    then delete chains (each already flushed, so nothing we own still points at it).  A chain
    to be deleted that is still referenced by a desired chain, a kept stale chain or a foreign
    rule is not deleted; it is retried on later applies.  A jump to a ``cali-`` chain that is
    neither desired nor present is rejected before touching the kernel.

Errors
    If ``iptables-restore`` fails (someone changed the table under us), the table re-reads the
    kernel, retries once with a full rewrite of the chains it was touching, and then raises
    :class:`~tortie.felix.dataplane.commands.DataplaneError` with the stderr and the offending
    line.  The next apply starts again from a fresh read.

Verified with iptables 1.8.9 (nf_tables backend): ``iptables-save`` prints ``-s``/``-d``/``-p``/
``-i``/``-o`` before all ``-m`` matches whatever order they were given in and makes implicit
matches explicit (``-p tcp -m tcp --dport 80``), keeps ``-m`` matches (so our comments) in
order, double-quotes a comment only when it holds more than letters, digits, ``_`` and ``-``
(``"cali:<hash>"`` is quoted, ``DHCP`` is not; both forms are parsed), prints ``[0:0]`` chain
counters (rule counters only with ``-c``), and creates an absent table when asked to save it.
Reading back 10,000 rules takes ~0.3 s, most of a restarted Felix's no-op apply.  Deleting a
chain needs it flushed first in the same transaction (``-X`` of a non-empty chain is EBUSY),
and a chain must be declared before a rule can jump to it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tortie.felix.dataplane.commands import (
    ApplyStats,
    CommandRunner,
    DataplaneError,
    run_command,
)

log = logging.getLogger(__name__)

MAX_CHAIN_NAME_LENGTH = 28
"""iptables' limit on chain names (XT_EXTENSION_MAXNAMELEN - 1)."""

HASH_LENGTH = 16
"""Characters of base64url SHA-224 kept per rule: 96 bits, collision-resistant enough."""

CHAIN_PREFIX = "cali-"
HASH_COMMENT_PREFIX = "cali:"
MAX_COMMENT_LENGTH = 256

KERNEL_CHAINS: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}
"""The built-in chains of each table, into which Felix inserts its hooks."""

InsertMode = Literal["insert", "append"]

_SHORTENED_MARK = "_"
_COMMENT_UNSAFE = re.compile(r"[^\w @%+=:,./-]", re.ASCII)
_TARGET_RE = re.compile(r"(?:^|\s)(?:-j|-g|--jump|--goto)\s+(\S+)")
_LINE_NO_RE = re.compile(r"line:? (\d+)")


# ---------------------------------------------------------------------------------------------
# Names, comments and hashes


def chain_name(prefix: str, ident: str, max_length: int = MAX_CHAIN_NAME_LENGTH) -> str:
    """``prefix + ident``, or, when that exceeds *max_length*, ``prefix + "_" + hash``.

    The hash is base64url SHA-256 of *ident*, truncated to fill the name exactly to
    *max_length*, as Calico's ``GetLengthLimitedID`` does.  An ident that would fill the
    name exactly but starts with ``_`` is hashed too, so it cannot collide with a shortened
    name.  Examples: ``chain_name("cali-tw-", "cali1234567890a")`` is unchanged;
    ``chain_name("cali-pi-", "default.a-very-long-policy-name")`` is hashed.
    """
    if not ident:
        ident = _SHORTENED_MARK
    total = len(prefix) + len(ident)
    if total > max_length or (total == max_length and ident.startswith(_SHORTENED_MARK)):
        room = max_length - 1 - len(prefix)
        if room <= 0:
            raise ValueError(f"chain prefix {prefix!r} leaves no room for a hash in {max_length}")
        digest = hashlib.sha256(ident.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        return prefix + _SHORTENED_MARK + encoded[:room]
    return prefix + ident


def escape_comment(comment: str) -> str:
    """Make a user comment safe inside ``--comment "..."``: Calico's lossy rule.

    Anything but word characters, space and ``@%+=:,./-`` becomes ``_`` (iptables-restore
    has no reliable quoting for the rest), then the text is cut to 256 characters.
    """
    return _COMMENT_UNSAFE.sub("_", comment)[:MAX_COMMENT_LENGTH]


def _hash_seed(chain: str) -> bytes:
    return hashlib.sha224(chain.encode()).digest()


def _encode_hash(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode()[:HASH_LENGTH]


@dataclass(frozen=True)
class Rule:
    """One iptables rule, as ``match`` (``-s 10.0.0.0/8 -p tcp --dport 80``) and ``action``
    (``-j ACCEPT``, ``-g cali-x``, ``-j MARK --set-xmark 0x10000/0x10000``), with an optional
    human comment."""

    match: str = ""
    action: str = ""
    comment: str | None = None

    def _user_comment_fragment(self) -> str:
        if not self.comment:
            return ""
        return f'-m comment --comment "{escape_comment(self.comment)}"'

    def hash_input(self, chain: str) -> str:
        """The text hashed for this rule (its rendering with a placeholder for the hash)."""
        parts = ["-A", chain, self.match, "HASH", self._user_comment_fragment(), self.action]
        return " ".join(p for p in parts if p)

    def render(
        self, chain: str, rule_hash: str, op: str = "-A", position: int | None = None
    ) -> str:
        """``-A <chain> <match> -m comment --comment "cali:<hash>" [comment] <action>``.

        *op* ``-I`` with a *position* renders ``-I <chain> <n> ...``.
        """
        parts = [
            op,
            chain,
            str(position) if position is not None else "",
            self.match,
            f'-m comment --comment "{HASH_COMMENT_PREFIX}{rule_hash}"',
            self._user_comment_fragment(),
            self.action,
        ]
        return " ".join(p for p in parts if p)

    @property
    def target(self) -> str | None:
        """The chain or target this rule jumps/goes to (``-j``/``-g``), if any."""
        m = _TARGET_RE.search(self.action)
        return m.group(1) if m else None


def rule_hashes(chain: str, rules: Sequence[Rule]) -> list[str]:
    """Calico-style per-rule hashes: each rule's hash chains in the chain name and the
    previous rule's hash, so identical rules at different positions or in different chains
    get different hashes, and any change invalidates the hashes of every rule after it."""
    digest = _hash_seed(chain)
    out: list[str] = []
    for rule in rules:
        h = hashlib.sha224(digest)
        h.update(rule.hash_input(chain).encode())
        digest = h.digest()
        out.append(_encode_hash(digest))
    return out


@dataclass(frozen=True)
class Chain:
    """A chain's complete desired contents."""

    name: str
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.rules, tuple):
            object.__setattr__(self, "rules", tuple(self.rules))

    def rule_hashes(self) -> list[str]:
        return rule_hashes(self.name, self.rules)

    def render(self) -> list[str]:
        """The ``-A`` lines for this chain (without the ``:name`` declaration)."""
        return [r.render(self.name, h) for r, h in zip(self.rules, self.rule_hashes(), strict=True)]


# ---------------------------------------------------------------------------------------------
# Kernel state


@dataclass
class KernelChain:
    """What ``iptables-save`` showed for one chain: per rule, our hash (``None`` for a rule
    without one) and its jump target (``None`` if it does not jump)."""

    hashes: list[str | None] = field(default_factory=list)
    targets: list[str | None] = field(default_factory=list)

    def our_positions(self) -> list[int]:
        return [i for i, h in enumerate(self.hashes) if h is not None]


def _outside_quotes(text: str, pos: int) -> bool:
    before = text[:pos]
    return (before.count('"') - before.count('\\"')) % 2 == 0


def _rule_hash_and_target(rule_text: str) -> tuple[str | None, str | None]:
    """Our hash (first ``cali:`` comment) and the jump target of one saved rule.

    Plain string searches rather than regexes: a restarted Felix parses every rule of the
    table once, so this is on the graceful-restart path.
    """
    rule_hash = None
    i = rule_text.find('--comment "' + HASH_COMMENT_PREFIX)
    if i >= 0:
        start = i + 11 + len(HASH_COMMENT_PREFIX)
        end = rule_text.find('"', start)
    else:
        i = rule_text.find("--comment " + HASH_COMMENT_PREFIX)  # printed unquoted
        start = i + 10 + len(HASH_COMMENT_PREFIX)
        end = rule_text.find(" ", start)
    if i >= 0:
        rule_hash = rule_text[start:end] if end >= 0 else rule_text[start:]
    # iptables-save prints the target last; a "-j" inside a quoted comment is not one.
    target = None
    text = " " + rule_text
    for flag in (" -j ", " -g "):
        pos = text.rfind(flag)
        while pos >= 0 and '"' in text and not _outside_quotes(text, pos):
            pos = text.rfind(flag, 0, pos)
        if pos >= 0:
            target = text[pos + 4 :].split(None, 1)[0]
            break
    return rule_hash, target


def parse_iptables_save(text: str, table: str) -> dict[str, KernelChain]:
    """Parse ``iptables-save`` output (with or without ``-c`` counters) for one table."""
    chains: dict[str, KernelChain] = {}
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            in_table = line[1:].strip() == table
            continue
        if not in_table:
            continue
        if line == "COMMIT":
            in_table = False
            continue
        if line.startswith(":"):
            name = line[1:].split(None, 1)[0]
            chains.setdefault(name, KernelChain())
            continue
        if line.startswith("["):  # "[pkts:bytes] -A ..." from iptables-save -c
            line = line.split("]", 1)[1].lstrip()
        if not line.startswith("-A "):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            continue
        kc = chains.setdefault(parts[1], KernelChain())
        rule_hash, target = _rule_hash_and_target(parts[2] if len(parts) > 2 else "")
        kc.hashes.append(rule_hash)
        kc.targets.append(target)
    return chains


# ---------------------------------------------------------------------------------------------
# The table


@dataclass
class _Plan:
    writes: list[str]
    deletes: list[str]
    deferred: list[str]
    # kernel chain -> (positions of our rules to delete, rules with hashes to put in)
    insertions: dict[str, tuple[list[int], list[tuple[Rule, str]]]]

    @property
    def empty(self) -> bool:
        return not (self.writes or self.deletes or self.insertions)


class _RestoreFailed(Exception):
    def __init__(self, error: DataplaneError) -> None:
        super().__init__(str(error))
        self.error = error


class Table:
    """One iptables table for one IP version; see the module docstring.

    ``update_chain``/``update_chains``/``remove_chain`` and ``set_rule_insertions`` record
    intent; :meth:`apply` writes it with one ``iptables-restore`` (zero when nothing differs).
    """

    def __init__(
        self,
        name: str,
        ip_version: int = 4,
        insert_mode: InsertMode = "insert",
        runner: CommandRunner = run_command,
        *,
        chain_prefix: str = CHAIN_PREFIX,
    ) -> None:
        if ip_version not in (4, 6):
            raise ValueError(f"ip_version must be 4 or 6, not {ip_version!r}")
        if insert_mode not in ("insert", "append"):
            raise ValueError(f"insert_mode must be 'insert' or 'append', not {insert_mode!r}")
        self.name = name
        self.ip_version = ip_version
        self.insert_mode: InsertMode = insert_mode
        self.chain_prefix = chain_prefix
        self._runner = runner
        cmd = "iptables" if ip_version == 4 else "ip6tables"
        self._save_argv = [f"{cmd}-save", "-t", name]
        self._restore_argv = [f"{cmd}-restore", "--noflush"]

        self._desired: dict[str, Chain] = {}
        self._desired_hashes: dict[str, list[str]] = {}
        self._desired_targets: dict[str, frozenset[str]] = {}
        self._referrers: dict[str, set[str]] = defaultdict(set)  # target -> desired chains
        self._insertions: dict[str, tuple[Rule, ...]] = {}
        self._insertion_hashes: dict[str, list[str]] = {}
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._warned_deferred: set[str] = set()
        self._kernel: dict[str, KernelChain] | None = None

    def __repr__(self) -> str:
        return f"Table({self.name!r}, ip_version={self.ip_version})"

    # -- intent ---------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if not name.startswith(self.chain_prefix):
            raise ValueError(f"chain {name!r} is not ours: names must start {self.chain_prefix!r}")
        if len(name) > MAX_CHAIN_NAME_LENGTH:
            raise ValueError(
                f"chain name {name!r} is {len(name)} chars; the limit is "
                f"{MAX_CHAIN_NAME_LENGTH} (use chain_name() to shorten it)"
            )

    def update_chain(self, chain: Chain) -> None:
        """Record the complete desired contents of one ``cali-`` chain."""
        self._check_name(chain.name)
        name = chain.name
        self._removed.discard(name)
        if self._desired.get(name) == chain:
            return
        self._unindex(name)
        self._desired[name] = chain
        self._desired_hashes[name] = chain.rule_hashes()
        targets = frozenset(
            t for t in (r.target for r in chain.rules) if t and t.startswith(self.chain_prefix)
        )
        self._desired_targets[name] = targets
        for t in targets:
            self._referrers[t].add(name)
        self._dirty.add(name)

    def update_chains(self, chains: Iterable[Chain]) -> None:
        for chain in chains:
            self.update_chain(chain)

    def remove_chain(self, name: str) -> None:
        """Stop wanting a chain; it is deleted on a later apply once nothing references it."""
        if name in self._desired:
            self._unindex(name)
            del self._desired[name]
            del self._desired_hashes[name]
        self._dirty.discard(name)
        self._removed.add(name)

    def remove_chains(self, names: Iterable[str]) -> None:
        for name in names:
            self.remove_chain(name)

    def _unindex(self, name: str) -> None:
        for t in self._desired_targets.pop(name, ()):
            refs = self._referrers.get(t)
            if refs is not None:
                refs.discard(name)
                if not refs:
                    del self._referrers[t]

    def set_rule_insertions(self, kernel_chain: str, rules: Sequence[Rule]) -> None:
        """Set the rules Felix inserts into a kernel chain (e.g. ``-j cali-INPUT`` in
        ``INPUT``): at the top in ``insert`` mode, at the bottom in ``append`` mode, in the
        given order.  An empty sequence removes our insertions from that chain."""
        if kernel_chain.startswith(self.chain_prefix):
            raise ValueError(f"{kernel_chain!r} is one of our chains; use update_chain")
        rules = tuple(rules)
        if self._insertions.get(kernel_chain) == rules:
            return
        self._insertions[kernel_chain] = rules
        self._insertion_hashes[kernel_chain] = rule_hashes(kernel_chain, rules)

    @property
    def desired_chains(self) -> dict[str, Chain]:
        return dict(self._desired)

    # -- kernel state ---------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget what we believe the kernel holds; the next apply re-reads and repairs."""
        self._kernel = None

    def refresh(self) -> None:
        """Re-read the kernel now; the next apply repairs any drift found."""
        self._load(ApplyStats(component=f"iptables-{self.name}"))

    def _load(self, stats: ApplyStats) -> None:
        result = self._runner(self._save_argv)
        stats.reads += 1
        if not result.ok:
            raise DataplaneError(
                f"{' '.join(self._save_argv)} failed (rc={result.returncode})",
                command=self._save_argv,
                stderr=result.stderr,
            )
        self._kernel = parse_iptables_save(result.stdout, self.name)
        # Everything we want must be compared against the fresh state.
        self._dirty = set(self._desired)

    def kernel_chains(self) -> dict[str, KernelChain]:
        """Our current belief about the kernel (reading it first if we have none)."""
        if self._kernel is None:
            self.refresh()
        assert self._kernel is not None
        return self._kernel

    # -- apply ----------------------------------------------------------------------------

    def apply(self, allow_cleanup: bool = False) -> ApplyStats:
        """Make the kernel table match the recorded intent with at most one restore.

        *allow_cleanup*: also delete ``cali-`` chains and ``cali:`` insertions that nobody
        asked for (leftovers of a previous run).  Pass ``True`` only once the calculation
        graph is in sync.
        """
        start = time.monotonic()
        stats = ApplyStats(component=f"iptables-{self.name}")
        try:
            if self._kernel is None:
                self._load(stats)
            plan = self._plan(allow_cleanup, force=frozenset())
            if not plan.empty:
                try:
                    self._execute(plan, stats)
                except _RestoreFailed as first:
                    log.warning(
                        "%s: iptables-restore failed (%s); re-reading the table and retrying "
                        "with a full rewrite",
                        self,
                        first.error.stderr.strip() or first.error,
                    )
                    stats.retries += 1
                    self._load(stats)
                    force = frozenset(plan.writes) | frozenset(plan.insertions)
                    plan = self._plan(allow_cleanup, force=force)
                    try:
                        self._execute(plan, stats)
                    except _RestoreFailed as second:
                        self._kernel = None
                        raise second.error from None
            self._dirty.clear()
            stats.deferred = len(plan.deferred)
        finally:
            stats.seconds = time.monotonic() - start
        return stats

    def _plan(self, allow_cleanup: bool, force: frozenset[str]) -> _Plan:
        kernel = self._kernel
        assert kernel is not None
        prefix = self.chain_prefix

        writes = []
        for name in sorted(self._dirty | (force & self._desired.keys())):
            kc = kernel.get(name)
            if name in force or kc is None or kc.hashes != self._desired_hashes[name]:
                writes.append(name)

        # Kernel-chain insertions that need fixing, and what stays there afterwards.
        insertions: dict[str, tuple[list[int], list[tuple[Rule, str]]]] = {}
        post_insertion_targets: dict[str, set[str]] = {}
        builtin = KERNEL_CHAINS.get(self.name, ())
        for kname, kc in kernel.items():
            if kname.startswith(prefix) or kname in self._insertions:
                continue
            ours = kc.our_positions()
            if not ours:
                continue
            if allow_cleanup and kname in builtin:
                insertions[kname] = (ours, [])
            else:  # kept: before in-sync, or in a chain that is not the kernel's own
                post_insertion_targets[kname] = {
                    t for i in ours if (t := kc.targets[i]) and t.startswith(prefix)
                }
        for kname, rules in self._insertions.items():
            hashes = self._insertion_hashes[kname]
            kc = kernel.get(kname, KernelChain())
            ours = kc.our_positions()
            n, total = len(hashes), len(kc.hashes)
            first = 0 if self.insert_mode == "insert" else total - n
            expected = list(range(first, first + n))
            in_place = ours == expected and [kc.hashes[i] for i in ours] == hashes
            if kname in force or not in_place:
                insertions[kname] = (ours, list(zip(rules, hashes, strict=True)))
            post_insertion_targets[kname] = {
                t for r in rules if (t := r.target) and t.startswith(prefix)
            }

        # Chains to delete: those explicitly removed, plus (after in-sync) stale leftovers;
        # minus any that something remaining after this transaction still jumps to.
        self._removed = {c for c in self._removed if c in kernel}
        candidates = set(self._removed)
        if allow_cleanup:
            candidates |= {c for c in kernel if c.startswith(prefix) and c not in self._desired}
        deletes, deferred = self._order_deletions(candidates, kernel, post_insertion_targets)

        # Every jump we are about to write must land on a chain that exists afterwards.
        doomed = set(deletes)
        for src, targets in [(c, self._desired_targets[c]) for c in writes] + [
            (k, post_insertion_targets.get(k, set())) for k in insertions
        ]:
            for t in targets:
                if t not in self._desired and (t not in kernel or t in doomed):
                    raise DataplaneError(
                        f"{self}: chain {src} jumps to {t}, which is neither desired nor "
                        f"present in the kernel; add {t} with update_chain() first"
                    )
        return _Plan(writes=writes, deletes=deletes, deferred=deferred, insertions=insertions)

    def _order_deletions(
        self,
        candidates: set[str],
        kernel: dict[str, KernelChain],
        post_insertion_targets: dict[str, set[str]],
    ) -> tuple[list[str], list[str]]:
        if not candidates:
            return [], []
        prefix = self.chain_prefix
        # Who will still jump to each candidate after this transaction?
        referrers: dict[str, set[str]] = defaultdict(set)
        for target in candidates:
            referrers[target] |= self._referrers.get(target, set())
        for kname, kc in kernel.items():
            if kname in self._desired:
                continue  # rewritten from desired state, indexed above
            if kname.startswith(prefix):
                for t in kc.targets:
                    if t in candidates:
                        referrers[t].add(kname)
            else:
                for h, t in zip(kc.hashes, kc.targets, strict=True):
                    if h is None and t in candidates:
                        referrers[t].add(kname)  # a foreign rule: never touched
        for kname, targets in post_insertion_targets.items():
            for t in targets & candidates:
                referrers[t].add(kname)

        to_delete = set(candidates)
        changed = True
        while changed:
            changed = False
            for c in sorted(to_delete):
                if referrers[c] - to_delete:
                    to_delete.discard(c)
                    changed = True
        deferred = sorted(candidates - to_delete)
        for c in deferred:
            if c not in self._warned_deferred:
                log.warning(
                    "%s: not deleting chain %s yet: still referenced by %s",
                    self,
                    c,
                    ", ".join(sorted(referrers[c] - to_delete)),
                )
                self._warned_deferred.add(c)
        self._warned_deferred &= set(deferred)
        return sorted(to_delete), deferred

    def _render(self, plan: _Plan) -> list[str]:
        lines = [f"*{self.name}"]
        for name in sorted(set(plan.writes) | set(plan.deletes)):
            lines.append(f":{name} - [0:0]")
        for name in plan.writes:
            chain = self._desired[name]
            hashes = self._desired_hashes[name]
            lines.extend(r.render(name, h) for r, h in zip(chain.rules, hashes, strict=True))
        for kname, (positions, rules) in plan.insertions.items():
            lines.extend(f"-D {kname} {i + 1}" for i in sorted(positions, reverse=True))
            if self.insert_mode == "insert":
                lines.extend(
                    r.render(kname, h, op="-I", position=j + 1) for j, (r, h) in enumerate(rules)
                )
            else:
                lines.extend(r.render(kname, h) for r, h in rules)
        lines.extend(f"-X {name}" for name in plan.deletes)
        lines.append("COMMIT")
        return lines

    def _execute(self, plan: _Plan, stats: ApplyStats) -> None:
        lines = self._render(plan)
        text = "\n".join(lines) + "\n"
        result = self._runner(self._restore_argv, input=text)
        stats.commands += 1
        stats.lines += len(lines) - 2
        if not result.ok:
            bad_line = None
            m = _LINE_NO_RE.search(result.stderr)
            if m and 0 < int(m.group(1)) <= len(lines):
                bad_line = lines[int(m.group(1)) - 1]
            raise _RestoreFailed(
                DataplaneError(
                    f"{self}: iptables-restore failed (rc={result.returncode})",
                    command=self._restore_argv,
                    stderr=result.stderr,
                    line=bad_line,
                )
            )
        stats.written += len(plan.writes)
        stats.deleted += len(plan.deletes)
        self._record_success(plan)

    def _record_success(self, plan: _Plan) -> None:
        kernel = self._kernel
        assert kernel is not None
        for name in plan.deletes:
            kernel.pop(name, None)
            self._removed.discard(name)
        for name in plan.writes:
            rules = self._desired[name].rules
            kernel[name] = KernelChain(
                hashes=list(self._desired_hashes[name]), targets=[r.target for r in rules]
            )
        for kname, (positions, rules) in plan.insertions.items():
            kc = kernel.setdefault(kname, KernelChain())
            drop = set(positions)
            kept = [
                (h, t)
                for i, (h, t) in enumerate(zip(kc.hashes, kc.targets, strict=True))
                if i not in drop
            ]
            new = [(h, r.target) for r, h in rules]
            merged = new + kept if self.insert_mode == "insert" else kept + new
            kc.hashes = [h for h, _ in merged]
            kc.targets = [t for _, t in merged]

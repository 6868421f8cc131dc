"""iptables match and action fragments, spelled once.

This module owns the exact text of every match (``-m mark --mark 0x10000/0x10000``) and
action (``-j MARK --set-mark 0/0x30000``, ``-g cali-fw-cali1234``) the renderer emits, so the
other modules compose rules from named pieces rather than from ad-hoc strings. Marks are
written as Calico writes them: ``<value>/<mask>`` in hex, ``0`` for a clear value.
"""

from __future__ import annotations

from collections.abc import Iterable

ACCEPT = "-j ACCEPT"
DROP = "-j DROP"
RETURN = "-j RETURN"
NOTRACK = "-j NOTRACK"
MASQUERADE = "-j MASQUERADE"


def join(*fragments: str) -> str:
    """Join non-empty fragments with single spaces."""
    return " ".join(f for f in fragments if f)


def _hex(value: int) -> str:
    return f"{value:#x}" if value else "0"


# --- marks ----------------------------------------------------------------------------------


def mark_set(bits: int) -> str:
    """Match packets with all of ``bits`` set."""
    return f"-m mark --mark {_hex(bits)}/{_hex(bits)}"


def mark_clear(bits: int) -> str:
    """Match packets with all of ``bits`` clear."""
    return f"-m mark --mark 0/{_hex(bits)}"


def set_mark(bits: int) -> str:
    """Action: set ``bits``, leave the others."""
    return f"-j MARK --set-mark {_hex(bits)}/{_hex(bits)}"


def set_masked_mark(value: int, mask: int) -> str:
    """Action: set the ``mask`` bits of the mark to ``value``."""
    return f"-j MARK --set-mark {_hex(value)}/{_hex(mask)}"


def clear_mark(bits: int) -> str:
    """Action: clear ``bits``, leave the others."""
    return f"-j MARK --set-mark 0/{_hex(bits)}"


# --- jumps and verdicts ---------------------------------------------------------------------


def jump(chain: str) -> str:
    return f"-j {chain}"


def goto(chain: str) -> str:
    return f"-g {chain}"


def verdict(action: str) -> str:
    """``Accept`` / ``Drop`` / ``Return`` (Calico's config spelling, any case) → action."""
    word = action.upper()
    if word not in ("ACCEPT", "DROP", "RETURN"):
        raise ValueError(f"unknown verdict {action!r}")
    return f"-j {word}"


def log(prefix: str) -> str:
    return f'-j LOG --log-prefix "{prefix}: " --log-level 5'


# --- packet matches -------------------------------------------------------------------------


def conntrack(states: str, negate: bool = False) -> str:
    return f"-m conntrack {'! ' if negate else ''}--ctstate {states}"


def in_iface(name: str) -> str:
    return f"-i {name}"


def out_iface(name: str) -> str:
    return f"-o {name}"


def protocol(name: str, negate: bool = False) -> str:
    return f"{'! ' if negate else ''}-p {name}"


def src_net(cidr: str, negate: bool = False) -> str:
    return f"{'! ' if negate else ''}-s {cidr}"


def dst_net(cidr: str, negate: bool = False) -> str:
    return f"{'! ' if negate else ''}-d {cidr}"


def ipset(name: str, direction: str, negate: bool = False) -> str:
    """``direction``: ``src``/``dst`` for address sets, ``src,src``/``dst,dst`` for ip,port."""
    return f"-m set {'! ' if negate else ''}--match-set {name} {direction}"


def ports(port_list: Iterable[object], direction: str, negate: bool = False) -> str:
    """``-m multiport --dports 80,443,1000:2000`` (``direction``: ``src``/``dst``)."""
    flag = "--sports" if direction == "src" else "--dports"
    joined = ",".join(str(p) for p in port_list)
    return f"-m multiport {'! ' if negate else ''}{flag} {joined}"


def icmp(ip_version: int, type_: int, code: int | None, negate: bool = False) -> str:
    value = str(type_) if code is None else f"{type_}/{code}"
    neg = "! " if negate else ""
    if ip_version == 4:
        return f"-m icmp {neg}--icmp-type {value}"
    return f"-m icmp6 {neg}--icmpv6-type {value}"


def addrtype_src_local() -> str:
    return "-m addrtype --src-type LOCAL"


def addrtype_dst_local() -> str:
    return "-m addrtype --dst-type LOCAL"

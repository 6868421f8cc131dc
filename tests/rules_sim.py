"""Test helpers for tortie.felix.rules: readable golden lines and a tiny iptables simulator.

- :func:`lines` renders chains as ``-A chain ...`` with the iptables module's own rendering,
  minus the per-rule hash comment (and, optionally, minus the human comments).
- :class:`Simulator` runs a packet through rendered chains, understanding exactly the matches
  and targets the renderer emits; it also enforces iptables' own limits (one ``-p``, one
  ``-s``, one ``-d`` per rule, 15 multiport slots) so a rendered rule that iptables would
  refuse fails the test.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from tortie.felix.dataplane.iptables import Chain

_HASH_FRAGMENT = re.compile(r' -m comment --comment "cali:[^"]*"')
_USER_COMMENT = re.compile(r' -m comment --comment "[^"]*"')

PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "sctp": 132}


def lines(chains: Chain | Iterable[Chain], comments: bool = True) -> list[str]:
    """``-A <chain> <match> [-m comment --comment "..."] <action>`` for each rule."""
    if isinstance(chains, Chain):
        chains = [chains]
    out = []
    for chain in chains:
        for rule in chain.rules:
            text = _HASH_FRAGMENT.sub("", rule.render(chain.name, "HASH"))
            if not comments:
                text = _USER_COMMENT.sub("", text)
            out.append(text)
    return out


@dataclass
class Packet:
    src: str = "10.0.0.1"
    dst: str = "10.0.0.2"
    proto: str = "tcp"
    sport: int | None = 1000
    dport: int | None = 80
    icmp_type: int | None = None
    icmp_code: int | None = None
    iif: str = ""
    oif: str = ""
    ctstate: str = "NEW"
    mark: int = 0
    rpf_ok: bool = True
    log: list[str] = field(default_factory=list)
    notrack: bool = False

    def proto_number(self) -> int:
        return PROTOCOL_NUMBERS[self.proto]


class IllegalRule(AssertionError):
    """A rendered rule iptables would refuse."""


def _proto_matches(packet: Packet, name: str) -> bool:
    number = int(name) if name.isdigit() else PROTOCOL_NUMBERS[name]
    return packet.proto_number() == number


def _in_net(addr: str, cidr: str) -> bool:
    return ipaddress.ip_address(addr) in ipaddress.ip_network(cidr, strict=False)


def _iface_matches(actual: str, pattern: str) -> bool:
    if pattern.endswith("+"):
        return actual.startswith(pattern[:-1])
    return actual == pattern


def _port_in(port: int | None, spec: str) -> bool:
    if port is None:
        return False
    for item in spec.split(","):
        first, _, last = item.partition(":")
        if int(first) <= port <= int(last or first):
            return True
    return False


def _slots(spec: str) -> int:
    return sum(2 if ":" in item else 1 for item in spec.split(","))


class Simulator:
    """Runs packets through chains. ``ipsets`` maps a set name to its members: CIDR strings
    for address sets, ``(ip, proto, port)`` tuples for named-port (``ip,port``) sets."""

    def __init__(self, chains: Iterable[Chain], ipsets: dict[str, set] | None = None) -> None:
        self.chains = {c.name: c for c in chains}
        self.ipsets = ipsets or {}
        self.trace: list[str] = []

    # -- matching --------------------------------------------------------------------------

    def _set_matches(self, packet: Packet, name: str, direction: str) -> bool:
        members = self.ipsets.get(name, set())
        addr, port = (
            (packet.src, packet.sport)
            if direction.startswith("src")
            else (
                packet.dst,
                packet.dport,
            )
        )
        if "," in direction:
            return (addr, packet.proto, port) in members
        return any(_in_net(addr, m) for m in members)

    def matches(self, packet: Packet, match: str) -> bool:
        tokens = shlex.split(match)
        counts = {"-p": 0, "-s": 0, "-d": 0}
        rule_proto = ""
        result = True
        negate = False
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok == "!":
                negate = True
                i += 1
                continue
            if tok in ("-p", "-s", "-d", "-i", "-o"):
                value = tokens[i + 1]
                i += 2
                if tok in counts:
                    counts[tok] += 1
                    if counts[tok] > 1:
                        raise IllegalRule(f"multiple {tok} flags in {match!r}")
                if tok == "-p":
                    rule_proto = "" if negate else value
                    ok = _proto_matches(packet, value)
                elif tok == "-s":
                    ok = _in_net(packet.src, value)
                elif tok == "-d":
                    ok = _in_net(packet.dst, value)
                elif tok == "-i":
                    ok = _iface_matches(packet.iif, value)
                else:
                    ok = _iface_matches(packet.oif, value)
            elif tok == "-m":
                i += 2  # the module's option follows (possibly after "!")
                continue
            elif tok == "--mark":
                value, _, mask = tokens[i + 1].partition("/")
                ok = packet.mark & int(mask, 16) == int(value, 16)
                i += 2
            elif tok == "--match-set":
                ok = self._set_matches(packet, tokens[i + 1], tokens[i + 2])
                i += 3
            elif tok in ("--sports", "--dports"):
                if rule_proto not in ("tcp", "udp", "sctp", "udplite", "6", "17"):
                    raise IllegalRule(f"multiport without a port protocol in {match!r}")
                if _slots(tokens[i + 1]) > 15:
                    raise IllegalRule(f"more than 15 multiport slots in {match!r}")
                port = packet.sport if tok == "--sports" else packet.dport
                ok = _port_in(port, tokens[i + 1])
                i += 2
            elif tok in ("--icmp-type", "--icmpv6-type"):
                type_, _, code = tokens[i + 1].partition("/")
                ok = packet.icmp_type == int(type_) and (not code or packet.icmp_code == int(code))
                i += 2
            elif tok == "--ctstate":
                ok = packet.ctstate in tokens[i + 1].split(",")
                i += 2
            elif tok == "--comment":
                i += 2
                continue
            elif tok == "--validmark":
                i += 1
                continue
            elif tok == "--invert":
                ok = not packet.rpf_ok
                i += 1
            else:
                raise AssertionError(f"simulator does not understand {tok!r} in {match!r}")
            if negate:
                ok = not ok
                negate = False
            result = result and ok
        return result

    # -- running ---------------------------------------------------------------------------

    def run(self, chain: str, packet: Packet, depth: int = 0) -> str:
        """``ACCEPT``, ``DROP``, or ``RETURN`` (fell off the end / returned)."""
        if depth > 20:
            raise AssertionError("chain recursion too deep")
        self.trace.append(chain)
        for rule in self.chains[chain].rules:
            if not self.matches(packet, rule.match):
                continue
            words = shlex.split(rule.action)
            flag, target, args = words[0], words[1], words[2:]
            if target == "MARK":
                assert args[0] == "--set-mark", rule.action
                value, _, mask = args[1].partition("/")
                packet.mark = (packet.mark & ~int(mask, 16)) | int(value, 16)
            elif target == "LOG":
                packet.log.append(args[1])
            elif target == "NOTRACK":
                packet.notrack = True
            elif target in ("ACCEPT", "DROP"):
                return target
            elif target == "RETURN":
                return "RETURN"
            elif flag == "-g":
                return self.run(target, packet, depth + 1)
            else:
                verdict = self.run(target, packet, depth + 1)
                if verdict != "RETURN":
                    return verdict
        return "RETURN"

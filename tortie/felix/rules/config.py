"""The rule renderer's configuration: mark bits, actions, failsafe ports, feature switches.

This module owns :class:`RulesConfig`, the plain data the renderer needs from Felix's
configuration (Calico's ``rules.Config``). Defaults are Calico's defaults. The mark bits are
allocated from ``IptablesMarkMask`` as Calico's mark-bits manager does: the lowest free bit
first, in the order accept, pass, scratch0, scratch1 (``0xffff0000`` → ``0x10000``,
``0x20000``, ``0x40000``, ``0x80000``).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MARK_MASK = 0xFFFF0000


@dataclass(frozen=True, slots=True)
class ProtoPort:
    """One failsafe entry: ``tcp:22``, optionally limited to a peer CIDR (``net``)."""

    protocol: str
    port: int
    net: str = ""

    @classmethod
    def parse(cls, text: str) -> ProtoPort:
        """Parse Calico's ``[<net>:]<proto>:<port>`` or ``<proto>:<port>`` form."""
        head, sep, port = text.strip().rpartition(":")
        if not sep:
            raise ValueError(f"failsafe port {text!r} is not of the form proto:port")
        net, _, proto = head.rpartition(":")
        if "[" in net:  # "[fd00::/64]" form for IPv6 nets
            net = net.strip("[]")
        return cls(protocol=proto.lower(), port=int(port), net=net)


def _ports(spec: str) -> tuple[ProtoPort, ...]:
    return tuple(ProtoPort.parse(item) for item in spec.split(","))


# Calico's defaults (felix/config/config_params.go).
DEFAULT_FAILSAFE_INBOUND = _ports(
    "tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
)
DEFAULT_FAILSAFE_OUTBOUND = _ports(
    "udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667"
)


def _single_bits(mask: int) -> list[int]:
    return [1 << bit for bit in range(32) if mask & (1 << bit)]


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """Everything the renderer needs to know; one instance per IP version.

    ``default_endpoint_to_host_action``: what happens to workload→host traffic once the
    workload's egress policy allowed it (``Drop`` | ``Accept`` | ``Return``).
    ``iptables_filter_allow_action`` / ``mangle_allow_action``: the verdict our top-level
    chains give an accepted packet (``Accept``, or ``Return`` to let later rules run).
    ``vxlan_enabled`` / ``ipip_enabled``: render the tunnel rules; they match the
    ``all-vxlan-net`` / ``all-hosts-net`` IP sets, which the dataplane must then keep filled.
    ``workload_rpf_check``: drop spoofed workload traffic in raw PREROUTING with
    ``-m rpfilter`` (Calico always does; turn off only where the module is missing).
    """

    mark_accept: int = 0x10000
    mark_pass: int = 0x20000
    mark_scratch0: int = 0x40000
    mark_scratch1: int = 0x80000
    ip_version: int = 4
    workload_iface_prefixes: tuple[str, ...] = ("cali",)
    default_endpoint_to_host_action: str = "Drop"
    iptables_filter_allow_action: str = "Accept"
    mangle_allow_action: str = "Accept"
    failsafe_inbound_host_ports: tuple[ProtoPort, ...] = DEFAULT_FAILSAFE_INBOUND
    failsafe_outbound_host_ports: tuple[ProtoPort, ...] = DEFAULT_FAILSAFE_OUTBOUND
    log_prefix: str = "calico-packet"
    vxlan_enabled: bool = False
    vxlan_port: int = 4789
    ipip_enabled: bool = False
    allow_vxlan_packets_from_workloads: bool = False
    allow_ipip_packets_from_workloads: bool = False
    nat_outgoing_address: str | None = None
    nat_outgoing_random_fully: bool = False
    disable_conntrack_invalid_check: bool = False
    workload_rpf_check: bool = True
    chain_insert_mode: str = "insert"  # insert | append (used by the table manager)

    def __post_init__(self) -> None:
        if self.ip_version not in (4, 6):
            raise ValueError(f"ip_version must be 4 or 6, not {self.ip_version}")
        marks = (self.mark_accept, self.mark_pass, self.mark_scratch0, self.mark_scratch1)
        used = 0
        for mark in marks:
            if mark == 0 or mark & (mark - 1):
                raise ValueError(f"mark {mark:#x} is not a single bit")
            if used & mark:
                raise ValueError(f"mark {mark:#x} overlaps another mark")
            used |= mark
        for name, value, allowed in (
            (
                "default_endpoint_to_host_action",
                self.default_endpoint_to_host_action,
                ("Drop", "Accept", "Return"),
            ),
            (
                "iptables_filter_allow_action",
                self.iptables_filter_allow_action,
                ("Accept", "Return"),
            ),
            ("mangle_allow_action", self.mangle_allow_action, ("Accept", "Return")),
            ("chain_insert_mode", self.chain_insert_mode, ("insert", "append")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")

    @classmethod
    def from_mark_mask(cls, mask: int = DEFAULT_MARK_MASK, **kwargs: object) -> RulesConfig:
        """Allocate accept, pass, scratch0, scratch1 from the low bits of ``mask``."""
        bits = _single_bits(mask)
        if len(bits) < 4:
            raise ValueError(f"IptablesMarkMask {mask:#x} has fewer than the 4 bits Felix needs")
        accept, pass_, scratch0, scratch1 = bits[:4]
        return cls(
            mark_accept=accept,
            mark_pass=pass_,
            mark_scratch0=scratch0,
            mark_scratch1=scratch1,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def all_marks(self) -> int:
        """Every mark bit we own (cleared at the start of our top-level chains)."""
        return self.mark_accept | self.mark_pass | self.mark_scratch0 | self.mark_scratch1

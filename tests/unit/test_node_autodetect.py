"""IP autodetection over made-up interface tables, with calicoctl's rules."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from tortie.node.autodetect import (
    AutodetectError,
    Interface,
    autodetect,
    filter_interfaces,
    is_global_unicast,
    local_cidr,
)
from tortie.node.config import parse_method


class FakeHost:
    def __init__(self, interfaces: Sequence[Interface], routes: dict[str, str] | None = None):
        self._interfaces = list(interfaces)
        self.routes = routes or {}
        self.asked: list[tuple[str, int]] = []

    def interfaces(self) -> list[Interface]:
        return self._interfaces

    def reach(self, dest: str, version: int) -> str:
        self.asked.append((dest, version))
        if dest not in self.routes:
            raise OSError("Network is unreachable")
        return self.routes[dest]


# A host as the kernel lists it (ifindex order).
HOST = FakeHost(
    [
        Interface.of("lo", "127.0.0.1/8", "::1/128"),
        Interface.of("eth0", "172.31.0.11/24", "fd00:31::11/64", "fe80::11/64"),
        Interface.of("eth1", "10.10.0.5/16"),
        Interface.of("docker0", "172.17.0.1/16"),
        Interface.of("cali1234567890a"),
        Interface.of("vxlan.calico", "192.168.5.0/32"),
        Interface.of("br-3a10a9384428", "172.18.0.1/16"),
    ],
    routes={"172.31.0.1": "172.31.0.11", "10.10.9.9": "10.10.0.5", "8.8.8.8": "203.0.113.9"},
)


def detect(method: str, version: int = 4, host: FakeHost = HOST) -> str:
    return str(autodetect(parse_method(method), version, host))


def test_first_found_walks_interfaces_in_reverse_and_skips_calico_and_docker() -> None:
    # Reverse order: br-... comes first (not excluded by default: the classic pitfall),
    # vxlan.calico, cali* and docker0 are excluded.
    assert detect("first-found") == "172.18.0.1/16"


def test_skip_interface_adds_to_the_default_exclusions() -> None:
    assert detect("skip-interface=br-.*") == "10.10.0.5/16"
    assert detect("skip-interface=br-.*,eth1") == "172.31.0.11/24"


def test_interface_regexes_are_searched_not_anchored() -> None:
    assert detect("interface=eth0") == "172.31.0.11/24"
    assert detect("interface=th0") == "172.31.0.11/24"  # Go's MatchString: a search
    assert detect("interface=^eth") == "10.10.0.5/16"  # reverse order: eth1 before eth0
    assert detect("interface=eth0,eth1") == "10.10.0.5/16"


def test_interface_has_no_default_exclusions() -> None:
    assert detect("interface=docker0") == "172.17.0.1/16"


def test_cidr_method() -> None:
    assert detect("cidr=172.31.0.0/16") == "172.31.0.11/24"
    assert detect("cidr=10.0.0.0/8, 192.0.2.0/24") == "10.10.0.5/16"
    assert detect("cidr=fd00:31::/64", 6) == "fd00:31::11/64"


def test_ipv6_skips_link_local_and_loopback() -> None:
    assert detect("interface=eth0", 6) == "fd00:31::11/64"
    assert detect("first-found", 6) == "fd00:31::11/64"


def test_can_reach_uses_the_route_lookup_and_the_interface_prefix() -> None:
    host = FakeHost(HOST.interfaces(), HOST.routes)
    assert detect("can-reach=172.31.0.1", host=host) == "172.31.0.11/24"
    assert detect("can-reach=10.10.9.9", host=host) == "10.10.0.5/16"
    assert host.asked == [("172.31.0.1", 4), ("10.10.9.9", 4)]


def test_can_reach_errors() -> None:
    with pytest.raises(AutodetectError, match="does not match any addresses"):
        detect("can-reach=8.8.8.8")
    with pytest.raises(AutodetectError, match=r"by connecting to 192\.0\.2\.1"):
        detect("can-reach=192.0.2.1")


def test_nothing_found() -> None:
    with pytest.raises(AutodetectError, match="no valid host interfaces found"):
        detect("interface=wlan0")
    with pytest.raises(AutodetectError, match="no valid IPv4 addresses"):
        detect("interface=^cali")
    with pytest.raises(AutodetectError, match="no valid IPv6 addresses"):
        detect("interface=eth1", 6)
    lo_only = FakeHost([Interface.of("lo", "127.0.0.1/8")])
    with pytest.raises(AutodetectError):
        detect("first-found", host=lo_only)


def test_filter_keeps_only_the_family_asked_for() -> None:
    rows = filter_interfaces(HOST.interfaces(), ("eth0",), (), 6)
    assert [str(a) for a in rows[0].addresses] == ["fd00:31::11/64", "fe80::11/64"]


@pytest.mark.parametrize(
    ("ip", "ok"),
    [
        ("10.0.0.1", True),
        ("192.168.1.1", True),
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("169.254.1.1", False),
        ("224.0.0.5", False),
        ("255.255.255.255", False),
        ("fd00::1", True),
        ("fe80::1", False),
        ("::1", False),
        ("ff02::1", False),
    ],
)
def test_global_unicast_is_gos(ip: str, ok: bool) -> None:
    assert is_global_unicast(ipaddress.ip_address(ip)) is ok


def test_local_cidr_for_explicit_addresses() -> None:
    ifaces = HOST.interfaces()
    assert local_cidr("172.31.0.11", 4, ifaces) == "172.31.0.11/24"
    assert local_cidr("172.31.0.11/16", 4, ifaces) == "172.31.0.11/16"  # a CIDR is kept
    assert local_cidr("192.0.2.7", 4, ifaces) == "192.0.2.7/32"  # on no interface
    assert local_cidr("fd00:31::11", 6, ifaces) == "fd00:31::11/64"

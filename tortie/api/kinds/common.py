"""Field checks shared by the infrastructure kinds (IP pools, BGP, Felix, nodes, controllers).

The general validators (names, labels, CIDRs, selectors, durations) live in
``tortie.api.validators``; this module adds the ones only these kinds need, each named after the
Calico validator it mirrors (``libcalico-go/lib/validator/v3/validator.go``):

- AS numbers (``numorstring.ASNumber``): a number, or a string holding a number or the dotted
  ``<high>.<low>`` form; always written back as a number.
- ``net``/``netv4``/``netv6``: an IP, or a CIDR whose host bits are zero ("strictly masked").
- ``mac``, ``regexp``, ``interface``, ``ifaceFilter``: MAC addresses, regular expressions and
  Linux interface names.
- ``numorstring.Port``: a port number or a ``"min:max"`` range (no named ports here).
- ``IP:port``: an IP with an optional port, ``<IPv4>:<port>`` or ``[<IPv6>]:<port>``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

from tortie.api.base import Ctx, Resource
from tortie.api.validators import is_dns1123_subdomain, parse_cidr, parse_ip

LOG_LEVELS = ("Trace", "Debug", "Info", "Warning", "Error", "Fatal")
ENABLED_DISABLED = ("Enabled", "Disabled")
DEFAULT_NAME = "default"
MAX_UINT32 = 2**32 - 1

# --- AS numbers --------------------------------------------------------------------------------


def parse_as_number(value: int | str | None) -> int | None:
    """The AS number in ``value`` (``64512``, ``"64512"`` or dotted ``"1.10"``), else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_UINT32 else None
    text = value.strip()
    if re.fullmatch(r"\d+\.\d+", text):
        high, low = (int(p) for p in text.split("."))
        return (high << 16) + low if high <= 0xFFFF and low <= 0xFFFF else None
    if re.fullmatch(r"\d+", text):
        number = int(text)
        return number if number <= MAX_UINT32 else None
    return None


def normalise_as_number(value: int | str | None) -> int | str | None:
    """``value`` as a plain number when it is a valid AS number (as Calico writes it back)."""
    number = parse_as_number(value)
    return value if number is None else number


def check_as_number(ctx: Ctx, path: str, value: int | str | None) -> bool:
    if value is None or parse_as_number(value) is not None:
        return True
    ctx.error(
        path,
        f"invalid AS number {value!r}: expected 0-4294967295 or dotted notation "
        "<0-65535>.<0-65535>",
    )
    return False


# --- names, addresses, networks ----------------------------------------------------------------

_PREFIX_LENGTH = re.compile(r"^[^/]+(/\d{1,3})?$")


def parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """An IP or CIDR in the forms Go's ``net.ParseCIDR`` accepts (a ``/<prefix length>``, not a
    ``/<netmask>``); host bits allowed. None when invalid."""
    if not _PREFIX_LENGTH.match(value):
        return None
    return parse_cidr(value)


def check_name_ref(ctx: Ctx, path: str, value: str | None, what: str = "name") -> bool:
    """A reference to another resource by name (a DNS-1123 subdomain, as Calico's ``name``)."""
    if value is None or is_dns1123_subdomain(value):
        return True
    ctx.error(
        path,
        f"invalid {what} {value!r}: must be lower case alphanumerics, '-' or '.', starting and "
        "ending with an alphanumeric",
    )
    return False


def check_ip_version(ctx: Ctx, path: str, value: str | None, version: int) -> bool:
    """An IPv4 (``version=4``) or IPv6 address, as Calico's ``ipv4``/``ipv6`` validators."""
    if value is None:
        return True
    ip = parse_ip(value)
    if ip is None or ip.version != version:
        ctx.error(path, f"{value!r} is not a valid IPv{version} address")
        return False
    return True


def check_strict_net(ctx: Ctx, path: str, value: str | None, version: int | None = None) -> bool:
    """Calico's ``net``: an IP, or a CIDR with no host bits set (``10.0.0.0/24``, not ``.1/24``)."""
    if value is None:
        return True
    family = f"IPv{version} " if version else ""
    net = parse_network(value)
    if net is None or (version is not None and net.version != version):
        ctx.error(path, f"invalid {family}network {value!r}: expected a CIDR such as 10.0.0.0/24")
        return False
    address = value.split("/", 1)[0]
    if ipaddress.ip_address(address) != net.network_address:
        ctx.error(
            path,
            f"{value!r} has host bits set: the network is {net} (use that, or a single IP)",
        )
        return False
    return True


def check_cidr_or_ip(ctx: Ctx, path: str, value: str | None, version: int | None = None) -> bool:
    """Calico's ``cidr``/``cidrv4``/``cidrv6``: an IP or a CIDR; host bits are allowed."""
    if value is None:
        return True
    net = parse_network(value)
    family = f"IPv{version} " if version else ""
    if net is None or (version is not None and net.version != version):
        ctx.error(path, f"invalid {family}CIDR {value!r}: expected an address such as 10.0.0.1/24")
        return False
    return True


_MAC_PATTERNS = (
    re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"),
    re.compile(r"^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}$"),
    re.compile(r"^[0-9A-Fa-f]{4}(\.[0-9A-Fa-f]{4}){2}$"),
    re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){7}$"),
    re.compile(r"^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){7}$"),
    re.compile(r"^[0-9A-Fa-f]{4}(\.[0-9A-Fa-f]{4}){3}$"),
    re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){19}$"),
)


def check_mac(ctx: Ctx, path: str, value: str | None) -> bool:
    """A MAC address in any form Go's ``net.ParseMAC`` accepts (``ee:ee:ee:ee:ee:ee``...)."""
    if value is None or any(p.match(value) for p in _MAC_PATTERNS):
        return True
    ctx.error(path, f"invalid MAC address {value!r} (expected e.g. 66:7a:31:09:e4:d1)")
    return False


def check_regexp(ctx: Ctx, path: str, value: str | None) -> bool:
    if value is None:
        return True
    try:
        re.compile(value)
    except re.error as exc:
        ctx.error(path, f"invalid regular expression {value!r}: {exc}")
        return False
    return True


_INTERFACE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
_IFACE_FILTER = re.compile(r"^[a-zA-Z0-9:._+-]{1,15}$")


def check_interface_name(ctx: Ctx, path: str, value: str | None) -> bool:
    """A Linux interface name (Calico's ``interface``): 1-15 of ``[a-zA-Z0-9_.-]``."""
    if value is None or _INTERFACE.match(value):
        return True
    ctx.error(path, f"invalid interface name {value!r}: 1-15 characters of a-z, A-Z, 0-9, _ . -")
    return False


def check_iface_filter(ctx: Ctx, path: str, value: str | None) -> bool:
    """An iptables interface match (Calico's ``ifaceFilter``), which allows ``+`` as wildcard."""
    if value is None or _IFACE_FILTER.match(value):
        return True
    ctx.error(
        path,
        f"invalid interface match {value!r}: 1-15 characters of a-z, A-Z, 0-9, : . _ + - "
        "(+ is the wildcard, e.g. eth+)",
    )
    return False


# --- numbers and ports -------------------------------------------------------------------------


def check_int_range(ctx: Ctx, path: str, value: int | None, lo: int, hi: int) -> bool:
    if value is None or lo <= value <= hi:
        return True
    ctx.error(path, f"{value} is out of range: must be between {lo} and {hi}")
    return False


def check_port(ctx: Ctx, path: str, value: int | None, lo: int = 1) -> bool:
    if value is None or lo <= value <= 65535:
        return True
    ctx.error(path, f"invalid port {value}: must be between {lo} and 65535")
    return False


def parse_port_range(value: int | str) -> tuple[int, int] | None:
    """``numorstring.Port`` without names: ``80``, ``"80"`` or ``"1000:2000"`` → (min, max)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value, value) if 1 <= value <= 65535 else None
    m = re.fullmatch(r"(\d+)(?::(\d+))?", value.strip())
    if not m:
        return None
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if not 1 <= lo <= hi <= 65535:
        return None
    return lo, hi


def check_port_range(ctx: Ctx, path: str, value: int | str | None) -> bool:
    if value is None or parse_port_range(value) is not None:
        return True
    ctx.error(
        path,
        f'invalid port or port range {value!r}: expected a port 1-65535 or "min:max" '
        "with min <= max (named ports are not allowed here)",
    )
    return False


_IPV4_PORT = re.compile(r"^\d+\.\d+\.\d+\.\d+:\d+$")
_IPV6_PORT = re.compile(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$")


def split_ip_port(value: str) -> tuple[str, int | None] | None:
    """``<IP>``, ``<IPv4>:<port>`` or ``[<IPv6>]:<port>`` → (ip, port or None); None if invalid."""
    port_text: str | None
    if _IPV4_PORT.match(value):
        ip_text, port_text = value.rsplit(":", 1)
    elif m := _IPV6_PORT.match(value):
        ip_text, port_text = m.group(1), m.group(2)
    else:
        ip_text, port_text = value, None
    if parse_ip(ip_text) is None:
        return None
    if port_text is None:
        return ip_text, None
    port = int(port_text)
    if not 1 <= port <= 65535:
        return None
    return ip_text, port


# --- wireguard keys ----------------------------------------------------------------------------


def check_wireguard_key(ctx: Ctx, path: str, value: str | None) -> bool:
    """A WireGuard public key: standard base64 of exactly 32 bytes."""
    if value is None:
        return True
    try:
        ok = len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        ctx.error(path, f"invalid WireGuard public key {value!r}: expected base64 of 32 bytes")
    return ok


# --- resource names ----------------------------------------------------------------------------


def check_singleton_name(ctx: Ctx, resource: Resource, name: str = DEFAULT_NAME) -> bool:
    """Kinds Calico keeps exactly one of (ClusterInformation, IPAMConfiguration...)."""
    if resource.metadata.name == name:
        return True
    if not resource.metadata.name:
        ctx.error("metadata.name", "name is required")
    else:
        ctx.error(
            "metadata.name",
            f"invalid name {resource.metadata.name!r}: a {resource.KIND} must be named {name!r}",
        )
    return False

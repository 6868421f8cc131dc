"""Field validators shared by the resource kinds (names, labels, CIDRs, IPs, selectors).

Each ``check_*`` takes the validation context, the field path and the value, reports what is
wrong with ``ctx.error`` and returns whether the value was valid, so callers can skip checks
that depend on it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from tortie.api.base import Ctx

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def is_dns1123_label(value: str) -> bool:
    return len(value) <= DNS1123_LABEL_MAX and bool(_DNS1123_LABEL.match(value))


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= DNS1123_SUBDOMAIN_MAX and bool(_DNS1123_SUBDOMAIN.match(value))


def check_resource_name(ctx: Ctx, path: str, name: str | None) -> bool:
    """The default rule for names: a DNS-1123 subdomain (lower case, digits, '-', '.')."""
    if not name:
        ctx.error(path, "name is required")
        return False
    if not is_dns1123_subdomain(name):
        ctx.error(
            path,
            f"invalid name {name!r}: must be lower case alphanumerics, '-' or '.', start and end "
            f"with an alphanumeric, at most {DNS1123_SUBDOMAIN_MAX} characters",
        )
        return False
    return True


def check_namespace(ctx: Ctx, path: str, namespace: str | None) -> bool:
    if not namespace:
        ctx.error(path, "namespace is required for this kind")
        return False
    if not is_dns1123_label(namespace):
        ctx.error(path, f"invalid namespace {namespace!r}: must be a DNS-1123 label")
        return False
    return True


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes label key (``[prefix/]name``), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "prefix before '/' is empty"
    if slash and not is_dns1123_subdomain(prefix):
        return f"prefix {prefix!r} must be a DNS-1123 subdomain"
    if not name:
        return "name part is empty"
    if len(name) > 63:
        return "name part must be at most 63 characters"
    if not _QUALIFIED_NAME.match(name):
        return (
            "name part must consist of alphanumerics, '-', '_' or '.', "
            "and start and end with an alphanumeric"
        )
    return None


def check_labels(ctx: Ctx, path: str, labels: Mapping[str, str] | None) -> bool:
    ok = True
    for key, value in (labels or {}).items():
        problem = label_key_problem(key)
        if problem:
            ctx.error(f"{path}[{key}]", f"invalid label key {key!r}: {problem}")
            ok = False
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            ctx.error(
                f"{path}[{key}]",
                f"invalid label value {value!r}: at most 63 alphanumerics, '-', '_' or '.', "
                "starting and ending with an alphanumeric",
            )
            ok = False
    return ok


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def parse_cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR (host bits allowed, masked off) or a bare IP as a /32 or /128; None if invalid."""
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def check_ip(ctx: Ctx, path: str, value: str, version: int | None = None) -> bool:
    ip = parse_ip(value)
    if ip is None:
        ctx.error(path, f"invalid IP address {value!r}")
        return False
    if version is not None and ip.version != version:
        ctx.error(path, f"{value!r} is not an IPv{version} address")
        return False
    return True


def check_cidr(ctx: Ctx, path: str, value: str, version: int | None = None) -> bool:
    net = parse_cidr(value)
    if net is None:
        ctx.error(path, f"invalid CIDR {value!r}")
        return False
    if version is not None and net.version != version:
        ctx.error(path, f"{value!r} is not an IPv{version} CIDR")
        return False
    return True


def check_selector(ctx: Ctx, path: str, text: str | None) -> bool:
    """The selector must parse; the error says where and what was expected."""
    if text is None:
        return True
    from tortie.selector import SelectorError, parse_cached

    try:
        parse_cached(text)
    except SelectorError as exc:
        ctx.error(path, f"invalid selector: {exc}")
        return False
    return True


def check_one_of(ctx: Ctx, path: str, value: str | None, allowed: tuple[str, ...]) -> bool:
    if value is None or value in allowed:
        return True
    ctx.error(path, f"{value!r} is not one of {', '.join(allowed)}")
    return False


def check_range(ctx: Ctx, path: str, value: float | None, lo: float, hi: float) -> bool:
    if value is None or lo <= value <= hi:
        return True
    ctx.error(path, f"{value} is out of range [{lo:g}, {hi:g}]")
    return False


_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def check_duration(ctx: Ctx, path: str, value: str | None) -> bool:
    """A Go duration string (``90s``, ``1m30s``, ``500ms``)."""
    if value is None or value == "0" or _DURATION.match(value):
        return True
    ctx.error(path, f"invalid duration {value!r} (expected e.g. 90s, 1m30s, 500ms)")
    return False


def parse_duration(value: str) -> float:
    """Seconds in a Go duration string; raises ValueError when it is not one."""
    if value == "0":
        return 0.0
    if not _DURATION.match(value):
        raise ValueError(f"invalid duration {value!r}")
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    return sum(float(n) * units[u] for n, _, u in parts)


# --- shared by the policy and endpoint kinds ---------------------------------------------

#: Protocol names Calico's v3 API accepts (case-sensitive: ``tcp`` is invalid).
PROTOCOL_NAMES = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
_PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
_PORT_PROTOCOLS = frozenset({6, 17, 132})

#: Calico's ``name`` validator: a DNS-1123 subdomain (used for references to other resources).
NAME_HINT = "lower case alphanumerics, '-' or '.', starting and ending with an alphanumeric"


def protocol_number(value: int | str | None) -> int | None:
    """The IP protocol number of a Calico protocol value (``TCP``, ``6``, ``"6"``), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 255 else None
    if value.isdigit():
        n = int(value)
        return n if n <= 255 else None
    return _PROTOCOL_NUMBERS.get(value)


def canonical_protocol(value: int | str) -> int | str:
    """A protocol as Calico writes it back: digit strings become numbers, names stay names."""
    if isinstance(value, str) and value.isdigit() and int(value) <= 255:
        return int(value)
    return value


def protocol_problem(value: int | str) -> str | None:
    """Why ``value`` is not a valid Calico protocol (a name or a number 1-255), or None."""
    if isinstance(value, bool):
        return "protocol must be a name or a number"
    if isinstance(value, int) or value.isdigit():
        n = int(value)
        if n == 0 or n > 255:
            return f"protocol number {n} is invalid: must be 1-255"
        return None
    if value in PROTOCOL_NAMES:
        return None
    for name in PROTOCOL_NAMES:
        if name.lower() == value.lower():
            return f"invalid protocol {value!r}: protocol names are case-sensitive, use {name!r}"
    return f"invalid protocol {value!r}: must be one of {', '.join(PROTOCOL_NAMES)} or 1-255"


def check_protocol(ctx: Ctx, path: str, value: int | str | None) -> bool:
    if value is None:
        return True
    problem = protocol_problem(value)
    if problem:
        ctx.error(path, problem)
        return False
    return True


def protocol_supports_ports(value: int | str | None) -> bool:
    """Only TCP (6), UDP (17) and SCTP (132) have ports, as Calico's ``SupportsPorts``."""
    return protocol_number(value) in _PORT_PROTOCOLS


def port_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid named port (an IANA service name, as Kubernetes), or None."""
    if not name or len(name) > 15:
        return "must be 1-15 characters"
    if not re.fullmatch(r"[-a-z0-9]+", name):
        return "must contain only lower case alphanumerics and '-'"
    if not re.search(r"[a-z]", name):
        return "must contain at least one letter"
    if name.startswith("-") or name.endswith("-"):
        return "must not begin or end with '-'"
    if "--" in name:
        return "must not contain '--'"
    return None


def check_port_name(ctx: Ctx, path: str, name: str | None) -> bool:
    if name is None:
        return True
    problem = port_name_problem(name)
    if problem:
        ctx.error(path, f"invalid port name {name!r}: {problem}")
        return False
    return True


_PORT_RANGE = re.compile(r"^(\d+):(\d+)$")
_PORT_NAME_CHARS = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")


def parse_port(value: int | str) -> tuple[int, int, str]:
    """A rule port (``80``, ``"80"``, ``"80:90"`` or a named port) as (min, max, name).

    Raises ValueError with a reason a user can act on.
    """
    if isinstance(value, bool):
        raise ValueError("a port must be a number, a range \"min:max\" or a port name")
    if isinstance(value, int) or value.isdigit():
        n = int(value)
        if not 1 <= n <= 65535:
            raise ValueError(f"port {n} is out of range: must be 1-65535")
        return n, n, ""
    m = _PORT_RANGE.match(value)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        for n in (lo, hi):
            if not 1 <= n <= 65535:
                raise ValueError(f"port {n} in range {value} is out of range: must be 1-65535")
        if lo > hi:
            raise ValueError(f"port range {value} is reversed: the minimum must come first")
        return lo, hi, ""
    if not _PORT_NAME_CHARS.match(value):
        raise ValueError(
            f"invalid port {value!r}: expected a number, a range \"min:max\" or a port name"
        )
    problem = port_name_problem(value)
    if problem:
        raise ValueError(f"invalid port name {value!r}: {problem}")
    return 0, 0, value


def canonical_port(value: int | str) -> int | str:
    """A port as Calico writes it back: numbers as numbers, ``"80:80"`` as ``80``."""
    try:
        lo, hi, name = parse_port(value)
    except ValueError:
        return value
    if name:
        return name
    return lo if lo == hi else f"{lo}:{hi}"


def check_name_ref(ctx: Ctx, path: str, value: str | None) -> bool:
    """Calico's ``name`` validator for fields naming another object (node, tier, profile...)."""
    if value is None or value == "":
        return True
    if not is_dns1123_subdomain(value):
        ctx.error(path, f"invalid name {value!r}: must be {NAME_HINT}, at most 253 characters")
        return False
    return True


_INTERFACE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")


def check_interface_name(ctx: Ctx, path: str, value: str | None, wildcard: bool = True) -> bool:
    """A Linux interface name (1-15 of ``[a-zA-Z0-9_.-]``); ``*`` where ``wildcard``."""
    if value is None:
        return True
    if (wildcard and value == "*") or _INTERFACE.match(value):
        return True
    ctx.error(
        path,
        f"invalid interface name {value!r}: 1-15 letters, digits, '_', '.' or '-'"
        + (", or '*'" if wildcard else ""),
    )
    return False


_MAC = re.compile(
    r"^(?:[0-9a-fA-F]{2}(?P<sep>[:-])[0-9a-fA-F]{2}(?:(?P=sep)[0-9a-fA-F]{2})*"
    r"|[0-9a-fA-F]{4}(?:\.[0-9a-fA-F]{4})+)$"
)


def check_mac(ctx: Ctx, path: str, value: str | None) -> bool:
    """A MAC address as Go's ``net.ParseMAC`` accepts it (6, 8 or 20 octets)."""
    if value is None:
        return True
    ok = bool(_MAC.match(value))
    if ok:
        digits = re.sub(r"[^0-9a-fA-F]", "", value)
        ok = len(digits) // 2 in (6, 8, 20)
    if not ok:
        ctx.error(path, f"invalid MAC address {value!r} (expected e.g. ee:ee:ee:ee:ee:ee)")
    return ok


ANNOTATIONS_MAX_BYTES = 256 * 1024


def check_annotations(ctx: Ctx, path: str, annotations: Mapping[str, str] | None) -> bool:
    """Annotation keys are qualified names (checked lower-cased); 256 KiB in total at most."""
    ok = True
    total = 0
    for key, value in (annotations or {}).items():
        problem = label_key_problem(key.lower())
        if problem:
            ctx.error(f"{path}[{key}]", f"invalid annotation key {key!r}: {problem}")
            ok = False
        total += len(key.encode()) + len(value.encode())
    if total > ANNOTATIONS_MAX_BYTES:
        ctx.error(
            path,
            f"annotations are too large by {total - ANNOTATIONS_MAX_BYTES} bytes "
            f"(at most {ANNOTATIONS_MAX_BYTES} bytes in total)",
        )
        ok = False
    return ok


def check_unique(ctx: Ctx, path: str, values: list[str] | None) -> bool:
    """Lists Calico declares as sets reject duplicates; reports each repeat at its index."""
    seen: set[str] = set()
    ok = True
    for i, v in enumerate(values or []):
        if v in seen:
            ctx.error(f"{path}[{i}]", f"duplicate value {v!r}")
            ok = False
        seen.add(v)
    return ok


def check_max_items(ctx: Ctx, path: str, values: list | None, limit: int) -> bool:
    if values is not None and len(values) > limit:
        ctx.error(path, f"too many items: {len(values)} (at most {limit})")
        return False
    return True


def check_max_length(ctx: Ctx, path: str, value: str | None, limit: int) -> bool:
    if value is not None and len(value) > limit:
        ctx.error(path, f"too long: {len(value)} characters (at most {limit})")
        return False
    return True


def check_network(
    ctx: Ctx, path: str, value: str, *, masked: bool = True, prefix_required: bool = False
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A network as Calico's ``net``/``cidr`` validators accept it; returns it when valid.

    ``masked``: host bits must be zero (``10.0.0.0/24``, not ``10.0.0.1/24``).
    ``prefix_required``: a bare IP is not accepted (rule ``nets`` need the ``/len``).
    """
    if prefix_required and "/" not in value:
        ctx.error(path, f"invalid CIDR {value!r}: expected a network with a prefix length")
        return None
    if "%" in value:
        ctx.error(path, f"invalid CIDR {value!r}: zone identifiers are not allowed")
        return None
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        ctx.error(path, f"invalid CIDR {value!r}")
        return None
    if masked and ipaddress.ip_address(value.split("/", 1)[0]) != net.network_address:
        ctx.error(path, f"{value!r} has host bits set: did you mean {str(net)!r}?")
        return None
    return net


def is_label_value(value: str) -> bool:
    """A valid Kubernetes label value (empty, or at most 63 of ``[A-Za-z0-9_.-]``)."""
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))

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

"""Chain and IP set names, exactly as Calico's Felix spells them.

This module owns every ``cali-`` chain name and every ``cali4``/``cali6`` IP set name the
renderer emits, so users' habits (``iptables-save | grep cali-tw-``) and tools carry over.

- Per-object chains are ``<prefix><suffix>``; when that is longer than iptables' 28
  characters (or exactly 28 and the suffix starts with ``_``), the suffix becomes ``_`` plus
  the unpadded base64url SHA-256 of the suffix, cut to fit (Calico's
  ``hashutils.GetLengthLimitedID``). Policy suffixes are ``<tier>/<name>`` (namespaced
  policies: ``<tier>/<namespace>/<name>``), profile suffixes the profile name, endpoint
  suffixes the interface name.
- IP set names are ``cali40``/``cali60`` + the set ID, truncated to ipset's 31 characters
  (Calico's ``IPVersionConfig.NameForMainIPSet``); set IDs are secure hashes already.
"""

from __future__ import annotations

from tortie.felix.dataplane.iptables import MAX_CHAIN_NAME_LENGTH, chain_name
from tortie.felix.proto import PolicyID, ProfileID

MAX_IPSET_NAME_LENGTH = 31

CHAIN_PREFIX = "cali-"

# Top-level chains (one per table that uses them).
CHAIN_FILTER_INPUT = "cali-INPUT"
CHAIN_FILTER_FORWARD = "cali-FORWARD"
CHAIN_FILTER_OUTPUT = "cali-OUTPUT"
CHAIN_RAW_PREROUTING = "cali-PREROUTING"
CHAIN_RAW_OUTPUT = "cali-OUTPUT"
CHAIN_NAT_PREROUTING = "cali-PREROUTING"
CHAIN_NAT_POSTROUTING = "cali-POSTROUTING"
CHAIN_NAT_OUTPUT = "cali-OUTPUT"
CHAIN_MANGLE_PREROUTING = "cali-PREROUTING"
CHAIN_MANGLE_POSTROUTING = "cali-POSTROUTING"

CHAIN_FAILSAFE_IN = "cali-failsafe-in"
CHAIN_FAILSAFE_OUT = "cali-failsafe-out"
CHAIN_NAT_OUTGOING = "cali-nat-outgoing"
CHAIN_FIP_DNAT = "cali-fip-dnat"
CHAIN_FIP_SNAT = "cali-fip-snat"
CHAIN_RPF_SKIP = "cali-rpf-skip"

CHAIN_WORKLOAD_TO_HOST = "cali-wl-to-host"
CHAIN_FROM_WORKLOAD_DISPATCH = "cali-from-wl-dispatch"
CHAIN_TO_WORKLOAD_DISPATCH = "cali-to-wl-dispatch"
CHAIN_DISPATCH_TO_HOST_ENDPOINT = "cali-to-host-endpoint"
CHAIN_DISPATCH_FROM_HOST_ENDPOINT = "cali-from-host-endpoint"
CHAIN_DISPATCH_TO_HOST_ENDPOINT_FORWARD = "cali-to-hep-forward"
CHAIN_DISPATCH_FROM_HOST_ENDPOINT_FORWARD = "cali-from-hep-forward"

# Per-object chain prefixes.
POLICY_INBOUND_PREFIX = "cali-pi-"
POLICY_OUTBOUND_PREFIX = "cali-po-"
PROFILE_INBOUND_PREFIX = "cali-pri-"
PROFILE_OUTBOUND_PREFIX = "cali-pro-"
WORKLOAD_TO_ENDPOINT_PREFIX = "cali-tw-"
WORKLOAD_FROM_ENDPOINT_PREFIX = "cali-fw-"
HOST_TO_ENDPOINT_PREFIX = "cali-th-"
HOST_FROM_ENDPOINT_PREFIX = "cali-fh-"
HOST_TO_ENDPOINT_FORWARD_PREFIX = "cali-thfw-"
HOST_FROM_ENDPOINT_FORWARD_PREFIX = "cali-fhfw-"

# The interface name standing for a host endpoint with interfaceName "*": longer than
# IFNAMSIZ, so it can never be a real interface (Calico's endpoint manager).
ALL_INTERFACES = "any-interface-at-all"

# IP set IDs Felix itself owns (the calculation graph's sets have "s:"/"n:" IDs).
IPSET_ID_ALL_POOLS = "all-ipam-pools"
IPSET_ID_MASQ_POOLS = "masq-ipam-pools"
IPSET_ID_ALL_HOST_NETS = "all-hosts-net"
IPSET_ID_ALL_VXLAN_SOURCE_NETS = "all-vxlan-net"


def length_limited_id(prefix: str, suffix: str, max_length: int = MAX_CHAIN_NAME_LENGTH) -> str:
    """``prefix + suffix``, or ``prefix + "_" + hash(suffix)`` cut to ``max_length``.

    The iptables module's :func:`chain_name` implements Calico's ``GetLengthLimitedID``.
    """
    return chain_name(prefix, suffix, max_length)


def policy_chain_name(prefix: str, policy_id: PolicyID) -> str:
    """``cali-pi-<tier>/<name>`` / ``cali-po-…``, hashed when too long."""
    return length_limited_id(prefix, f"{policy_id.tier}/{policy_id.name}")


def profile_chain_name(prefix: str, profile_id: ProfileID) -> str:
    """``cali-pri-<profile>`` / ``cali-pro-…``, hashed when too long."""
    return length_limited_id(prefix, profile_id.name)


def endpoint_chain_name(prefix: str, iface: str) -> str:
    """``cali-tw-<iface>``, ``cali-fh-<iface>`` …, hashed when too long."""
    return length_limited_id(prefix, iface)


def host_endpoint_iface(interface_name: str) -> str:
    """The name host endpoint chains use: the interface, or ``any-interface-at-all``."""
    return ALL_INTERFACES if interface_name == "*" else interface_name


def ipset_name(set_id: str, ip_version: int = 4) -> str:
    """``cali40s:…`` / ``cali60n:…`` / ``cali40all-ipam-pools``, at most 31 characters."""
    prefix = "cali40" if ip_version == 4 else "cali60"
    return (prefix + set_id)[:MAX_IPSET_NAME_LENGTH]

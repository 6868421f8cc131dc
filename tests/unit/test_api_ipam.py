"""IPPool, IPReservation and IPAMConfiguration: Calico's fields, defaults and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from tortie.api import FieldError, Resource, ValidationError, load, lookup, validate
from tortie.api.kinds.ipam import (
    IPAMConfigurationSpec,
    IPPool,
    IPPoolSpec,
    IPReservationSpec,
    overlapping_pool,
    pool_update_errors,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def doc(kind: str, spec: dict[str, Any] | None, name: str = "p1") -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
    }
    if spec is not None:
        body["spec"] = spec
    return body


def pool(spec: dict[str, Any], name: str = "p1") -> IPPool:
    res = validate(doc("IPPool", spec, name))
    assert isinstance(res, IPPool)
    return res


def errors_of(kind: str, spec: dict[str, Any] | None, name: str = "p1") -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        validate(doc(kind, spec, name))
    return info.value.errors


def assert_error(
    kind: str, spec: dict[str, Any] | None, path: str, reason: str, name: str = "p1"
) -> None:
    errors = errors_of(kind, spec, name)
    assert any(e.path == path and reason in e.reason for e in errors), errors


def round_trips(res: Resource) -> None:
    first = res.to_dict()
    assert validate(first).to_dict() == first


def encode_names(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


# --- JSON names, checked against Calico's Go json tags (api/pkg/apis/projectcalico/v3) --------


def test_ippool_json_names_match_calico() -> None:
    # ippool.go IPPoolSpec, less the APIv1-only "ipip" and "nat-outgoing" that Calico rejects.
    calico = {
        "cidr", "vxlanMode", "ipipMode", "natOutgoing", "disabled", "disableBGPExport",
        "blockSize", "nodeSelector", "namespaceSelector", "allowedUses", "assignmentMode",
    }  # fmt: skip
    assert encode_names(IPPoolSpec) == calico


def test_ipreservation_and_ipamconfig_json_names_match_calico() -> None:
    assert encode_names(IPReservationSpec) == {"reservedCIDRs"}
    assert encode_names(IPAMConfigurationSpec) == {
        "strictAffinity",
        "maxBlocksPerHost",
        "autoAllocateBlocks",
        "minIPReclaimAgeSeconds",
        "kubeVirtVMAddressPersistence",
    }


# --- IPPool defaults ---------------------------------------------------------------------------


def test_minimal_ipv4_pool_gets_calicos_defaults() -> None:
    res = pool({"cidr": "10.244.0.0/16"})
    assert res.to_dict()["spec"] == {
        "cidr": "10.244.0.0/16",
        "blockSize": 26,
        "ipipMode": "Never",
        "vxlanMode": "Never",
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
    }


def test_minimal_ipv6_pool_defaults_to_122_blocks() -> None:
    res = pool({"cidr": "fd00:10:244::/48"})
    assert res.spec.block_size == 122
    assert res.spec.ipip_mode == "Never"


def test_cidr_is_normalised_to_its_network() -> None:
    assert pool({"cidr": "10.244.7.9/16"}).spec.cidr == "10.244.0.0/16"
    assert pool({"cidr": "FD00:10:244:0:0::/48"}).spec.cidr == "fd00:10:244::/48"


def test_empty_strings_and_zero_mean_unset() -> None:
    spec = {"cidr": "10.1.0.0/16", "blockSize": 0, "ipipMode": "", "nodeSelector": ""}
    res = pool(spec)
    assert res.spec.block_size == 26
    assert res.spec.ipip_mode == "Never"
    assert res.spec.node_selector == "all()"


def test_false_booleans_are_omitted_like_go_omitempty() -> None:
    spec = pool({"cidr": "10.1.0.0/16", "natOutgoing": False, "disabled": False}).to_dict()["spec"]
    assert "natOutgoing" not in spec and "disabled" not in spec


def test_full_pool_round_trips() -> None:
    res = pool(
        {
            "cidr": "10.1.0.0/16",
            "blockSize": 28,
            "vxlanMode": "Always",
            "natOutgoing": True,
            "disableBGPExport": True,
            "nodeSelector": "zone == 'a'",
            "namespaceSelector": "team == 'red'",
            "allowedUses": ["Workload"],
            "assignmentMode": "Manual",
        }
    )
    assert res.spec.disable_bgp_export is True
    round_trips(res)


# --- IPPool validation -------------------------------------------------------------------------


def test_cidr_is_required() -> None:
    assert_error("IPPool", {}, "spec.cidr", "required field is missing")
    assert_error("IPPool", {"cidr": ""}, "spec.cidr", "must be specified")
    assert_error("IPPool", None, "spec", "required field is missing")


@pytest.mark.parametrize(
    "cidr", ["10.0.0.1", "not-a-cidr", "10.0.0.0/33", "300.0.0.0/8", "10.0.0.0/255.0.0.0"]
)
def test_cidr_must_be_a_subnet(cidr: str) -> None:
    assert_error("IPPool", {"cidr": cidr}, "spec.cidr", "expected a subnet")


@pytest.mark.parametrize(
    ("cidr", "size", "reason"),
    [
        ("10.0.0.0/16", 19, "IPv4 block size must be between 20 and 32"),
        ("10.0.0.0/16", 33, "IPv4 block size must be between 20 and 32"),
        ("fd00::/48", 115, "IPv6 block size must be between 116 and 128"),
        ("fd00::/48", 129, "IPv6 block size must be between 116 and 128"),
    ],
)
def test_block_size_ranges(cidr: str, size: int, reason: str) -> None:
    assert_error("IPPool", {"cidr": cidr, "blockSize": size}, "spec.blockSize", reason)


@pytest.mark.parametrize(("cidr", "size"), [("10.0.0.0/8", 20), ("10.0.0.0/8", 32)])
def test_block_size_bounds_accepted(cidr: str, size: int) -> None:
    assert pool({"cidr": cidr, "blockSize": size}).spec.block_size == size


def test_enabled_pool_must_hold_a_block() -> None:
    assert_error("IPPool", {"cidr": "10.0.0.0/28"}, "spec.cidr", "smaller than one /26 block")
    # A disabled pool may be smaller (Calico only checks enabled pools).
    assert pool({"cidr": "10.0.0.0/28", "disabled": True}).spec.disabled
    assert pool({"cidr": "10.0.0.0/28", "blockSize": 28}).spec.block_size == 28


@pytest.mark.parametrize("cidr", ["169.254.0.0/16", "169.254.10.0/24", "168.0.0.0/6", "fe80::/64"])
def test_link_local_overlap_rejected(cidr: str) -> None:
    spec = {"cidr": cidr, "blockSize": 32 if ":" not in cidr else 128}
    assert_error("IPPool", spec, "spec.cidr", "link-local range")


@pytest.mark.parametrize("field", ["ipipMode", "vxlanMode"])
def test_encap_modes_are_enums(field: str) -> None:
    assert_error("IPPool", {"cidr": "10.0.0.0/16", field: "always"}, f"spec.{field}", "not one of")


@pytest.mark.parametrize("modes", [("Always", "Always"), ("CrossSubnet", "Always")])
def test_ipip_and_vxlan_cannot_both_be_enabled(modes: tuple[str, str]) -> None:
    spec = {"cidr": "10.0.0.0/16", "ipipMode": modes[0], "vxlanMode": modes[1]}
    assert_error("IPPool", spec, "spec.vxlanMode", "cannot enable both VXLAN and IPIP")


def test_one_encapsulation_with_never_is_fine() -> None:
    res = pool({"cidr": "10.0.0.0/16", "ipipMode": "CrossSubnet", "vxlanMode": "Never"})
    assert res.spec.ipip_mode == "CrossSubnet"


def test_ipip_is_ipv4_only() -> None:
    assert_error(
        "IPPool", {"cidr": "fd00::/48", "ipipMode": "Always"}, "spec.ipipMode", "IPv6 pool"
    )
    assert pool({"cidr": "fd00::/48", "vxlanMode": "Always"}).spec.vxlan_mode == "Always"


def test_allowed_uses() -> None:
    assert_error(
        "IPPool",
        {"cidr": "10.0.0.0/16", "allowedUses": ["Workload", "Bogus"]},
        "spec.allowedUses[1]",
        "not one of Workload, Tunnel, LoadBalancer",
    )
    assert_error(
        "IPPool",
        {"cidr": "10.0.0.0/16", "allowedUses": ["Tunnel", "Tunnel"]},
        "spec.allowedUses",
        "only once",
    )


def test_load_balancer_pool_rules() -> None:
    lb = {"cidr": "10.9.0.0/16", "allowedUses": ["LoadBalancer"]}
    assert pool(lb).spec.is_load_balancer
    assert_error(
        "IPPool",
        {**lb, "allowedUses": ["LoadBalancer", "Workload"]},
        "spec.allowedUses",
        "cannot be used at the same time as: Workload",
    )
    assert_error("IPPool", {**lb, "vxlanMode": "Always"}, "spec.vxlanMode", "cannot use IPIP or")
    assert_error("IPPool", {**lb, "disableBGPExport": True}, "spec.disableBGPExport", "exported")
    assert_error("IPPool", {**lb, "nodeSelector": "a == 'b'"}, "spec.nodeSelector", "all()")


def test_assignment_mode_enum() -> None:
    assert_error(
        "IPPool",
        {"cidr": "10.0.0.0/16", "assignmentMode": "Auto"},
        "spec.assignmentMode",
        "not one of Automatic, Manual",
    )


@pytest.mark.parametrize("field", ["nodeSelector", "namespaceSelector"])
def test_selectors_must_parse(field: str) -> None:
    assert_error(
        "IPPool", {"cidr": "10.0.0.0/16", field: "a =="}, f"spec.{field}", "invalid selector"
    )


def test_unknown_fields_rejected() -> None:
    assert_error(
        "IPPool", {"cidr": "10.0.0.0/16", "natoutgoing": True}, "spec.natoutgoing", "unknown"
    )
    # APIv1 leftovers Calico refuses.
    assert_error(
        "IPPool", {"cidr": "10.0.0.0/16", "nat-outgoing": True}, "spec.nat-outgoing", "unknown"
    )
    assert_error("IPPool", {"cidr": "10.0.0.0/16", "ipip": {}}, "spec.ipip", "unknown")


def test_wrong_types_name_the_field() -> None:
    assert_error(
        "IPPool", {"cidr": "10.0.0.0/16", "blockSize": "26"}, "spec.blockSize", "an integer"
    )


def test_status_conditions_are_kept() -> None:
    body = doc("IPPool", {"cidr": "10.0.0.0/16"})
    body["status"] = {"conditions": [{"type": "Allocatable", "status": "True"}]}
    res = validate(body)
    assert res.to_dict()["status"]["conditions"][0]["type"] == "Allocatable"


# --- pools against other pools -----------------------------------------------------------------


def test_overlapping_pool() -> None:
    a = pool({"cidr": "10.0.0.0/16"}, "a")
    b = pool({"cidr": "10.0.128.0/20"}, "b")
    c = pool({"cidr": "10.1.0.0/16"}, "c")
    v6 = pool({"cidr": "fd00::/48"}, "v6")
    assert overlapping_pool(b, [a, c, v6]) is a
    assert overlapping_pool(c, [a, b, v6]) is None
    assert overlapping_pool(a, [a]) is None  # itself


def test_pool_update_errors() -> None:
    old = pool({"cidr": "10.0.0.0/16"})
    assert pool_update_errors(old, pool({"cidr": "10.0.0.0/16", "natOutgoing": True})) == []
    # Same network written differently is not a change.
    assert pool_update_errors(old, pool({"cidr": "10.0.3.4/16"})) == []
    paths = [
        e.path for e in pool_update_errors(old, pool({"cidr": "10.1.0.0/16", "blockSize": 24}))
    ]
    assert paths == ["spec.cidr", "spec.blockSize"]
    lb = pool({"cidr": "10.9.0.0/16", "allowedUses": ["LoadBalancer"]})
    changed = pool({"cidr": "10.9.0.0/16", "allowedUses": ["Workload"]})
    assert [e.path for e in pool_update_errors(lb, changed)] == ["spec.allowedUses"]


# --- IPReservation -----------------------------------------------------------------------------


def test_ipreservation_valid_and_round_trips() -> None:
    res = validate(doc("IPReservation", {"reservedCIDRs": ["10.0.0.0/28", "10.0.1.7", "fd00::1"]}))
    assert res.spec.reserved_cidrs == ["10.0.0.0/28", "10.0.1.7", "fd00::1"]  # type: ignore[attr-defined]
    round_trips(res)


def test_ipreservation_bad_cidr_named_by_index() -> None:
    assert_error(
        "IPReservation",
        {"reservedCIDRs": ["10.0.0.0/28", "10.0.0.300"]},
        "spec.reservedCIDRs[1]",
        "invalid CIDR",
    )
    assert_error("IPReservation", {"reservedCidrs": []}, "spec.reservedCidrs", "unknown field")


# --- IPAMConfiguration -------------------------------------------------------------------------


def test_ipamconfig_defaults_always_written() -> None:
    res = validate(doc("IPAMConfiguration", None, "default"))
    assert res.to_dict()["spec"] == {"strictAffinity": False, "autoAllocateBlocks": True}
    round_trips(res)


def test_ipamconfig_fields() -> None:
    spec = {
        "strictAffinity": True,
        "autoAllocateBlocks": False,
        "maxBlocksPerHost": 4,
        "minIPReclaimAgeSeconds": 60,
        "kubeVirtVMAddressPersistence": "Disabled",
    }
    res = validate(doc("IPAMConfiguration", spec, "default"))
    assert res.to_dict()["spec"] == spec


def test_ipamconfig_must_be_named_default() -> None:
    assert_error("IPAMConfiguration", {}, "metadata.name", "must be named 'default'", name="ipam")


@pytest.mark.parametrize("value", [-1, 1_000_001])
def test_ipamconfig_max_blocks_per_host_range(value: int) -> None:
    assert_error(
        "IPAMConfiguration",
        {"maxBlocksPerHost": value},
        "spec.maxBlocksPerHost",
        "between 0 and 1000000",
        name="default",
    )


def test_ipamconfig_kubevirt_enum() -> None:
    assert_error(
        "IPAMConfiguration",
        {"kubeVirtVMAddressPersistence": "On"},
        "spec.kubeVirtVMAddressPersistence",
        "not one of Enabled, Disabled",
        name="default",
    )


# --- registry: names and columns ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "kind"),
    [
        ("ippool", "IPPool"),
        ("ippools", "IPPool"),
        ("ipp", "IPPool"),
        ("ipps", "IPPool"),
        ("pool", "IPPool"),
        ("pools", "IPPool"),
        ("IPPool", "IPPool"),
        ("ipreservation", "IPReservation"),
        ("reservations", "IPReservation"),
        ("ipamconfig", "IPAMConfiguration"),
        ("ipamconfigurations", "IPAMConfiguration"),
    ],
)
def test_calicoctl_names(alias: str, kind: str) -> None:
    info = lookup(alias)
    assert info is not None and info.kind == kind


def test_ippool_columns() -> None:
    info = lookup("ippool")
    assert info is not None
    res = pool({"cidr": "10.0.0.0/16", "natOutgoing": True})
    assert [h for h, _ in info.columns] == ["NAME", "CIDR", "SELECTOR"]
    assert [(h, get(res)) for h, get in info.wide_columns] == [
        ("NAME", "p1"),
        ("CIDR", "10.0.0.0/16"),
        ("NAT", "true"),
        ("IPIPMODE", "Never"),
        ("VXLANMODE", "Never"),
        ("DISABLED", "false"),
        ("DISABLEBGPEXPORT", "false"),
        ("SELECTOR", "all()"),
    ]


def test_ipreservation_and_ipamconfig_columns() -> None:
    info = lookup("ipreservation")
    assert info is not None
    res = validate(doc("IPReservation", {"reservedCIDRs": ["10.0.0.0/28", "10.0.1.7"]}))
    assert [(h, get(res)) for h, get in info.wide_columns] == [
        ("NAME", "p1"),
        ("CIDRS", "10.0.0.0/28,10.0.1.7"),
    ]
    info = lookup("ipamconfig")
    assert info is not None
    cfg = validate(doc("IPAMConfiguration", None, "default"))
    assert [(h, get(cfg)) for h, get in info.wide_columns] == [
        ("NAME", "default"),
        ("STRICTAFFINITY", "false"),
        ("AUTOALLOCATEBLOCKS", "true"),
        ("MAXBLOCKSPERHOST", "0"),
    ]


# --- examples ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ippool", "ipreservation", "ipamconfiguration"])
def test_examples_are_valid_and_round_trip(name: str) -> None:
    (res,) = load((EXAMPLES / f"{name}.yaml").read_text())
    round_trips(res)

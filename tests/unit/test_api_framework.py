"""The resource framework: load/validate/to_dict/dump, List kinds, documents and error paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tortie.api import (
    API_VERSION,
    FieldError,
    ValidationError,
    all_kinds,
    dump,
    load,
    lookup,
    parse_documents,
    to_json,
    validate,
)

GNP = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-dns
spec:
  order: 10
  selector: all()
  egress:
  - action: Allow
    protocol: UDP
    destination:
      ports: [53]
"""

NETSET = """\
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata:
  name: partners
  namespace: dev
spec:
  nets: [198.51.100.0/24]
"""


def load_errors(text: str) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        load(text)
    return info.value.errors


# --- input forms -------------------------------------------------------------------------------


def test_single_yaml_document() -> None:
    (r,) = load(GNP)
    assert r.KIND == "GlobalNetworkPolicy"
    assert r.name == "allow-dns"


def test_multi_document_yaml_skips_empty_documents() -> None:
    resources = load("---\n" + GNP + "---\n---\n" + NETSET + "...\n")
    assert [r.ref for r in resources] == ["GlobalNetworkPolicy(allow-dns)",
                                          "NetworkSet(dev/partners)"]


def test_json_object_and_array() -> None:
    doc = yaml.safe_load(GNP)
    (one,) = load(json.dumps(doc))
    both = load(json.dumps([doc, yaml.safe_load(NETSET)]))
    assert one.to_dict() == both[0].to_dict()
    assert len(both) == 2


@pytest.mark.parametrize("list_kind", ["List", "GlobalNetworkPolicyList"])
def test_list_kinds_expand(list_kind: str) -> None:
    text = json.dumps({"apiVersion": API_VERSION, "kind": list_kind,
                       "items": [yaml.safe_load(GNP), yaml.safe_load(GNP)]})
    assert len(load(text)) == 2


def test_list_items_must_be_a_sequence() -> None:
    with pytest.raises(ValidationError) as info:
        parse_documents('{"kind": "List", "items": {"a": 1}}')
    assert info.value.errors[0].path == "items"


def test_dump_output_loads_back() -> None:
    resources = load(GNP + "---\n" + NETSET)
    for fmt in ("yaml", "json"):
        text = dump(resources, fmt)
        assert [r.to_dict() for r in load(text)] == [r.to_dict() for r in resources]
    single = yaml.safe_load(dump(resources[:1]))
    assert single["kind"] == "GlobalNetworkPolicy"
    listed = yaml.safe_load(dump(resources))
    assert listed["kind"] == "List" and len(listed["items"]) == 2


def test_to_dict_shape_and_numbers() -> None:
    (r,) = load(GNP)
    out = r.to_dict()
    assert list(out) == ["apiVersion", "kind", "metadata", "spec"]
    assert out["apiVersion"] == API_VERSION
    assert out["spec"]["order"] == 10 and isinstance(out["spec"]["order"], int)
    assert json.loads(to_json(out)) == out


def test_timestamps_stay_strings() -> None:
    text = GNP.replace("  name: allow-dns\n",
                       "  name: allow-dns\n  creationTimestamp: 2024-01-02T03:04:05Z\n")
    (r,) = load(text)
    assert r.metadata.creation_timestamp == "2024-01-02T03:04:05Z"
    assert r.to_dict()["metadata"]["creationTimestamp"] == "2024-01-02T03:04:05Z"


def test_copy_is_independent() -> None:
    (r,) = load(GNP)
    c = r.copy()
    c.spec.selector = "x == 'y'"  # type: ignore[attr-defined]
    assert r.spec.selector == "all()"  # type: ignore[attr-defined]


# --- error paths -------------------------------------------------------------------------------


def test_not_yaml() -> None:
    found = load_errors("a: [1, 2\nb: {")
    assert found[0].path == "" and "not valid YAML or JSON" in found[0].reason


def test_document_not_a_mapping() -> None:
    found = load_errors("- 1\n- 2\n")
    assert found[0].path == "" and "expected a resource" in found[0].reason


def test_unknown_kind_and_api_version() -> None:
    found = load_errors("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    assert {e.path for e in found} == {"apiVersion", "kind"}
    assert "expected 'projectcalico.org/v3'" in found[0].reason


def test_errors_in_several_documents_are_numbered() -> None:
    bad = GNP.replace("protocol: UDP", "protocol: udp")
    found = load_errors(bad + "---\n" + NETSET + "---\n" + NETSET.replace("198.51", "998.51"))
    assert [(e.document, e.path) for e in found] == [
        (1, "spec.egress[0].protocol"), (3, "spec.nets[0]")]
    assert str(found[1]).startswith("document 3: spec.nets[0]: invalid CIDR")


def test_single_document_errors_carry_no_number() -> None:
    found = load_errors(GNP.replace("protocol: UDP", "protocol: udp"))
    assert found[0].document is None
    assert str(found[0]) == ("spec.egress[0].protocol: invalid protocol 'udp': protocol names "
                             "are case-sensitive, use 'UDP'")


def test_unknown_fields_everywhere() -> None:
    assert load_errors(GNP + "status: {}\n")[0].path == "status"
    assert load_errors(GNP.replace("  name: allow-dns", "  name: allow-dns\n  nmae: x"))[0] \
        .path == "metadata.nmae"
    assert load_errors(GNP.replace("  order: 10", "  ordr: 10"))[0].path == "spec.ordr"


def test_wrong_types_report_the_path() -> None:
    found = load_errors(GNP.replace("order: 10", "order: first"))
    assert found[0].path == "spec.order"
    assert "expected a number" in found[0].reason
    found = load_errors(GNP.replace("selector: all()", "selector: [a]"))
    assert found[0].path == "spec.selector"


def test_validation_error_message_lists_every_problem() -> None:
    with pytest.raises(ValidationError) as info:
        validate({"apiVersion": API_VERSION, "kind": "NetworkSet",
                  "metadata": {"name": "Bad"}, "spec": {"nets": ["x"]}})
    text = str(info.value)
    assert "metadata.name" in text and "metadata.namespace" in text and "spec.nets[0]" in text


def test_metadata_labels_and_annotations_are_checked() -> None:
    doc: dict[str, Any] = yaml.safe_load(GNP)
    doc["metadata"]["labels"] = {"ok/key": "fine", "bad key": "v", "k": "bad value!"}
    doc["metadata"]["annotations"] = {"example.com/note": "any text at all", "no good": "x"}
    with pytest.raises(ValidationError) as info:
        validate(doc)
    assert {e.path for e in info.value.errors} == {
        "metadata.labels[bad key]", "metadata.labels[k]", "metadata.annotations[no good]"}


# --- registry ----------------------------------------------------------------------------------

POLICY_SIDE = {
    "GlobalNetworkPolicy": ("globalnetworkpolicies", False),
    "NetworkPolicy": ("networkpolicies", True),
    "StagedGlobalNetworkPolicy": ("stagedglobalnetworkpolicies", False),
    "StagedNetworkPolicy": ("stagednetworkpolicies", True),
    "StagedKubernetesNetworkPolicy": ("stagedkubernetesnetworkpolicies", True),
    "Profile": ("profiles", False),
    "HostEndpoint": ("hostendpoints", False),
    "WorkloadEndpoint": ("workloadendpoints", True),
    "NetworkSet": ("networksets", True),
    "GlobalNetworkSet": ("globalnetworksets", False),
    "Tier": ("tiers", False),
}


def test_policy_side_kinds_registered() -> None:
    kinds = all_kinds()
    for kind, (plural, namespaced) in POLICY_SIDE.items():
        info = kinds[kind]
        assert (info.plural, info.namespaced, info.cls.NAMESPACED) == (plural, namespaced,
                                                                       namespaced)
        assert lookup(kind.lower()) is info and lookup(plural) is info and lookup(kind) is info


def test_lookup_unknown() -> None:
    assert lookup("nosuchkind") is None


# --- the examples --------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POLICY_EXAMPLES = [
    "globalnetworkpolicy", "networkpolicy", "stagedglobalnetworkpolicy", "stagednetworkpolicy",
    "stagedkubernetesnetworkpolicy", "tier", "profile", "hostendpoint", "workloadendpoint",
    "networkset", "globalnetworkset",
]


@pytest.mark.parametrize("stem", POLICY_EXAMPLES)
def test_examples_are_valid(stem: str) -> None:
    (r,) = load((EXAMPLES / f"{stem}.yaml").read_text())
    assert r.KIND.lower() == stem
    if r.NAMESPACED:
        assert r.namespace in ("default", "dev")
    again = validate(json.loads(json.dumps(r.to_dict())))
    assert again.to_dict() == r.to_dict()


def test_unquoted_port_ranges_are_not_base_60_numbers() -> None:
    (doc,) = parse_documents("ports: [1000:1050, 80:90, 1:2:3, 8080, 0x10, 1.5]\n")
    assert doc["ports"] == ["1000:1050", "80:90", "1:2:3", 8080, 16, 1.5]
    text = GNP.replace("ports: [53]", "ports: [53, 1000:1050]")
    (r,) = load(text)
    assert r.to_dict()["spec"]["egress"][0]["destination"]["ports"] == [53, "1000:1050"]

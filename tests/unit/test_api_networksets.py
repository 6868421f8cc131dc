"""NetworkSet and GlobalNetworkSet."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tortie.api import FieldError, ValidationError, load, lookup, validate
from tortie.api.kinds.networksets import GlobalNetworkSet, NetworkSet

API = "projectcalico.org/v3"


def netset(nets: list[str] | None = None, kind: str = "NetworkSet", name: str = "partners",
           namespace: str | None = "dev", labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels is not None:
        meta["labels"] = labels
    spec = {} if nets is None else {"nets": nets}
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}


def gns(nets: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    return netset(nets, kind="GlobalNetworkSet", namespace=None, **kw)


def errors(doc: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        validate(doc)
    return info.value.errors


def assert_error(doc: dict[str, Any], path: str, fragment: str) -> None:
    found = errors(doc)
    assert any(e.path == path and fragment in e.reason for e in found), found


def test_networkset_valid() -> None:
    r = validate(netset(["10.0.0.0/8", "192.168.1.7", "fd00::/64", "10.1.2.3/16"],
                        labels={"role": "partner"}))
    assert isinstance(r, NetworkSet)
    out = r.to_dict()
    assert out["spec"]["nets"] == ["10.0.0.0/8", "192.168.1.7", "fd00::/64", "10.1.2.3/16"]
    assert out["metadata"] == {"name": "partners", "namespace": "dev",
                               "labels": {"role": "partner"}}
    assert validate(copy.deepcopy(out)).to_dict() == out


def test_globalnetworkset_valid_without_namespace() -> None:
    r = validate(gns(["203.0.113.0/24"]))
    assert isinstance(r, GlobalNetworkSet)
    assert r.to_dict()["spec"] == {"nets": ["203.0.113.0/24"]}


def test_empty_sets_are_valid() -> None:
    assert validate(netset()).to_dict()["spec"] == {}
    assert validate(gns([])).to_dict()["spec"] == {}


@pytest.mark.parametrize("doc_fn", [netset, gns])
@pytest.mark.parametrize(
    ("nets", "path", "fragment"),
    [
        (["10.0.0.0/33"], "spec.nets[0]", "invalid CIDR"),
        (["10.0.0.0/8", "bogus"], "spec.nets[1]", "invalid CIDR"),
        (["10.0.0.0/8", "10.0.0.0/8"], "spec.nets[1]", "duplicate value"),
        (["fe80::1%eth0"], "spec.nets[0]", "zone identifiers"),
    ],
)
def test_bad_nets(doc_fn: Any, nets: list[str], path: str, fragment: str) -> None:
    assert_error(doc_fn(nets), path, fragment)


def test_networkset_needs_namespace() -> None:
    assert_error(netset(namespace=None), "metadata.namespace", "namespace is required")


def test_reserved_namespace_label() -> None:
    for doc in (netset(labels={"projectcalico.org/namespace": "dev"}),
                gns(labels={"projectcalico.org/namespace": "dev"})):
        assert_error(doc, "metadata.labels[projectcalico.org/namespace]",
                     "is not a valid label name")


def test_bad_names_and_labels() -> None:
    assert_error(gns(name="Bad_Name"), "metadata.name", "invalid name")
    assert_error(netset(labels={"bad key": "x"}), "metadata.labels[bad key]",
                 "invalid label key")


def test_enterprise_only_fields_rejected() -> None:
    doc = gns(["10.0.0.0/8"])
    doc["spec"]["allowedEgressDomains"] = ["example.com"]
    assert_error(doc, "spec.allowedEgressDomains", "unknown field")


def test_yaml_and_json_agree() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: blocklist
  labels: {threat-feed: blocklist}
spec:
  nets: [192.0.2.0/24, 198.18.0.0/15]
"""
    (r,) = load(text)
    (again,) = load(json.dumps(r.to_dict()))
    assert r.to_dict() == again.to_dict()


def test_names_and_columns_as_calicoctl() -> None:
    for alias in ("networkset", "networksets", "netsets", "netset", "NetworkSet"):
        info = lookup(alias)
        assert info is not None and info.kind == "NetworkSet" and info.namespaced
    info = lookup("globalnetworksets")
    assert info is not None and info.kind == "GlobalNetworkSet" and not info.namespaced
    many = [f"10.0.{i}.0/24" for i in range(20)]
    r = validate(gns(many))
    assert [h for h, _ in info.columns] == ["NAME"]
    nets = dict(info.wide_columns)["NETS"](r)
    assert len(nets) == 80 and nets.endswith("...")
    assert dict(info.wide_columns)["NETS"](validate(gns(["10.0.0.0/8"]))) == "10.0.0.0/8"

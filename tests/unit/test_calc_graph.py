"""The calculation graph: sequences of resource updates → the dataplane messages they cause."""

from __future__ import annotations

from typing import Any

from tortie.api import validate
from tortie.felix import proto
from tortie.felix.calc.graph import CalcGraph
from tortie.selector import parse

HOST = "node1"


def res(
    kind: str,
    name: str,
    spec: dict[str, Any],
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
) -> Any:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return validate(
        {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}
    )


def wep(
    pod: str,
    ip: str,
    labels: dict[str, str],
    node: str = HOST,
    ns: str = "default",
    profiles: list[str] | None = None,
    ports: list[dict] | None = None,
) -> tuple[str, Any]:
    name = f"{node}-k8s-{pod}-eth0"
    spec: dict[str, Any] = {
        "orchestrator": "k8s",
        "node": node,
        "pod": pod,
        "endpoint": "eth0",
        "ipNetworks": [f"{ip}/32"],
        "interfaceName": f"cali{pod[:11]}",
        "profiles": profiles or [],
    }
    if ports:
        spec["ports"] = ports
    return f"{ns}/{name}", res("WorkloadEndpoint", name, spec, ns, labels)


class Recorder:
    def __init__(self) -> None:
        self.msgs: list[proto.Message] = []
        self.graph = CalcGraph(HOST, self.msgs.append)

    def put(self, kind: str, key: str, resource: Any) -> None:
        self.graph.on_resource(kind, key, resource)

    def flush(self) -> list[proto.Message]:
        self.graph.flush()
        out, self.msgs[:] = list(self.msgs), []
        return out


def of(msgs: list[proto.Message], cls: type) -> list[Any]:
    return [m for m in msgs if isinstance(m, cls)]


def gnp(name: str, spec: dict[str, Any]) -> Any:
    return res("GlobalNetworkPolicy", name, spec)


def test_policy_activation_ipsets_and_endpoint_tiers() -> None:
    r = Recorder()
    r.put("WorkloadEndpoint", *wep("web", "10.0.0.1", {"app": "web"}))
    r.put("WorkloadEndpoint", *wep("db", "10.0.1.1", {"app": "db"}, node="node2"))
    r.put("WorkloadEndpoint", *wep("db2", "10.0.1.2", {"app": "db"}, node="node2"))
    msgs = r.flush()
    # one local endpoint, no policy: it is sent with no tiers (fail closed in the dataplane)
    eps = of(msgs, proto.WorkloadEndpointUpdate)
    assert [e.endpoint.name for e in eps] == ["node1-k8s-web-eth0"]
    assert eps[0].endpoint.tiers == ()
    assert eps[0].endpoint.ipv4_nets == ("10.0.0.1/32",)

    r.put(
        "GlobalNetworkPolicy",
        "allow-db",
        gnp(
            "allow-db",
            {
                "selector": 'app == "web"',
                "egress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "destination": {"selector": 'app == "db"', "ports": [5432]},
                    }
                ],
            },
        ),
    )
    msgs = r.flush()
    sel_id = parse('app == "db"').unique_id
    sets = of(msgs, proto.IPSetUpdate)
    assert [(s.id, s.members) for s in sets] == [(sel_id, frozenset({"10.0.1.1", "10.0.1.2"}))]
    (pol,) = of(msgs, proto.ActivePolicyUpdate)
    assert pol.id == proto.PolicyID("default", "allow-db")
    assert pol.policy.outbound_rules[0].dst_ipset_ids == (sel_id,)
    assert pol.policy.outbound_rules[0].dst_ports == (proto.PortRange(5432, 5432),)
    (ep,) = of(msgs, proto.WorkloadEndpointUpdate)
    assert ep.endpoint.tiers == (
        proto.TierInfo("default", "Deny", (), (proto.PolicyID("default", "allow-db"),)),
    )
    # the message order lets the dataplane apply directly: sets, policies, endpoints
    kinds = [type(m) for m in msgs]
    assert kinds.index(proto.IPSetUpdate) < kinds.index(proto.ActivePolicyUpdate)
    assert kinds.index(proto.ActivePolicyUpdate) < kinds.index(proto.WorkloadEndpointUpdate)

    # a remote label change leaves the set: a delta, nothing else
    r.put("WorkloadEndpoint", *wep("db2", "10.0.1.2", {"app": "cache"}, node="node2"))
    msgs = r.flush()
    assert msgs == [proto.IPSetDeltaUpdate(sel_id, frozenset(), frozenset({"10.0.1.2"}))]

    # an IP change of a member: remove old, add new
    r.put("WorkloadEndpoint", *wep("db", "10.0.1.9", {"app": "db"}, node="node2"))
    msgs = r.flush()
    assert msgs == [
        proto.IPSetDeltaUpdate(sel_id, frozenset({"10.0.1.9"}), frozenset({"10.0.1.1"}))
    ]

    # the local endpoint stops matching: policy inactive, set removed, endpoint without tiers
    r.put("WorkloadEndpoint", *wep("web", "10.0.0.1", {"app": "other"}))
    msgs = r.flush()
    assert of(msgs, proto.ActivePolicyRemove) == [
        proto.ActivePolicyRemove(proto.PolicyID("default", "allow-db"))
    ]
    assert of(msgs, proto.IPSetRemove) == [proto.IPSetRemove(sel_id)]
    assert of(msgs, proto.WorkloadEndpointUpdate)[0].endpoint.tiers == ()
    assert type(msgs[-1]) is proto.IPSetRemove


def test_tier_and_policy_ordering() -> None:
    r = Recorder()
    r.put("WorkloadEndpoint", *wep("web", "10.0.0.1", {"app": "web"}))
    r.put("Tier", "security", res("Tier", "security", {"order": 100, "defaultAction": "Pass"}))
    for name, tier, order in [
        ("b", "default", 10),
        ("a", "default", 10),
        ("c", "default", None),
        ("first", "security", None),
        ("z", "default", 1),
    ]:
        r.put(
            "GlobalNetworkPolicy",
            name,
            gnp(
                name,
                {"tier": tier, "order": order, "selector": "all()"}
                if order is not None
                else {"tier": tier, "selector": "all()"},
            ),
        )
    msgs = r.flush()
    ep = of(msgs, proto.WorkloadEndpointUpdate)[-1].endpoint
    assert [t.name for t in ep.tiers] == ["security", "default"]
    assert ep.tiers[0].default_action == "Pass"
    assert [p.name for p in ep.tiers[1].ingress_policies] == ["z", "a", "b", "c"]
    assert ep.tiers[1].egress_policies == ()


def test_namespaced_policy_and_namespace_selector() -> None:
    r = Recorder()
    r.put(
        "Profile", "kns.prod", res("Profile", "kns.prod", {"labelsToApply": {"pcns.env": "prod"}})
    )
    r.put("WorkloadEndpoint", *wep("a", "10.0.0.1", {"app": "a"}, ns="prod", profiles=["kns.prod"]))
    r.put("WorkloadEndpoint", *wep("b", "10.0.0.2", {"app": "a"}, ns="dev"))
    r.put(
        "WorkloadEndpoint",
        *wep("c", "10.0.0.3", {"app": "x"}, ns="prod", node="node2", profiles=["kns.prod"]),
    )
    r.put(
        "NetworkPolicy",
        "prod/p",
        res(
            "NetworkPolicy",
            "p",
            {
                "selector": 'app == "a"',
                "ingress": [
                    {"action": "Allow", "source": {"namespaceSelector": 'env == "prod"'}},
                    {"action": "Allow", "source": {"selector": 'app == "x"'}},
                ],
            },
            namespace="prod",
        ),
    )
    msgs = r.flush()
    eps = {e.endpoint.name: e.endpoint for e in of(msgs, proto.WorkloadEndpointUpdate)}
    assert eps["node1-k8s-a-eth0"].tiers[0].ingress_policies == (
        proto.PolicyID("default", "prod/p"),
    )
    assert eps["node1-k8s-b-eth0"].tiers == ()  # other namespace: not selected
    members = {s.id: s.members for s in of(msgs, proto.IPSetUpdate)}
    ns_sel = parse('pcns.env == "prod"').unique_id
    scoped = parse('(app == "x" && projectcalico.org/namespace == "prod")').unique_id
    assert members[ns_sel] == {"10.0.0.1", "10.0.0.3"}
    assert members[scoped] == {"10.0.0.3"}


def test_profiles_active_while_referenced_and_missing_profile_is_empty() -> None:
    r = Recorder()
    r.put("WorkloadEndpoint", *wep("a", "10.0.0.1", {}, profiles=["missing"]))
    msgs = r.flush()
    assert of(msgs, proto.ActiveProfileUpdate) == [
        proto.ActiveProfileUpdate(proto.ProfileID("missing"), proto.Profile())
    ]
    r.put(
        "Profile",
        "missing",
        res(
            "Profile",
            "missing",
            {"ingress": [{"action": "Allow", "source": {"selector": "all()"}}]},
        ),
    )
    msgs = r.flush()
    (upd,) = of(msgs, proto.ActiveProfileUpdate)
    assert upd.profile.inbound_rules[0].action == "allow"
    assert of(msgs, proto.IPSetUpdate)[0].members == {"10.0.0.1"}
    r.put("WorkloadEndpoint", "default/node1-k8s-a-eth0", None)
    msgs = r.flush()
    assert of(msgs, proto.ActiveProfileRemove) == [
        proto.ActiveProfileRemove(proto.ProfileID("missing"))
    ]
    assert len(of(msgs, proto.WorkloadEndpointRemove)) == 1
    assert len(of(msgs, proto.IPSetRemove)) == 1


def test_named_ports_and_network_sets() -> None:
    r = Recorder()
    r.put("WorkloadEndpoint", *wep("web", "10.0.0.1", {"app": "web"}))
    r.put(
        "WorkloadEndpoint",
        *wep(
            "api",
            "10.0.0.7",
            {"app": "api"},
            node="node2",
            ports=[{"name": "http", "protocol": "TCP", "port": 8080}],
        ),
    )
    r.put(
        "GlobalNetworkSet",
        "ext",
        res(
            "GlobalNetworkSet",
            "ext",
            {"nets": ["192.0.2.0/24", "198.51.100.7/32"]},
            labels={"kind": "external"},
        ),
    )
    r.put(
        "GlobalNetworkPolicy",
        "p",
        gnp(
            "p",
            {
                "selector": 'app == "web"',
                "egress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "destination": {"selector": 'app == "api"', "ports": ["http"]},
                    },
                    {"action": "Allow", "destination": {"selector": 'kind == "external"'}},
                ],
            },
        ),
    )
    msgs = r.flush()
    sets = {s.id: s for s in of(msgs, proto.IPSetUpdate)}
    named = [s for s in sets.values() if s.type is proto.IPSetType.IP_PORT]
    assert [s.members for s in named] == [frozenset({"10.0.0.7,tcp:8080"})]
    ext = sets[parse('kind == "external"').unique_id]
    assert ext.members == {"192.0.2.0/24", "198.51.100.7"}
    r.put("GlobalNetworkSet", "ext", None)
    msgs = r.flush()
    assert of(msgs, proto.IPSetDeltaUpdate) == [
        proto.IPSetDeltaUpdate(ext.id, frozenset(), frozenset({"192.0.2.0/24", "198.51.100.7"}))
    ]


def test_host_endpoint_policy_classes() -> None:
    r = Recorder()
    r.put(
        "HostEndpoint",
        "h",
        res(
            "HostEndpoint",
            "h",
            {"node": HOST, "interfaceName": "eth0", "expectedIPs": ["172.31.0.2"]},
            labels={"host": "yes"},
        ),
    )
    r.put("GlobalNetworkPolicy", "n", gnp("n", {"selector": "has(host)", "ingress": []}))
    r.put(
        "GlobalNetworkPolicy",
        "u",
        gnp(
            "u",
            {
                "selector": "has(host)",
                "doNotTrack": True,
                "applyOnForward": True,
                "ingress": [{"action": "Allow"}],
            },
        ),
    )
    r.put(
        "GlobalNetworkPolicy",
        "d",
        gnp(
            "d",
            {
                "selector": "has(host)",
                "preDNAT": True,
                "applyOnForward": True,
                "ingress": [{"action": "Deny"}],
            },
        ),
    )
    r.put(
        "GlobalNetworkPolicy",
        "f",
        gnp(
            "f", {"selector": "has(host)", "applyOnForward": True, "ingress": [{"action": "Allow"}]}
        ),
    )
    msgs = r.flush()
    (hep,) = of(msgs, proto.HostEndpointUpdate)
    names = lambda tiers: [p.name for t in tiers for p in t.ingress_policies]  # noqa: E731
    assert names(hep.endpoint.tiers) == ["f", "n"]
    assert names(hep.endpoint.untracked_tiers) == ["u"]
    assert names(hep.endpoint.pre_dnat_tiers) == ["d"]
    assert names(hep.endpoint.forward_tiers) == ["f"]  # normal policies with applyOnForward


def test_in_sync_flushes_then_marks() -> None:
    r = Recorder()
    r.put("WorkloadEndpoint", *wep("web", "10.0.0.1", {}))
    r.graph.on_in_sync()
    assert isinstance(r.msgs[-1], proto.InSync)
    assert of(r.msgs, proto.WorkloadEndpointUpdate)

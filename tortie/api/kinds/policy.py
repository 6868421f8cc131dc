"""Policy kinds: GlobalNetworkPolicy, NetworkPolicy, the staged variants, and Profile.

Field names, defaults and validation follow Calico's ``projectcalico.org/v3`` API:

- types and JSON names from ``api/pkg/apis/projectcalico/v3`` (``policy_common.go``,
  ``globalnetworkpolicy.go``, ``networkpolicy.go``, ``staged*.go``, ``profile.go``), including
  the CRD limits written there (1024 rules per global policy and profile, 50 ports and 256
  nets per entity rule, 1024-character selectors, 20 HTTP methods/paths);
- validation from ``libcalico-go/lib/validator/v3/validator.go`` and the CEL rules on the
  types (ports need TCP/UDP/SCTP, ICMP fields need protocol ICMP/ICMPv6, ``code`` needs
  ``type``, ipVersion consistency with ICMP and nets, services vs. other matches, the
  preDNAT/doNotTrack/applyOnForward combinations, ``global()`` only in a rule's
  namespaceSelector);
- defaults from libcalico-go's clientv3 and ``defaults`` package: ``tier`` ``default``,
  ``types`` ``[Ingress]`` when there are no egress rules, ``[Egress]`` when there are egress
  rules but no ingress rules, both when there are both; the ``projectcalico.org/tier``
  label; staged ``stagedAction`` ``Set`` (``Delete`` clears ``types``).

Policy names are stored as given. Since Calico removed the tier-prefix requirement
(projectcalico/calico#11232), a policy in tier ``web`` may be called ``allow-dns`` or
``web.allow-dns``; only the name's form is checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import msgspec

from tortie.api import validators as v
from tortie.api.base import ApiStruct, Ctx, Resource, struct_fields
from tortie.api.kinds.tier import DEFAULT_TIER
from tortie.api.registry import Column, name_column, register, spec_column

ACTIONS = ("Allow", "Deny", "Log", "Pass")
POLICY_TYPES = ("Ingress", "Egress")
STAGED_ACTIONS = ("Set", "Delete", "Learn", "Ignore")
PERFORMANCE_HINTS = ("AssumeNeededOnEveryNode",)
TIER_LABEL = "projectcalico.org/tier"

MAX_RULES = 1024
MAX_PORTS = 50
MAX_NETS = 256
MAX_SELECTOR_LENGTH = 1024
MAX_HTTP_ITEMS = 20
MAX_HTTP_PATH_LENGTH = 1024

GLOBAL_ONLY_IN_NAMESPACE_SELECTOR = "global() can only be used in an EntityRule namespaceSelector"
PORTS_NEED_PROTOCOL = "rules that specify ports must set protocol to TCP, UDP or SCTP"

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_GLOBAL_POLICY_NAME = re.compile(rf"^({_LABEL}\.)?{_LABEL}$")
_POLICY_NAME = re.compile(rf"^({_LABEL}(\.{_LABEL})?|(knp|ossg)\.default\.{_SUBDOMAIN})$")


# --- helpers -------------------------------------------------------------------------------


def prune_empty(obj: Any) -> None:
    """Unset optional fields holding Go's zero values ("", [], {}, false), recursively.

    Calico omits them on output (``omitempty``), so ``doNotTrack: false`` or ``selector: ""``
    read back as absent; pruning keeps ``to_dict`` canonical and round trips stable.
    Entity rules left empty are dropped too (``omitzero``).
    """
    if isinstance(obj, list):
        for item in obj:
            prune_empty(item)
        return
    if not isinstance(obj, ApiStruct):
        return
    for field in struct_fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, ApiStruct | list):
            prune_empty(value)
        if field.required or field.default is not None:
            continue
        zero = value is False or (isinstance(value, str | list | dict) and not value)
        if zero or (isinstance(value, EntityRule) and value.is_empty()):
            setattr(obj, field.name, None)


def _contains_global(selector: str | None) -> bool:
    return selector is not None and "global(" in selector


def check_policy_selector(ctx: Ctx, path: str, selector: str | None, limit: int | None) -> None:
    """A policy-level selector: parses, fits the CRD limit, and does not use ``global()``."""
    if selector is None:
        return
    if limit is not None and not v.check_max_length(ctx, path, selector, limit):
        return
    if v.check_selector(ctx, path, selector) and _contains_global(selector):
        ctx.error(path, GLOBAL_ONLY_IN_NAMESPACE_SELECTOR)


# --- rules -----------------------------------------------------------------------------------


class ICMPFields(ApiStruct):
    """ICMP type (0-254) and code (0-255); a code needs a type (an iptables limitation)."""

    type: int | None = None
    code: int | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_range(ctx, f"{path}.type", self.type, 0, 254)
        v.check_range(ctx, f"{path}.code", self.code, 0, 255)
        if self.code is not None and self.type is None:
            ctx.error(f"{path}.code", "ICMP code specified without an ICMP type")


class HTTPPath(ApiStruct):
    """One HTTP path match: either ``exact`` or ``prefix``."""

    exact: str | None = None
    prefix: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        if self.exact and self.prefix:
            ctx.error(path, "set either 'exact' or 'prefix', not both")
            return
        value = self.exact or self.prefix
        if not value:
            ctx.error(path, "one of 'exact' or 'prefix' must be set")
            return
        where = f"{path}.{'exact' if self.exact else 'prefix'}"
        if not v.check_max_length(ctx, where, value, MAX_HTTP_PATH_LENGTH):
            return
        if not value.startswith("/") or any(c in value for c in "? #"):
            ctx.error(where, f"invalid path {value!r}: must start with '/' and not contain '?', "
                      "'#' or spaces")


class HTTPMatch(ApiStruct):
    """HTTP request match (application layer policy): methods OR'd, paths OR'd, both AND'd."""

    methods: list[str] | None = None
    paths: list[HTTPPath] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_max_items(ctx, f"{path}.methods", self.methods, MAX_HTTP_ITEMS)
        v.check_unique(ctx, f"{path}.methods", self.methods)
        v.check_max_items(ctx, f"{path}.paths", self.paths, MAX_HTTP_ITEMS)


class RuleMetadata(ApiStruct):
    annotations: dict[str, str] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_annotations(ctx, f"{path}.annotations", self.annotations)


class ServiceAccountMatch(ApiStruct):
    """Pods running as service accounts with these names and/or matching this selector."""

    names: list[str] | None = None
    selector: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_unique(ctx, f"{path}.names", self.names)
        v.check_selector(ctx, f"{path}.selector", self.selector)


class ServiceMatch(ApiStruct):
    """A Kubernetes Service by name (and namespace; the policy's own when empty)."""

    name: str | None = None
    namespace: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_name_ref(ctx, f"{path}.name", self.name)
        v.check_name_ref(ctx, f"{path}.namespace", self.namespace)


class EntityRule(ApiStruct):
    """The source or destination match of a rule."""

    nets: list[str] | None = None
    selector: str | None = None
    namespace_selector: str | None = None
    services: ServiceMatch | None = None
    ports: list[int | str] | None = None
    not_nets: list[str] | None = None
    not_selector: str | None = None
    not_ports: list[int | str] | None = None
    service_accounts: ServiceAccountMatch | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__struct_fields__)

    def check(self, ctx: Ctx, path: str) -> None:
        for fname, values in (("nets", self.nets), ("notNets", self.not_nets)):
            where = f"{path}.{fname}"
            if v.check_max_items(ctx, where, values, MAX_NETS) and v.check_unique(
                ctx, where, values
            ):
                for i, net in enumerate(values or []):
                    v.check_network(ctx, f"{where}[{i}]", net, prefix_required=True)
        for fname, sel in (
            ("selector", self.selector),
            ("notSelector", self.not_selector),
            ("namespaceSelector", self.namespace_selector),
        ):
            if sel is not None and v.check_max_length(ctx, f"{path}.{fname}", sel,
                                                      MAX_SELECTOR_LENGTH):
                v.check_selector(ctx, f"{path}.{fname}", sel)
        if _contains_global(self.selector):
            ctx.error(f"{path}.selector", GLOBAL_ONLY_IN_NAMESPACE_SELECTOR)
        ns_sel = self.namespace_selector
        if _contains_global(ns_sel) and ns_sel is not None and ns_sel.strip(" \t") != "global()":
            ctx.error(f"{path}.namespaceSelector", "global() cannot be combined with other "
                      "selectors")
        for fname, ports in (("ports", self.ports), ("notPorts", self.not_ports)):
            if not v.check_max_items(ctx, f"{path}.{fname}", ports, MAX_PORTS):
                continue
            for i, port in enumerate(ports or []):
                try:
                    v.parse_port(port)
                except ValueError as exc:
                    ctx.error(f"{path}.{fname}[{i}]", str(exc))
        if self.services is not None:
            where = f"{path}.services"
            if not self.services.name:
                ctx.error(f"{where}.name", "a service match must name a service")
            if self.namespace_selector:
                ctx.error(where, "cannot specify namespaceSelector and services on the same rule")
            if self.selector or self.not_selector:
                ctx.error(where, "cannot specify selector/notSelector and services on the same "
                          "rule")
            if self.service_accounts is not None:
                ctx.error(where, "cannot specify serviceAccounts and services on the same rule")
            if self.nets or self.not_nets:
                ctx.error(where, "cannot specify nets/notNets and services on the same rule")

    def canonicalise(self) -> None:
        if self.ports:
            self.ports = [v.canonical_port(p) for p in self.ports]
        if self.not_ports:
            self.not_ports = [v.canonical_port(p) for p in self.not_ports]


class Rule(ApiStruct):
    """Match criteria and an action. All criteria must match; ``not*`` fields negate."""

    action: str
    ip_version: int | None = None
    protocol: int | str | None = None
    icmp: ICMPFields | None = None
    not_protocol: int | str | None = None
    not_icmp: ICMPFields | None = msgspec.field(default=None, name="notICMP")
    source: EntityRule | None = None
    destination: EntityRule | None = None
    http: HTTPMatch | None = None
    metadata: RuleMetadata | None = None

    def sides(self) -> Iterator[tuple[str, EntityRule]]:
        if self.source is not None:
            yield "source", self.source
        if self.destination is not None:
            yield "destination", self.destination

    def check(self, ctx: Ctx, path: str) -> None:
        if self.action not in ACTIONS:
            ctx.error(f"{path}.action", f"invalid action {self.action!r}: must be one of "
                      f"{', '.join(ACTIONS)}")
        if self.ip_version is not None and self.ip_version not in (4, 6):
            ctx.error(f"{path}.ipVersion", f"invalid ipVersion {self.ip_version}: must be 4 or 6")
        proto_ok = v.check_protocol(ctx, f"{path}.protocol", self.protocol)
        v.check_protocol(ctx, f"{path}.notProtocol", self.not_protocol)
        proto = v.protocol_number(self.protocol) if proto_ok else None
        not_proto = v.protocol_number(self.not_protocol)

        if proto_ok and not v.protocol_supports_ports(self.protocol):
            for side, entity in self.sides():
                for fname, ports in (("ports", entity.ports), ("notPorts", entity.not_ports)):
                    if ports:
                        ctx.error(f"{path}.{side}.{fname}", PORTS_NEED_PROTOCOL
                                  + _protocol_hint(self.protocol))
        if self.http is not None:
            if proto_ok and self.protocol is not None and proto != 6:
                ctx.error(f"{path}.protocol", "rules with an HTTP match must have protocol TCP "
                          "or no protocol")
            if self.action != "Allow":
                ctx.error(f"{path}.http", "an HTTP match is only valid on Allow rules")
        if self.icmp is not None and proto_ok and proto not in (1, 58):
            ctx.error(f"{path}.icmp", "rules that specify ICMP fields must set protocol to ICMP "
                      "or ICMPv6")
        if self.ip_version in (4, 6):
            if 1 in (proto, not_proto) and self.ip_version != 4:
                ctx.error(f"{path}.ipVersion", "protocol ICMP requires ipVersion 4")
            if 58 in (proto, not_proto) and self.ip_version != 6:
                ctx.error(f"{path}.ipVersion", "protocol ICMPv6 requires ipVersion 6")
        self._check_net_versions(ctx, path)
        dest = self.destination
        if dest is not None and dest.services is not None:
            if dest.ports:
                ctx.error(f"{path}.destination.ports", "cannot specify ports with a service "
                          "match: the service's endpoint ports are used")
            if dest.not_ports:
                ctx.error(f"{path}.destination.notPorts", "cannot specify notPorts with a "
                          "service match")

    def _check_net_versions(self, ctx: Ctx, path: str) -> None:
        """Every CIDR in the rule must be of one IP family, and match ``ipVersion`` if set."""
        seen: set[int] = set()
        for side, entity in self.sides():
            for fname, nets in (("nets", entity.nets), ("notNets", entity.not_nets)):
                versions = {n.version for n in map(v.parse_cidr, nets or []) if n is not None}
                if not versions:
                    continue
                where = f"{path}.{side}.{fname}"
                if self.ip_version in (4, 6) and versions - {self.ip_version}:
                    ctx.error(where, f"rule ipVersion is {self.ip_version} but {fname} holds "
                              f"IPv{(versions - {self.ip_version}).pop()} CIDRs")
                if len(versions | seen) > 1:
                    ctx.error(where, "rule contains both IPv4 and IPv6 CIDRs")
                seen |= versions

    def canonicalise(self) -> None:
        if self.protocol is not None:
            self.protocol = v.canonical_protocol(self.protocol)
        if self.not_protocol is not None:
            self.not_protocol = v.canonical_protocol(self.not_protocol)
        for _, entity in self.sides():
            entity.canonicalise()


def _protocol_hint(protocol: int | str | None) -> str:
    return " (protocol is not set)" if protocol is None else f" (protocol is {protocol})"


def check_rule_directions(
    ctx: Ctx, path: str, ingress: list[Rule] | None, egress: list[Rule] | None
) -> None:
    """Services match only a rule's remote side; HTTP matches only ingress traffic."""
    for i, rule in enumerate(egress or []):
        if rule.source is not None and rule.source.services is not None:
            ctx.error(f"{path}.egress[{i}].source.services",
                      "services are not allowed in an egress rule's source")
        if rule.http is not None:
            ctx.error(f"{path}.egress[{i}].http", "an HTTP match is not allowed in egress rules")
    for i, rule in enumerate(ingress or []):
        if rule.destination is not None and rule.destination.services is not None:
            ctx.error(f"{path}.ingress[{i}].destination.services",
                      "services are not allowed in an ingress rule's destination")


# --- policy specs ---------------------------------------------------------------------------


class PolicySpec(ApiStruct):
    """The fields NetworkPolicy and GlobalNetworkPolicy share."""

    tier: str | None = None
    order: float | None = None
    selector: str | None = None
    types: list[str] | None = None
    ingress: list[Rule] | None = None
    egress: list[Rule] | None = None
    service_account_selector: str | None = None
    performance_hints: list[str] | None = None

    MAX_RULES: ClassVar[int | None] = None
    MAX_SELECTOR_LENGTH: ClassVar[int | None] = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_name_ref(ctx, f"{path}.tier", self.tier)
        if self.order is not None and not math.isfinite(self.order):
            ctx.error(f"{path}.order", "order must be a finite number")
        check_policy_selector(ctx, f"{path}.selector", self.selector, self.MAX_SELECTOR_LENGTH)
        check_policy_selector(ctx, f"{path}.serviceAccountSelector",
                              self.service_account_selector, self.MAX_SELECTOR_LENGTH)
        check_types(ctx, f"{path}.types", self.types)
        if self.MAX_RULES is not None:
            v.check_max_items(ctx, f"{path}.ingress", self.ingress, self.MAX_RULES)
            v.check_max_items(ctx, f"{path}.egress", self.egress, self.MAX_RULES)
        check_rule_directions(ctx, path, self.ingress, self.egress)
        if v.check_unique(ctx, f"{path}.performanceHints", self.performance_hints):
            for i, hint in enumerate(self.performance_hints or []):
                v.check_one_of(ctx, f"{path}.performanceHints[{i}]", hint, PERFORMANCE_HINTS)

    def rules(self) -> Iterator[Rule]:
        yield from self.ingress or []
        yield from self.egress or []


def check_types(ctx: Ctx, path: str, types: list[str] | None) -> None:
    seen: set[str] = set()
    for i, t in enumerate(types or []):
        if t not in POLICY_TYPES:
            ctx.error(f"{path}[{i}]", f"invalid policy type {t!r}: must be Ingress or Egress")
        elif t in seen:
            ctx.error(path, f"{t!r} type specified more than once")
        seen.add(t)


def default_types(ingress: list[Any] | None, egress: list[Any] | None) -> list[str]:
    """Calico's ``types`` default: Ingress unless there are only egress rules; both if both."""
    if not egress:
        return ["Ingress"]
    if not ingress:
        return ["Egress"]
    return ["Ingress", "Egress"]


class NetworkPolicySpec(PolicySpec):
    pass


class GlobalNetworkPolicySpec(PolicySpec):
    namespace_selector: str | None = None
    do_not_track: bool | None = None
    pre_dnat: bool | None = msgspec.field(default=None, name="preDNAT")
    apply_on_forward: bool | None = None

    MAX_RULES: ClassVar[int | None] = MAX_RULES
    MAX_SELECTOR_LENGTH: ClassVar[int | None] = MAX_SELECTOR_LENGTH

    def check(self, ctx: Ctx, path: str) -> None:
        super().check(ctx, path)
        check_policy_selector(ctx, f"{path}.namespaceSelector", self.namespace_selector,
                              self.MAX_SELECTOR_LENGTH)
        if self.do_not_track and self.pre_dnat:
            ctx.error(f"{path}.preDNAT", "preDNAT and doNotTrack cannot both be true")
        if self.pre_dnat and self.egress:
            ctx.error(f"{path}.egress", "a preDNAT policy cannot have egress rules")
        if self.pre_dnat and "Egress" in (self.types or []):
            ctx.error(f"{path}.types", "a preDNAT policy cannot have the 'Egress' type")
        if (self.do_not_track or self.pre_dnat) and not self.apply_on_forward:
            ctx.error(f"{path}.applyOnForward",
                      "applyOnForward must be true when preDNAT or doNotTrack is true")
        # A global policy has no namespace of its own to find a named service in.
        for direction, side, rules in (("egress", "destination", self.egress),
                                       ("ingress", "source", self.ingress)):
            for i, rule in enumerate(rules or []):
                services = getattr(getattr(rule, side), "services", None)
                if services is not None and not services.namespace:
                    ctx.error(f"{path}.{direction}[{i}].{side}.services.namespace",
                              "a global policy's service match must specify a namespace")


def check_staged(ctx: Ctx, path: str, spec: PolicySpec, action: str | None) -> None:
    """``stagedAction``; with ``Delete`` every field but the tier must be empty."""
    v.check_one_of(ctx, f"{path}.stagedAction", action, STAGED_ACTIONS)
    if action == "Delete":
        extra = [
            f.encode_name
            for f in struct_fields(spec)
            if f.name not in ("tier", "staged_action") and getattr(spec, f.name) is not None
        ]
        if extra:
            ctx.error(path, "with stagedAction Delete every spec field except tier must be "
                      f"empty; remove {', '.join(extra)}")


class StagedNetworkPolicySpec(NetworkPolicySpec):
    staged_action: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        super().check(ctx, path)
        check_staged(ctx, path, self, self.staged_action)


class StagedGlobalNetworkPolicySpec(GlobalNetworkPolicySpec):
    staged_action: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        super().check(ctx, path)
        check_staged(ctx, path, self, self.staged_action)


# --- policy resources -----------------------------------------------------------------------


def _default_policy(res: Resource, spec: PolicySpec, staged_action: str | None = None) -> None:
    prune_empty(spec)
    for rule in spec.rules():
        rule.canonicalise()
    if spec.tier is None:
        spec.tier = DEFAULT_TIER
    if staged_action == "Delete":
        spec.types = None
    elif spec.types is None:
        spec.types = default_types(spec.ingress, spec.egress)
    labels = dict(res.metadata.labels or {})
    labels[TIER_LABEL] = spec.tier
    res.metadata.labels = labels


def _check_policy_name(ctx: Ctx, res: Resource, pattern: re.Pattern[str], form: str) -> None:
    name = res.metadata.name
    if not name:
        ctx.error("metadata.name", "name is required")
    elif len(name) > v.DNS1123_SUBDOMAIN_MAX:
        ctx.error("metadata.name", f"name is too long by {len(name) - v.DNS1123_SUBDOMAIN_MAX} "
                  "characters (at most 253)")
    elif not pattern.match(name):
        ctx.error("metadata.name", f"invalid policy name {name!r}: {form}")


GLOBAL_NAME_FORM = (
    "must be lower case alphanumerics and '-', with at most one '.', starting and ending with "
    "an alphanumeric"
)
NAMESPACED_NAME_FORM = GLOBAL_NAME_FORM + " (or a 'knp.default.'/'ossg.default.' name)"


def _order(r: Resource) -> str:
    order = r.spec.order  # type: ignore[attr-defined]
    if order is None:
        return ""
    return str(int(order)) if float(order).is_integer() else str(order)


POLICY_COLUMNS: tuple[Column, ...] = (name_column(), spec_column("TIER", "tier"))
POLICY_WIDE: tuple[Column, ...] = (
    *POLICY_COLUMNS,
    ("ORDER", _order),
    spec_column("SELECTOR", "selector"),
)


@register(
    "globalnetworkpolicies",
    aliases=("gnp", "gnps"),
    columns=(name_column(),),
    wide_columns=(name_column(), ("ORDER", _order), spec_column("SELECTOR", "selector")),
)
class GlobalNetworkPolicy(Resource):
    KIND: ClassVar[str] = "GlobalNetworkPolicy"
    spec: GlobalNetworkPolicySpec = msgspec.field(default_factory=GlobalNetworkPolicySpec)

    def apply_defaults(self) -> None:
        _default_policy(self, self.spec)

    def check_name(self, ctx: Ctx) -> None:
        _check_policy_name(ctx, self, _GLOBAL_POLICY_NAME, GLOBAL_NAME_FORM)


@register(
    "networkpolicies",
    namespaced=True,
    aliases=("policy", "policies", "np", "pol", "pols"),
    columns=POLICY_COLUMNS,
    wide_columns=POLICY_WIDE,
)
class NetworkPolicy(Resource):
    KIND: ClassVar[str] = "NetworkPolicy"
    spec: NetworkPolicySpec = msgspec.field(default_factory=NetworkPolicySpec)

    def apply_defaults(self) -> None:
        _default_policy(self, self.spec)

    def check_name(self, ctx: Ctx) -> None:
        _check_policy_name(ctx, self, _POLICY_NAME, NAMESPACED_NAME_FORM)
        v.check_namespace(ctx, "metadata.namespace", self.metadata.namespace)


@register(
    "stagedglobalnetworkpolicies",
    aliases=("sgnp", "sgnps"),
    columns=POLICY_COLUMNS,
    wide_columns=POLICY_WIDE,
)
class StagedGlobalNetworkPolicy(Resource):
    KIND: ClassVar[str] = "StagedGlobalNetworkPolicy"
    spec: StagedGlobalNetworkPolicySpec = msgspec.field(
        default_factory=StagedGlobalNetworkPolicySpec
    )

    def apply_defaults(self) -> None:
        prune_empty(self.spec)
        if self.spec.staged_action is None:
            self.spec.staged_action = "Set"
        _default_policy(self, self.spec, self.spec.staged_action)

    def check_name(self, ctx: Ctx) -> None:
        _check_policy_name(ctx, self, _GLOBAL_POLICY_NAME, GLOBAL_NAME_FORM)


@register(
    "stagednetworkpolicies",
    namespaced=True,
    aliases=("stagedpolicy", "snp", "stagedpolicies", "spol", "spols"),
    columns=POLICY_COLUMNS,
    wide_columns=POLICY_WIDE,
)
class StagedNetworkPolicy(Resource):
    KIND: ClassVar[str] = "StagedNetworkPolicy"
    spec: StagedNetworkPolicySpec = msgspec.field(default_factory=StagedNetworkPolicySpec)

    def apply_defaults(self) -> None:
        prune_empty(self.spec)
        if self.spec.staged_action is None:
            self.spec.staged_action = "Set"
        _default_policy(self, self.spec, self.spec.staged_action)

    def check_name(self, ctx: Ctx) -> None:
        _check_policy_name(ctx, self, _POLICY_NAME, NAMESPACED_NAME_FORM)
        v.check_namespace(ctx, "metadata.namespace", self.metadata.namespace)


# --- StagedKubernetesNetworkPolicy (Kubernetes networking/v1 shapes) ---------------------------

K8S_PROTOCOLS = ("TCP", "UDP", "SCTP")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class LabelSelectorRequirement(ApiStruct):
    key: str
    operator: str
    values: list[str] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        problem = v.label_key_problem(self.key)
        if problem:
            ctx.error(f"{path}.key", f"invalid label key {self.key!r}: {problem}")
        if not v.check_one_of(ctx, f"{path}.operator", self.operator, SELECTOR_OPERATORS):
            return
        if self.operator in ("In", "NotIn"):
            if not self.values:
                ctx.error(f"{path}.values", f"operator {self.operator} needs at least one value")
            for i, value in enumerate(self.values or []):
                if not v.is_label_value(value):
                    ctx.error(f"{path}.values[{i}]", f"invalid label value {value!r}")
        elif self.values:
            ctx.error(f"{path}.values", f"operator {self.operator} takes no values")


class LabelSelector(ApiStruct):
    """A Kubernetes label selector: ``matchLabels`` AND ``matchExpressions``; empty = all."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_labels(ctx, f"{path}.matchLabels", self.match_labels)

    def __str__(self) -> str:
        parts = [f"{k}={val}" for k, val in sorted((self.match_labels or {}).items())]
        for req in self.match_expressions or []:
            if req.operator == "In":
                parts.append(f"{req.key} in ({','.join(req.values or [])})")
            elif req.operator == "NotIn":
                parts.append(f"{req.key} notin ({','.join(req.values or [])})")
            elif req.operator == "Exists":
                parts.append(req.key)
            else:
                parts.append(f"!{req.key}")
        return ",".join(parts)


class IPBlock(ApiStruct):
    cidr: str
    except_: list[str] | None = msgspec.field(default=None, name="except")

    def check(self, ctx: Ctx, path: str) -> None:
        net = v.check_network(ctx, f"{path}.cidr", self.cidr, masked=False)
        for i, text in enumerate(self.except_ or []):
            sub = v.check_network(ctx, f"{path}.except[{i}]", text, masked=False)
            if net is None or sub is None:
                continue
            inside = sub.version == net.version and sub != net and sub.subnet_of(net)  # type: ignore[arg-type]
            if not inside:
                ctx.error(f"{path}.except[{i}]", f"{text!r} must be a strict subset of "
                          f"cidr {self.cidr!r}")


class NetworkPolicyPeer(ApiStruct):
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if self.ip_block is not None and selectors:
            ctx.error(path, "ipBlock cannot be combined with podSelector or namespaceSelector")
        elif self.ip_block is None and not selectors:
            ctx.error(path, "a peer must set podSelector, namespaceSelector or ipBlock")


class NetworkPolicyPort(ApiStruct):
    protocol: str | None = None
    port: int | str | None = None
    end_port: int | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_one_of(ctx, f"{path}.protocol", self.protocol, K8S_PROTOCOLS)
        if isinstance(self.port, int):
            v.check_range(ctx, f"{path}.port", self.port, 1, 65535)
        elif self.port is not None:
            v.check_port_name(ctx, f"{path}.port", self.port)
        if self.end_port is not None:
            if not isinstance(self.port, int):
                ctx.error(f"{path}.endPort", "endPort needs a numeric port")
            elif (
                v.check_range(ctx, f"{path}.endPort", self.end_port, 1, 65535)
                and self.end_port < self.port
            ):
                ctx.error(f"{path}.endPort", f"endPort {self.end_port} must not be less than "
                          f"port {self.port}")


class NetworkPolicyIngressRule(ApiStruct):
    ports: list[NetworkPolicyPort] | None = None
    from_: list[NetworkPolicyPeer] | None = msgspec.field(default=None, name="from")


class NetworkPolicyEgressRule(ApiStruct):
    ports: list[NetworkPolicyPort] | None = None
    to: list[NetworkPolicyPeer] | None = None


class StagedKubernetesNetworkPolicySpec(ApiStruct):
    staged_action: str | None = None
    pod_selector: LabelSelector = msgspec.field(default_factory=LabelSelector)
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None
    policy_types: list[str] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_one_of(ctx, f"{path}.stagedAction", self.staged_action, STAGED_ACTIONS)
        if v.check_max_items(ctx, f"{path}.policyTypes", self.policy_types, 2):
            check_types(ctx, f"{path}.policyTypes", self.policy_types)
        if self.staged_action == "Delete":
            extra = [name for name, value in (
                ("podSelector", self.pod_selector != LabelSelector()),
                ("ingress", self.ingress is not None),
                ("egress", self.egress is not None),
                ("policyTypes", self.policy_types is not None),
            ) if value]
            if extra:
                ctx.error(path, "with stagedAction Delete every spec field must be empty; "
                          f"remove {', '.join(extra)}")


def _pod_selector(r: Resource) -> str:
    return str(r.spec.pod_selector)  # type: ignore[attr-defined]


@register(
    "stagedkubernetesnetworkpolicies",
    namespaced=True,
    aliases=("stagedkubernetespolicy", "sknp", "stagedkubernetespolicies", "skpol", "skpols"),
    columns=(name_column(),),
    wide_columns=(name_column(), ("PODSELECTOR", _pod_selector)),
)
class StagedKubernetesNetworkPolicy(Resource):
    KIND: ClassVar[str] = "StagedKubernetesNetworkPolicy"
    spec: StagedKubernetesNetworkPolicySpec = msgspec.field(
        default_factory=StagedKubernetesNetworkPolicySpec
    )

    def apply_defaults(self) -> None:
        spec = self.spec
        if spec.staged_action is None or spec.staged_action == "":
            spec.staged_action = "Set"
        for fname in ("ingress", "egress", "policy_types"):
            if getattr(spec, fname) == []:
                setattr(spec, fname, None)
        for rule in [*(spec.ingress or []), *(spec.egress or [])]:
            for port in rule.ports or []:
                if isinstance(port.port, str) and port.port.isdigit():
                    port.port = int(port.port)

    def check_name(self, ctx: Ctx) -> None:
        super().check_name(ctx)
        v.check_namespace(ctx, "metadata.namespace", self.metadata.namespace)


# --- Profile ---------------------------------------------------------------------------------


class ProfileSpec(ApiStruct):
    ingress: list[Rule] | None = None
    egress: list[Rule] | None = None
    labels_to_apply: dict[str, str] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        v.check_max_items(ctx, f"{path}.ingress", self.ingress, MAX_RULES)
        v.check_max_items(ctx, f"{path}.egress", self.egress, MAX_RULES)
        v.check_labels(ctx, f"{path}.labelsToApply", self.labels_to_apply)


def _labels_to_apply(r: Resource) -> str:
    labels = r.spec.labels_to_apply or {}  # type: ignore[attr-defined]
    return ",".join(f"{k}={val}" for k, val in sorted(labels.items()))


@register(
    "profiles",
    aliases=("profile", "pro", "pros"),
    columns=(name_column(),),
    wide_columns=(name_column(), ("LABELS", _labels_to_apply)),
)
class Profile(Resource):
    """Rules and labels that endpoints naming the profile inherit (after all policy)."""

    KIND: ClassVar[str] = "Profile"
    spec: ProfileSpec = msgspec.field(default_factory=ProfileSpec)

    def apply_defaults(self) -> None:
        prune_empty(self.spec)
        for rule in [*(self.spec.ingress or []), *(self.spec.egress or [])]:
            rule.canonicalise()

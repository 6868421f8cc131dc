"""Pure rendering: a `Snapshot` and a node name → BIRD 2 configuration text.

`build_view` turns resources into a plain view model (`BirdView`: families, peers, blocks,
filters, each already in BIRD's words); the Jinja2 templates in ``templates/`` only lay it
out. `render` does both. Nothing here touches the network, files or processes, so golden
files pin the output and ``bird -p`` checks it in tests.

Behaviour follows Calico's confd templates (``bird.cfg.template``, ``bird_aggr.cfg.template``,
``bird_ipam.cfg.template``) and its BGP processor, adapted to BIRD 2 (one daemon, one file,
``ipv4``/``ipv6`` channels; IPv6 functions carry a ``_v6`` suffix):

- ``router id``: the node's IPv4 address, or ``CALICO_ROUTER_ID`` (``hash`` = derived from the
  node name, as Calico does for IPv6-only nodes).
- ``protocol kernel`` per family: ``learn``, ``persist``, ``scan time 2``, graceful restart,
  ECMP; exports through ``calico_kernel_programming``, which keeps VXLAN pools' routes (and
  IPIP ones: no IPIP device here, Felix owns those) out of the kernel.
- ``protocol direct`` on every interface but ``cali*``/``kube-ipvs*`` and
  ``ignoredInterfaces``, so iBGP next hops (``gateway recursive``) resolve over the fabric.
- ``protocol static``: a blackhole route per affine block (not /32s), ``reachableBy`` routes.
- Export to peers (``calico_export_to_bgp_peers``): reject ``disableBGPExport`` pools, reject
  tunnel-device routes towards iBGP peers, add ``prefixAdvertisements`` communities, accept
  each confirmed block and reject what is beneath it (Felix's workload /32s), accept the rest
  of the pools, reject everything else (the fabric, default routes, other software's routes).
- Per peer: BGPFilter functions first (import then ``accept``; export then the Calico export
  function then ``reject``), ``password`` (from a secret), ``sourceAddress``,
  ``keepOriginalNextHop`` (eBGP only) / ``nextHopMode``, ``maxRestartTime``, ``keepaliveTime``,
  ``numAllowedLocalASNumbers``, ``ttlSecurity``, ``localASNumber``, route-reflector clients
  (``rr client``/``rr cluster id`` towards iBGP peers outside this node's cluster), passive
  mesh and global peers when the peer's address sorts after ours, listen ports.

Whatever a resource says, the result parses: values BIRD would refuse are dropped with a note
in the file (and a log line), never passed through.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tortie.api.kinds.bgp import community_problem
from tortie.api.kinds.common import parse_as_number
from tortie.api.validators import parse_duration
from tortie.confd.model import BlockAffinity, Snapshot
from tortie.confd.peers import NodeInfo, Peering, cluster_nodes, global_config, node_config
from tortie.confd.peers import peerings as compute_peerings

__all__ = [
    "BirdPeer",
    "BirdView",
    "Family",
    "RenderError",
    "RenderOptions",
    "Timers",
    "build_view",
    "filter_function_name",
    "hash_to_ipv4",
    "render",
]

log = logging.getLogger("tortie.confd")

MAX_BIRD_SYMBOL = 64
DEFAULT_HOLD_TIME = 240  # BIRD's default
SecretLookup = Callable[[str, str], "str | None"]


class RenderError(Exception):
    """Nothing sensible can be rendered yet (e.g. this node has no Node resource)."""


@dataclass(frozen=True)
class Timers:
    """BGP session timers; Calico's defaults unless a test asks for faster ones."""

    connect_delay: int = 2
    connect_retry: int = 5
    error_wait: str = "5,30"
    hold_time: int | None = None  # None: BIRD's default (240 s)
    keepalive_time: int | None = None


@dataclass(frozen=True)
class RenderOptions:
    router_id: str = ""  # CALICO_ROUTER_ID: "", "hash" or an IPv4 address
    secrets: SecretLookup | None = None  # (secret name, key) -> value
    timers: Timers = field(default_factory=Timers)
    kernel_scan_time: int = 2


@dataclass(frozen=True)
class BirdPeer:
    kind: str
    name: str
    origin: str
    ip: str
    port: int | None
    as_number: int
    description: str = ""
    local_as: int | None = None
    local_port: int | None = None
    source_address: str | None = None
    passive: bool = False
    password: str | None = None
    graceful_restart_time: int | None = None
    hold_time: int | None = None
    keepalive_time: int | None = None
    rr_client: bool = False
    rr_cluster_id: str | None = None
    allow_local_as: int | None = None
    ttl_security: int | None = None
    next_hop_self: bool = False
    next_hop_keep: bool = False
    import_lines: tuple[str, ...] = ()
    export_lines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    cidr: str
    state: str
    confirmed: bool


@dataclass(frozen=True)
class Community:
    cidr: str
    statements: tuple[str, ...]


@dataclass(frozen=True)
class FilterFunction:
    filter: str
    name: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    version: int
    node_ip: str | None
    peers: tuple[BirdPeer, ...] = ()
    blocks: tuple[Block, ...] = ()
    static_routes: tuple[str, ...] = ()
    communities: tuple[Community, ...] = ()
    disabled_pools: tuple[str, ...] = ()
    export_pools: tuple[str, ...] = ()
    kernel_rules: tuple[str, ...] = ()
    filter_functions: tuple[FilterFunction, ...] = ()
    mesh_comment: str = ""
    skipped: tuple[str, ...] = ()

    @property
    def suffix(self) -> str:
        return "" if self.version == 4 else "_v6"

    @property
    def channel(self) -> str:
        return f"ipv{self.version}"


@dataclass(frozen=True)
class BirdView:
    node_name: str
    router_id: str
    as_number: int
    debug: str | None
    direct_interfaces: str
    timers: Timers
    kernel_scan_time: int
    strict_bind: bool
    families: tuple[Family, ...]


# --- helpers -------------------------------------------------------------------------------


def hash_to_ipv4(name: str) -> str:
    """A router id derived from the node name (Calico's ``CALICO_ROUTER_ID=hash``)."""
    digest = hashlib.sha256(name.encode()).digest()
    octets = list(digest[:4])
    if octets[0] in (0, 255):  # BIRD refuses 0.0.0.0/255.255.255.255-like ids
        octets[0] = 1
    return ".".join(str(o) for o in octets)


def _truncate(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11]}-{digest}"


def filter_function_name(filter_name: str, direction: str, version: int) -> str:
    """``'bgp_<name>_importFilterV4'``: BIRD's quoted symbol for a BGPFilter's function."""
    fixed = len(f"bgp___{direction}FilterV{version}") - 1
    return f"'bgp_{_truncate(filter_name, MAX_BIRD_SYMBOL - fixed)}_{direction}FilterV{version}'"


_BIRD_STRING_OK = re.compile(r'^[^"\n\r\\]*$')


def _seconds(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return round(parse_duration(value))
    except ValueError:
        return None


def _debug(glob: Any, ncfg: Any) -> str | None:
    """Calico's BIRD log levels: debug → ``all``; none → nothing; otherwise ``{ states }``."""
    level = (ncfg.log_severity_screen if ncfg is not None else None) or glob.log_severity_screen
    level = (level or "Info").lower()
    if level == "debug":
        return "all"
    if level in ("info",):
        return "{ states }"
    return None  # Warning, Error, Fatal: Calico maps them to "none"


# --- filters --------------------------------------------------------------------------------

_OPERATORS = {"Equal": "=", "NotEqual": "!=", "In": "~", "NotIn": "!~"}


def _filter_statement(rule: Any, version: int) -> str:
    conditions: list[str] = []
    if rule.cidr:
        op = _OPERATORS[rule.match_operator]
        net = str(ipaddress.ip_network(rule.cidr, strict=False))
        if rule.prefix_length is not None:
            top = 32 if version == 4 else 128
            lo = ipaddress.ip_network(net).prefixlen
            hi = top
            if rule.prefix_length.min is not None:
                lo = max(lo, rule.prefix_length.min)
            if rule.prefix_length.max is not None:
                hi = min(hi, rule.prefix_length.max)
            net = f"[ {net}{{{lo},{hi}}} ]"
        conditions.append(f"(net {op} {net})")
    if rule.source == "RemotePeers":
        conditions.append("((defined(source))&&(source ~ [ RTS_BGP ]))")
    if rule.interface:
        conditions.append(f'((defined(ifname))&&(ifname ~ "{rule.interface}"))')
    action = f"{rule.action.lower()};"
    if conditions:
        return f"if ({'&&'.join(conditions)}) then {{ {action} }}"
    return action


def _filter_functions(snap: Snapshot, version: int) -> tuple[dict[str, FilterFunction], list[str]]:
    """BIRD functions for every BGPFilter with rules for ``version``, by (filter, direction)."""
    out: dict[str, FilterFunction] = {}
    problems: list[str] = []
    for name in sorted(snap.filters):
        spec = snap.filters[name].spec
        for direction in ("import", "export"):
            rules = getattr(spec, f"{direction}_v{version}") or []
            if not rules:
                continue
            try:
                lines = tuple(_filter_statement(r, version) for r in rules)
            except (KeyError, ValueError, TypeError) as exc:
                problems.append(f"BGPFilter {name} {direction}V{version}: {exc}")
                continue
            out[f"{name}/{direction}"] = FilterFunction(
                name, filter_function_name(name, direction, version), lines
            )
    return out, problems


# --- pools and blocks ------------------------------------------------------------------------


def _pool_rules(snap: Snapshot, version: int, program_cluster_routes: bool) -> dict[str, Any]:
    disabled, export, kernel = [], [], []
    for pool in snap.pools.values():
        net = pool.spec.network
        if net is None or net.version != version:
            continue
        cidr = str(net)
        vxlan = pool.spec.vxlan_mode in ("Always", "CrossSubnet")
        ipip = pool.spec.ipip_mode in ("Always", "CrossSubnet")
        if pool.spec.disable_bgp_export:
            disabled.append(cidr)
        else:
            export.append(cidr)
        if vxlan:
            kernel.append(
                f"if ( net ~ {cidr} ) then {{ reject; }}  # VXLAN routes are handled by Felix."
            )
        elif ipip or not program_cluster_routes:
            kernel.append(
                f"if ( net ~ {cidr} ) then {{ reject; }}  # Cluster routes are handled by Felix."
            )
        elif version == 4:
            kernel.append(f"if ( net ~ {cidr} ) then {{ accept; }}")
    return {
        "disabled_pools": tuple(sorted(disabled)),
        "export_pools": tuple(sorted(export)),
        "kernel_rules": tuple(sorted(kernel)),
    }


def _blocks(affinities: list[BlockAffinity]) -> tuple[Block, ...]:
    def key(a: BlockAffinity) -> tuple[int, int]:
        net = ipaddress.ip_network(a.cidr)
        return int(net.network_address), net.prefixlen

    return tuple(Block(a.cidr, a.state, a.confirmed) for a in sorted(affinities, key=key))


def _communities(snap: Snapshot, node: str, version: int) -> tuple[Community, ...]:
    """``prefixAdvertisements`` of ``node.<name>`` if it has any, else of ``default``."""
    ncfg = node_config(snap, node)
    cfg = ncfg if ncfg is not None and ncfg.prefix_advertisements else global_config(snap)
    named = {c.name: c.value for c in cfg.communities or [] if c.name and c.value}
    out = []
    for adv in cfg.prefix_advertisements or []:
        if not adv.cidr:
            continue
        net = ipaddress.ip_network(adv.cidr, strict=False)
        if net.version != version:
            continue
        values = set()
        for c in adv.communities or []:
            value = c if community_problem(c) is None else named.get(c)
            if value and community_problem(value) is None:
                values.add(value)
        statements = []
        for value in sorted(values):
            parts = value.split(":")
            if len(parts) == 2:
                statements.append(f"bgp_community.add(({parts[0]}, {parts[1]}));")
            else:
                statements.append(f"bgp_large_community.add(({', '.join(parts)}));")
        if statements:
            out.append(Community(str(net), tuple(statements)))
    return tuple(out)


# --- peers -------------------------------------------------------------------------------------


def _password(ref: Any, secrets: SecretLookup | None, what: str, notes: list[str]) -> str | None:
    if ref is None or ref.secret_key_ref is None:
        return None
    sk = ref.secret_key_ref
    value = secrets(sk.name or "", sk.key) if secrets is not None else None
    if value is None:
        notes.append(f"{what}: password secret {sk.name}/{sk.key} not readable; no password")
        return None
    if not _BIRD_STRING_OK.match(value):
        notes.append(f"{what}: password holds a quote, backslash or newline; not usable by BIRD")
        return None
    return value


def _bird_peer(
    p: Peering,
    me: NodeInfo,
    fam_ip: str,
    view_as: int,
    snap: Snapshot,
    glob: Any,
    functions: dict[str, FilterFunction],
    opts: RenderOptions,
    strict_bind: bool,
) -> BirdPeer:
    notes: list[str] = []
    spec = p.bgp_peer.spec if p.bgp_peer is not None else None
    origin = f"BGPPeer {p.bgp_peer.name}" if p.bgp_peer is not None else f"node {p.peer_node}"
    local_as = parse_as_number(spec.local_as_number) if spec is not None else None
    effective_as = local_as or view_as
    internal = p.as_number == effective_as
    source = fam_ip
    password = None
    gr_time: int | None = None
    keepalive = None
    next_hop_self = next_hop_keep = False
    allow_local_as = ttl = None
    passive = False
    if p.kind == "mesh":
        password = _password(glob.node_mesh_password, opts.secrets, "node mesh", notes)
        gr_time = _seconds(glob.node_mesh_max_restart_time)
        passive = p.ip > fam_ip
    else:
        assert spec is not None
        if (spec.source_address or "UseNodeIP") != "UseNodeIP" and not strict_bind:
            source = None
        password = _password(spec.password, opts.secrets, origin, notes)
        gr_time = _seconds(spec.max_restart_time)
        keepalive = _seconds(spec.keepalive_time)
        if spec.next_hop_mode == "Self":
            next_hop_self = True
        elif spec.next_hop_mode == "Keep" or (spec.keep_original_next_hop and not internal):
            next_hop_keep = True
        allow_local_as = spec.num_allowed_local_as_numbers or None
        ttl = spec.ttl_security or None
        if p.kind == "global" and p.calico_node and p.ip > fam_ip:
            passive = True
    rr_client = bool(internal and me.rr_cluster_id and p.rr_cluster_id != me.rr_cluster_id)
    hold = None
    if keepalive is not None:
        keepalive = max(1, min(keepalive, 65535))
        default_hold = opts.timers.hold_time or DEFAULT_HOLD_TIME
        if keepalive > default_hold:  # BIRD: keepalive must not exceed the hold time
            hold = min(65535, keepalive * 3)
            notes.append(f"hold time raised to {hold}s to fit keepaliveTime")
    import_lines: list[str] = []
    export_lines: list[str] = []
    for fname in (spec.filters or []) if spec is not None else []:
        found = False
        for direction, lines in (("import", import_lines), ("export", export_lines)):
            fn = functions.get(f"{fname}/{direction}")
            if fn is not None:
                lines.append(f"{fn.name}();")
                found = True
        if not found and fname not in snap.filters:
            notes.append(f"BGPFilter {fname} does not exist; ignored")
    import_lines.append("accept;")
    suffix = "" if p.version == 4 else "_v6"
    export_lines += [
        f"calico_export_to_bgp_peers{suffix}({'true' if internal else 'false'});",
        "reject;",
    ]
    for note in notes:
        log.warning("%s (peer %s): %s", me.name, p.name, note)
    description = "Connection to BGP peer"
    if rr_client:
        description = "Connection to route reflector client"
    elif p.rr_cluster_id and internal:
        description = "Connection to route reflector"
    return BirdPeer(
        kind=p.kind,
        name=p.name,
        origin=origin if p.kind != "mesh" else f"node {p.peer_node} ({p.ip})",
        ip=p.ip,
        port=p.port,
        as_number=p.as_number,
        description=description if description != "Connection to BGP peer" else "",
        local_as=local_as,
        local_port=me.listen_port,
        source_address=source,
        passive=passive,
        password=password,
        graceful_restart_time=gr_time,
        hold_time=hold,
        keepalive_time=keepalive,
        rr_client=rr_client,
        rr_cluster_id=me.rr_cluster_id if rr_client else None,
        allow_local_as=allow_local_as,
        ttl_security=ttl,
        next_hop_self=next_hop_self,
        next_hop_keep=next_hop_keep,
        import_lines=tuple(import_lines),
        export_lines=tuple(export_lines),
        notes=tuple(notes),
    )


# --- the view ----------------------------------------------------------------------------------


def build_view(snap: Snapshot, node: str, opts: RenderOptions | None = None) -> BirdView:
    """The view model of ``node``'s BIRD configuration (raises RenderError if impossible)."""
    opts = opts or RenderOptions()
    nodes = cluster_nodes(snap)
    me = nodes.get(node)
    if me is None:
        raise RenderError(f"there is no Node resource named {node!r} yet")
    if not me.ipv4 and not me.ipv6:
        raise RenderError(f"Node {node} has no BGP address (spec.bgp.ipv4Address/ipv6Address)")
    glob = global_config(snap)
    ncfg = node_config(snap, node)
    if opts.router_id == "hash":
        router_id = hash_to_ipv4(node)
    elif opts.router_id:
        router_id = opts.router_id
    else:
        router_id = me.ipv4 or hash_to_ipv4(node)
    strict_bind = glob.bind_mode == "NodeIP"
    program_cluster_routes = glob.program_cluster_routes != "Disabled"
    ignored = [f'-"{i}"' for i in glob.ignored_interfaces or []]
    direct = ", ".join([*ignored, '-"cali*"', '-"kube-ipvs*"', '"*"'])
    all_peers = compute_peerings(snap, node)
    families = []
    for version in (4, 6):
        fam_ip = me.ip(version)
        if not fam_ip:
            continue  # the family is off on this node: no kernel, static or BGP protocols
        functions, problems = _filter_functions(snap, version)
        affinities = [a for a in snap.affinities.values() if a.version == version]
        blocks = _blocks(affinities)
        static = [
            f"route {b.cidr} blackhole;"
            for b in blocks
            if ipaddress.ip_network(b.cidr).prefixlen != (32 if version == 4 else 128)
        ]
        peers = []
        for p in all_peers:
            if p.version != version:
                continue
            bp = _bird_peer(p, me, fam_ip, me.as_number, snap, glob, functions, opts, strict_bind)
            peers.append(bp)
            spec = p.bgp_peer.spec if p.bgp_peer is not None else None
            if spec is not None and spec.reachable_by and p.kind != "mesh":
                static.append(
                    f"route {p.ip}/{32 if version == 4 else 128} via {spec.reachable_by};"
                )
        if me.rr_cluster_id:
            mesh_comment = (
                f"# This node ({node}) is configured as a route reflector with cluster "
                f"ID {me.rr_cluster_id};\n# ignore node-to-node mesh setting."
            )
        elif not glob.mesh_enabled():
            mesh_comment = "# Node-to-node mesh disabled"
        else:
            mesh_comment = ""
        families.append(
            Family(
                version=version,
                node_ip=fam_ip,
                peers=tuple(peers),
                blocks=blocks,
                static_routes=tuple(dict.fromkeys(static)),
                communities=_communities(snap, node, version),
                filter_functions=tuple(functions.values()),
                mesh_comment=mesh_comment,
                skipped=tuple(problems),
                **_pool_rules(snap, version, program_cluster_routes),
            )
        )
    for problem in (s for f in families for s in f.skipped):
        log.warning("%s: %s", node, problem)
    return BirdView(
        node_name=node,
        router_id=router_id,
        as_number=me.as_number,
        debug=_debug(glob, ncfg),
        direct_interfaces=direct,
        timers=opts.timers,
        kernel_scan_time=opts.kernel_scan_time,
        strict_bind=strict_bind,
        families=tuple(families),
    )


@cache
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("tortie.confd", "templates"),
        trim_blocks=False,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def render_view(view: BirdView) -> str:
    text = _environment().get_template("bird.cfg.j2").render(v=view)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def render(snap: Snapshot, node: str, opts: RenderOptions | None = None) -> str:
    """``node``'s complete ``bird.cfg`` (raises RenderError when it cannot be rendered yet)."""
    return render_view(build_view(snap, node, opts))

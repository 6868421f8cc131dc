"""tortie-node's environment parsing: backends, IP settings, methods, AS, default pools."""

from __future__ import annotations

import pytest

from tortie.node.config import (
    AutodetectMethod,
    ConfigError,
    NodeConfig,
    env_bool,
    parse_as,
    parse_backend,
    parse_encap_mode,
    parse_ip_setting,
    parse_method,
)


def cfg(**env: str) -> NodeConfig:
    return NodeConfig.from_env(env)


# --- backend selection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "backend"),
    [
        ({}, "bird"),
        ({"CALICO_NETWORKING_BACKEND": "bird"}, "bird"),
        ({"CALICO_NETWORKING_BACKEND": "VXLAN"}, "vxlan"),
        ({"CALICO_NETWORKING_BACKEND": "none"}, "none"),
        ({"CALICO_NETWORKING": "false"}, "none"),
        ({"CALICO_NETWORKING": "false", "CALICO_NETWORKING_BACKEND": "bird"}, "none"),
        ({"CALICO_NETWORKING": "true", "CALICO_NETWORKING_BACKEND": "vxlan"}, "vxlan"),
    ],
)
def test_backend_selection(env: dict[str, str], backend: str) -> None:
    assert parse_backend(env) == backend


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"gobgp.*use bird, vxlan or none"):
        parse_backend({"CALICO_NETWORKING_BACKEND": "gobgp"})


def test_backend_properties() -> None:
    assert cfg().runs_bird and cfg().networking
    v = cfg(CALICO_NETWORKING_BACKEND="vxlan")
    assert v.networking and not v.runs_bird
    n = cfg(CALICO_NETWORKING_BACKEND="none")
    assert not n.networking and not n.runs_bird


# --- booleans, addresses, AS -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("n", False),
        ("f", False),
        ("true", True),
        ("yes", True),
        ("anything", True),
        ("", True),
    ],
)
def test_env_bool_follows_calico(value: str, expected: bool) -> None:
    assert env_bool({"X": value}, "X", not expected) is expected


def test_env_bool_default_when_unset() -> None:
    assert env_bool({}, "X", True) is True
    assert env_bool({}, "X", False) is False


@pytest.mark.parametrize("value", ["", "autodetect", "none", "10.0.0.5", "10.0.0.5/24"])
def test_ip_settings_accepted(value: str) -> None:
    assert parse_ip_setting(value, 4, "IP") == value


@pytest.mark.parametrize("value", ["10.0.0", "fd00::1", "eth0", "10.0.0.5/33"])
def test_ip_settings_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="IP="):
        parse_ip_setting(value, 4, "IP")


def test_ip6_setting_wants_ipv6() -> None:
    assert parse_ip_setting("fd00::5/64", 6, "IP6") == "fd00::5/64"
    with pytest.raises(ConfigError, match="not an IPv6 address"):
        parse_ip_setting("10.0.0.1", 6, "IP6")


@pytest.mark.parametrize(
    ("text", "number"), [("", None), ("64512", 64512), ("1.10", 65546), ("4294967295", 4294967295)]
)
def test_as_numbers(text: str, number: int | None) -> None:
    assert parse_as(text) == number


@pytest.mark.parametrize("text", ["-1", "4294967296", "abc", "65536.1"])
def test_bad_as_numbers(text: str) -> None:
    with pytest.raises(ConfigError, match=r"AS=.*not valid"):
        parse_as(text)


def test_router_id() -> None:
    assert cfg(CALICO_ROUTER_ID="hash").router_id == "hash"
    assert cfg(CALICO_ROUTER_ID="10.1.1.1").router_id == "10.1.1.1"
    with pytest.raises(ConfigError, match="CALICO_ROUTER_ID"):
        cfg(CALICO_ROUTER_ID="node1")


# --- autodetection methods ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "method"),
    [
        ("", AutodetectMethod("first-found")),
        ("first-found", AutodetectMethod("first-found")),
        ("interface=eth0", AutodetectMethod("interface", ("eth0",))),
        ("interface=eth.*, enp0s.*", AutodetectMethod("interface", ("eth.*", "enp0s.*"))),
        ("skip-interface=br-.*", AutodetectMethod("skip-interface", ("br-.*",))),
        ("cidr=10.0.0.0/8,fd00::/8", AutodetectMethod("cidr", ("10.0.0.0/8", "fd00::/8"))),
        ("can-reach=8.8.8.8", AutodetectMethod("can-reach", ("8.8.8.8",))),
        ("can-reach=www.example.com", AutodetectMethod("can-reach", ("www.example.com",))),
    ],
)
def test_methods(text: str, method: AutodetectMethod) -> None:
    assert parse_method(text) == method


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("first", "invalid IP autodetection method"),
        ("interface", "invalid IP autodetection method"),
        ("interface=", "needs a value"),
        ("interface=eth[", "invalid interface regex"),
        ("cidr=10.0.0.0/33", "is not a CIDR"),
        ("can-reach=a,b", "one destination"),
        ("kubernetes-internal-ip", "needs a Kubernetes node"),
    ],
)
def test_bad_methods(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_method(text)


def test_method_str_round_trips() -> None:
    assert str(parse_method("interface=eth0, eth1")) == "interface=eth0,eth1"


# --- pools -------------------------------------------------------------------------------------


def test_default_pools() -> None:
    v4, v6 = cfg().pools
    assert (v4.name, v4.enabled, v4.cidr, v4.block_size) == ("default-ipv4-ippool", True, None, 26)
    assert (v4.ipip_mode, v4.vxlan_mode, v4.nat_outgoing, v4.node_selector) == (
        "Never",
        "Never",
        True,
        "",
    )
    assert (v6.name, v6.block_size, v6.nat_outgoing, v6.ipip_mode) == (
        "default-ipv6-ippool",
        122,
        False,
        "Never",
    )


def test_pool_environment() -> None:
    v4, v6 = cfg(
        CALICO_IPV4POOL_CIDR="10.65.0.0/16",
        CALICO_IPV4POOL_BLOCK_SIZE="24",
        CALICO_IPV4POOL_VXLAN="CrossSubnet",
        CALICO_IPV4POOL_NAT_OUTGOING="false",
        CALICO_IPV4POOL_NODE_SELECTOR="zone == 'a'",
        CALICO_IPV4POOL_DISABLE_BGP_EXPORT="true",
        CALICO_IPV6POOL_CIDR="fd00:10::/64",
        CALICO_IPV6POOL_VXLAN="always",
        CALICO_IPV6POOL_NAT_OUTGOING="yes",
    ).pools
    assert v4.spec(v4.cidr or "") == {
        "cidr": "10.65.0.0/16",
        "blockSize": 24,
        "ipipMode": "Never",
        "vxlanMode": "CrossSubnet",
        "natOutgoing": False,
        "nodeSelector": "zone == 'a'",
        "disableBGPExport": True,
    }
    assert (v6.cidr, v6.vxlan_mode, v6.nat_outgoing) == ("fd00:10::/64", "Always", True)


def test_pool_cidr_is_normalised_to_its_network() -> None:
    assert cfg(CALICO_IPV4POOL_CIDR="10.65.1.7/16").pools[0].cidr == "10.65.0.0/16"


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("", "Never"),
        ("off", "Never"),
        ("Never", "Never"),
        ("always", "Always"),
        ("CrossSubnet", "CrossSubnet"),
        ("cross-subnet", "CrossSubnet"),
    ],
)
def test_encap_mode_spellings(value: str, mode: str) -> None:
    assert parse_encap_mode(value, "X") == mode


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"CALICO_IPV4POOL_CIDR": "10.65.0.0"}, "invalid CIDR specified in CALICO_IPV4POOL_CIDR"),
        ({"CALICO_IPV4POOL_CIDR": "fd00::/64"}, "invalid CIDR specified in CALICO_IPV4POOL_CIDR"),
        ({"CALICO_IPV6POOL_CIDR": "10.0.0.0/8"}, "invalid CIDR specified in CALICO_IPV6POOL_CIDR"),
        ({"CALICO_IPV4POOL_BLOCK_SIZE": "19"}, "invalid block size"),
        ({"CALICO_IPV6POOL_BLOCK_SIZE": "129"}, "invalid block size"),
        ({"CALICO_IPV4POOL_BLOCK_SIZE": "x"}, "is not a number"),
        ({"CALICO_IPV4POOL_IPIP": "sometimes"}, "unrecognized mode"),
        (
            {"CALICO_IPV4POOL_IPIP": "Always", "CALICO_IPV4POOL_VXLAN": "Always"},
            "both IPIP and VXLAN",
        ),
        ({"CALICO_IPV4POOL_NODE_SELECTOR": "a ==="}, "invalid node selector"),
        ({"NO_DEFAULT_POOLS": "true", "CALICO_IPV4POOL_CIDR": "10.0.0.0/8"}, "NO_DEFAULT_POOLS"),
    ],
)
def test_bad_pool_environment(env: dict[str, str], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        NodeConfig.from_env(env)


def test_pool_none_and_no_default_pools() -> None:
    v4, v6 = cfg(CALICO_IPV4POOL_CIDR="none").pools
    assert not v4.enabled and v6.enabled
    c = cfg(NO_DEFAULT_POOLS="true")
    assert c.no_default_pools and not any(p.enabled for p in c.pools)
    assert not cfg(NO_DEFAULT_POOLS="yes").no_default_pools  # calico/node wants exactly "true"


def test_block_size_of_a_skipped_pool_is_not_checked() -> None:
    assert not cfg(CALICO_IPV4POOL_CIDR="none", CALICO_IPV4POOL_BLOCK_SIZE="8").pools[0].enabled


# --- paths -------------------------------------------------------------------------------------


def test_paths_and_logging_defaults() -> None:
    c = cfg()
    assert c.nodename_file == "/var/lib/calico/nodename"
    assert c.bird_socket == "/var/run/calico/bird.ctl"
    assert c.status_file == "/var/run/calico/tortie-node.json"
    assert (c.log_dir, c.file_logging) == ("/var/log/calico", True)
    d = cfg(TORTIE_RUN_DIR="/tmp/r", CALICO_DISABLE_FILE_LOGGING="true", TORTIE_LOG_KEEP="2")
    assert (d.bird_socket, d.file_logging, d.log_keep) == ("/tmp/r/bird.ctl", False, 2)
    assert cfg(TORTIE_RUN_DIR="/tmp/r", BIRD_CTL="/s/b.ctl").bird_socket == "/s/b.ctl"
    with pytest.raises(ConfigError, match="TORTIE_LOG_MAX_BYTES"):
        cfg(TORTIE_LOG_MAX_BYTES="0")


def test_supervised_services_follow_backend_and_libnetwork(tmp_path: object) -> None:
    from tortie.node.daemon import NodeDaemon

    def services(**env: str) -> list[str]:
        env = {"TORTIE_LOG_DIR": str(tmp_path), "TORTIE_RUN_DIR": str(tmp_path), **env}
        daemon = NodeDaemon(NodeConfig.from_env(env), env)
        daemon.node_name = "n1"
        return [s.spec.name for s in daemon.build_supervisor().services]

    assert services() == ["felix", "cni", "confd", "bird"]
    assert services(CALICO_NETWORKING_BACKEND="none", TORTIE_CNI_DAEMON="false") == ["felix"]
    assert services(CALICO_LIBNETWORK_ENABLED="true", CALICO_NETWORKING_BACKEND="vxlan") == [
        "felix",
        "cni",
        "libnetwork",
    ]

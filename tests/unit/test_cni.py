"""The CNI plugin's pure parts: protocol (env, CNI_ARGS, versions, errors, results in every
spec version), Calico's network-config keys, identifiers and endpoint documents, the daemon's
wire format, the launchers, and `run()` for what needs no datastore."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tortie.cni import spec
from tortie.cni.client import decode_request, encode_request, socket_address
from tortie.cni.config import parse_netconf
from tortie.cni.dataplane import _eui64_link_local
from tortie.cni.endpoint import WorkloadIDs, build_endpoint
from tortie.cni.install import install_plugins, launcher, netconf
from tortie.cni.ipam import go_timestamp
from tortie.cni.plugin import run, to_cni_error
from tortie.cni.spec import CmdArgs, CNIError, IPConfig, Result, Route
from tortie.lab.workload import veth_name

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


def conf(**kw: Any) -> bytes:
    base: dict[str, Any] = {"cniVersion": "1.0.0", "name": "net1", "type": "tortie",
                            "nodename": "node1"}
    base.update(kw)
    return json.dumps(base).encode()


# --- environment and CNI_ARGS ------------------------------------------------------------------


def test_cmd_args_from_env() -> None:
    args = spec.cmd_args_from_env(dict(ENV, CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=web",
                                       CNI_PATH="/a:/b"), b"{}")
    assert (args.command, args.container_id, args.netns, args.ifname) == (
        "ADD", "abc123", "/run/netns/x", "eth0")
    assert args.path == ("/a", "/b")
    assert args.cni_args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "CNI_COMMAND is missing"),
        ({"CNI_COMMAND": "FROB"}, "unknown CNI_COMMAND"),
        ({**ENV, "CNI_CONTAINERID": ""}, "CNI_CONTAINERID"),
        ({**ENV, "CNI_NETNS": ""}, "CNI_NETNS"),
        ({**ENV, "CNI_IFNAME": "a/b"}, "invalid CNI_IFNAME"),
        ({**ENV, "CNI_IFNAME": "x" * 16}, "invalid CNI_IFNAME"),
        ({**ENV, "CNI_CONTAINERID": "-bad"}, "invalid CNI_CONTAINERID"),
        ({**ENV, "CNI_ARGS": "novalue"}, "invalid CNI_ARGS pair"),
    ],
)
def test_bad_environment_is_code_4(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(CNIError) as info:
        spec.cmd_args_from_env(env, b"")
    assert info.value.code == spec.INVALID_ENVIRONMENT
    assert fragment in str(info.value)


def test_del_needs_no_netns_or_path() -> None:
    args = spec.cmd_args_from_env({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": "",
                                   "CNI_PATH": ""}, b"")
    assert args.netns == "" and args.path == ()


def test_version_and_status_need_no_container() -> None:
    for cmd in ("VERSION", "STATUS", "GC"):
        assert spec.cmd_args_from_env({"CNI_COMMAND": cmd}, b"").command == cmd


# --- versions and errors -------------------------------------------------------------------------


def test_versions() -> None:
    assert spec.parse_version("0.3.1") == (0, 3, 1)
    assert spec.parse_version("1.1") == (1, 1, 0)
    for v in spec.SUPPORTED_VERSIONS:
        assert spec.check_version(v) == v
    with pytest.raises(CNIError) as info:
        spec.check_version("2.0.0")
    assert info.value.code == spec.INCOMPATIBLE_VERSION
    with pytest.raises(CNIError):
        spec.parse_version("banana")


def test_error_json() -> None:
    err = CNIError(7, "bad config", "the details")
    assert err.to_json("0.4.0") == {"cniVersion": "0.4.0", "code": 7, "msg": "bad config",
                                    "details": "the details"}
    assert "details" not in CNIError(11, "later").to_json()


def test_to_cni_error_mapping() -> None:
    from tortie.datastore.backend import DatastoreError, Unavailable
    from tortie.ipam import PoolsExhausted, TooManyConflicts

    assert to_cni_error(Unavailable("down")).code == spec.TRY_AGAIN_LATER
    assert to_cni_error(DatastoreError("boom")).code == spec.DATASTORE_ERROR
    assert to_cni_error(PoolsExhausted("full")).code == spec.NO_ADDRESSES
    assert to_cni_error(TooManyConflicts("busy")).code == spec.TRY_AGAIN_LATER
    assert to_cni_error(ValueError("x")).code == spec.PLUGIN_ERROR
    same = CNIError(3, "x")
    assert to_cni_error(same) is same


# --- results --------------------------------------------------------------------------------------


def _result() -> Result:
    return Result(
        interfaces=[spec.Interface("cali123", "ee:ee:ee:ee:ee:ee", mtu=1400),
                    spec.Interface("eth0", "02:00:00:00:00:01", sandbox="/run/netns/x")],
        ips=[IPConfig(ipaddress.ip_interface("10.0.0.5/32"), interface=1),
             IPConfig(ipaddress.ip_interface("fd00::5/128"), interface=1)],
        routes=[Route("0.0.0.0/0", "169.254.1.1"), Route("::/0", "fe80::1")],
        dns={"nameservers": ["10.0.0.10"]},
    )


def test_result_1_0_0() -> None:
    out = _result().to_json("1.0.0")
    assert out == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "cali123", "mac": "ee:ee:ee:ee:ee:ee"},
                       {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x"}],
        "ips": [{"interface": 1, "address": "10.0.0.5/32"},
                {"interface": 1, "address": "fd00::5/128"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}],
        "dns": {"nameservers": ["10.0.0.10"]},
    }


def test_result_1_1_0_has_mtu() -> None:
    out = _result().to_json("1.1.0")
    assert out["interfaces"][0]["mtu"] == 1400
    assert "version" not in out["ips"][0]


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_result_0_3_and_0_4_have_ip_versions(version: str) -> None:
    out = _result().to_json(version)
    assert out["cniVersion"] == version
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert "mtu" not in out["interfaces"][0]


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_result_legacy(version: str) -> None:
    out = _result().to_json(version)
    assert out == {
        "cniVersion": version,
        "ip4": {"ip": "10.0.0.5/32", "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]},
        "ip6": {"ip": "fd00::5/128", "routes": [{"dst": "::/0", "gw": "fe80::1"}]},
        "dns": {"nameservers": ["10.0.0.10"]},
    }


@pytest.mark.parametrize("version", spec.SUPPORTED_VERSIONS)
def test_result_round_trips_through_every_version(version: str) -> None:
    back = Result.from_json(_result().to_json(version))
    assert [str(ip.address) for ip in back.ips] == ["10.0.0.5/32", "fd00::5/128"]
    assert [r.dst for r in back.routes] == ["0.0.0.0/0", "::/0"]


def test_result_decode_errors_are_code_6() -> None:
    with pytest.raises(CNIError) as info:
        Result.from_json({"ips": [{"address": "not-an-ip"}]})
    assert info.value.code == spec.DECODE_FAILURE


def test_merge_results_shifts_interface_indexes() -> None:
    prev = Result(interfaces=[spec.Interface("lo")],
                  ips=[IPConfig(ipaddress.ip_interface("127.0.0.1/8"), interface=0)])
    merged = spec.merge_results(prev, _result())
    assert [i.name for i in merged.interfaces] == ["lo", "cali123", "eth0"]
    assert [ip.interface for ip in merged.ips] == [0, 2, 2]
    assert spec.merge_results(None, _result()) == _result()


def test_sandbox_addresses() -> None:
    res = _result()
    assert len(spec.sandbox_addresses(res, "eth0", "/run/netns/x")) == 2
    assert spec.sandbox_addresses(res, "eth1", "/run/netns/x") == []
    ipam_only = Result(ips=[IPConfig(ipaddress.ip_interface("10.0.0.5/26"))])
    assert len(spec.sandbox_addresses(ipam_only, "eth0", "/x")) == 1


# --- network configuration ------------------------------------------------------------------------


def test_netconf_defaults() -> None:
    c = parse_netconf(conf())
    assert (c.cni_version, c.name, c.nodename, c.mtu, c.num_queues) == ("1.0.0", "net1",
                                                                         "node1", 0, 1)
    assert c.ipam.type == "tortie-ipam"
    assert (c.ipam.assign_ipv4, c.ipam.assign_ipv6) == (True, False)
    assert c.ipam_lock_file == "/var/run/calico/ipam.lock"
    assert c.policy_type == "" and not c.allow_ip_forwarding


def test_netconf_calico_keys() -> None:
    c = parse_netconf(conf(
        mtu=1400, num_queues=2, log_level="DEBUG", log_file_path="/tmp/x.log",
        ipam={"type": "tortie-ipam", "assign_ipv4": "false", "assign_ipv6": "true",
              "ipv4_pools": ["10.0.0.0/16", "pool2"], "ipv6_pools": ["fd00::/48"]},
        policy={"type": "k8s", "k8s_api_root": "ignored"},
        container_settings={"allow_ip_forwarding": True},
        etcd_endpoints="http://10.1.1.1:2379", ipam_lock_file="/tmp/l",
        capabilities={"portMappings": True}, runtimeConfig={}, unknown_key=1,
    ))
    assert c.mtu == 1400 and c.num_queues == 2 and c.log_level == "debug"
    assert (c.ipam.assign_ipv4, c.ipam.assign_ipv6) == (False, True)
    assert c.ipam.ipv4_pools == ("10.0.0.0/16", "pool2")
    assert c.policy_type == "k8s" and c.allow_ip_forwarding
    assert c.datastore_config({}).etcd_endpoints == ("http://10.1.1.1:2379",)


def test_config_keys_win_over_the_environment() -> None:
    env = {"ETCD_ENDPOINTS": "http://10.9.9.9:2379", "CALICO_ETCD_ENDPOINTS": "http://10.8.8.8:2379"}
    assert parse_netconf(conf()).datastore_config(env).etcd_endpoints == ("http://10.8.8.8:2379",)
    c = parse_netconf(conf(etcd_endpoints="http://10.1.1.1:2379"))
    assert c.datastore_config(env).etcd_endpoints == ("http://10.1.1.1:2379",)


@pytest.mark.parametrize(
    ("stdin", "code", "fragment"),
    [
        (b"{not json", spec.DECODE_FAILURE, "failed to load netconf"),
        (b"[1]", spec.DECODE_FAILURE, "JSON object"),
        (conf(name="bad name!"), spec.INVALID_CONFIG, "invalid network name"),
        (conf(name=""), spec.INVALID_CONFIG, "no name"),
        (conf(mtu="1500"), spec.INVALID_CONFIG, "'mtu' must be a int"),
        (conf(mtu=20), spec.INVALID_CONFIG, "invalid mtu"),
        (conf(ipam={"assign_ipv4": "maybe"}), spec.INVALID_CONFIG, "assign_ipv4"),
        (conf(ipam={"ipv4_pools": "10.0.0.0/8"}), spec.INVALID_CONFIG, "ipv4_pools"),
        (conf(datastore_type="kubernetes"), spec.UNSUPPORTED_FIELD, "kubernetes"),
        (conf(etcd_scheme="http"), spec.UNSUPPORTED_FIELD, "etcd_endpoints"),
        (conf(etcd_discovery_srv="x"), spec.UNSUPPORTED_FIELD, "etcd_discovery_srv"),
        (conf(log_level="loud"), spec.INVALID_CONFIG, "log_level"),
        (conf(prevResult=[1]), spec.INVALID_CONFIG, "prevResult"),
        (conf(args={"cni": {"labels": [{"value": "x"}]}}), spec.INVALID_CONFIG, "labels"),
    ],
)
def test_netconf_errors(stdin: bytes, code: int, fragment: str) -> None:
    with pytest.raises(CNIError) as info:
        parse_netconf(stdin)
    assert info.value.code == code
    assert fragment in str(info.value)


def test_nodename_precedence(tmp_path: Path) -> None:
    f = tmp_path / "nodename"
    assert parse_netconf(conf(nodename_file=str(f))).nodename == "node1"  # nodename wins
    raw = json.loads(conf())
    del raw["nodename"]
    raw["nodename_file"] = str(f)
    raw["hostname"] = "legacy-host"
    assert parse_netconf(json.dumps(raw).encode()).nodename == "legacy-host"
    f.write_text("from-file\n")
    assert parse_netconf(json.dumps(raw).encode()).nodename == "from-file"
    del raw["hostname"]
    raw["nodename_file"] = str(tmp_path / "missing")
    assert parse_netconf(json.dumps(raw).encode()).nodename  # the host name
    raw["nodename_file_optional"] = False
    with pytest.raises(CNIError, match="does not exist"):
        parse_netconf(json.dumps(raw).encode())


def test_labels_from_args() -> None:
    c = parse_netconf(conf(args={
        "cni": {"labels": [{"key": "app", "value": "web"}]},
        "org.apache.mesos": {"network_info": {"labels": {"labels": [
            {"key": "tier", "value": "front"}]}}},
    }))
    assert dict(c.labels) == {"app": "web", "tier": "front"}


def test_valid_attachments() -> None:
    c = parse_netconf(conf(**{"cni.dev/valid-attachments": [
        {"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth1"}]}))
    assert c.valid_attachments == (("a", "eth0"), ("b", "eth1"))
    assert parse_netconf(conf()).valid_attachments is None


# --- identifiers and endpoint documents -----------------------------------------------------------


def _args(cni_args: str = "", cid: str = "0123456789abcdef") -> CmdArgs:
    return CmdArgs("ADD", cid, "/run/netns/x", "eth0", cni_args, ("/opt/cni/bin",), b"")


def test_identifiers_plain_cni() -> None:
    ids = WorkloadIDs.from_args(_args("K8S_POD_NAME=c1;IgnoreUnknown=1"), "node-1", "net1")
    assert ids.orchestrator == "cni" and ids.namespace == "default"  # podman: no namespace
    assert ids.wep_name == "node--1-cni-0123456789abcdef-eth0"
    assert ids.wep_prefix == "node--1-cni-0123456789abcdef-"
    assert ids.handle_id == "net1.0123456789abcdef"
    assert ids.veth_name == "cali0123456789a"


def test_identifiers_kubernetes() -> None:
    ids = WorkloadIDs.from_args(
        _args("K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=x"),
        "node1", "k8s-pod-network")
    assert (ids.orchestrator, ids.namespace, ids.pod) == ("k8s", "prod", "web-0")
    assert ids.wep_name == "node1-k8s-web--0-eth0"
    assert ids.veth_name == veth_name("prod", "web-0") and len(ids.veth_name) == 15


def test_endpoint_document_is_what_tortie_api_makes() -> None:
    ids = WorkloadIDs.from_args(_args("K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0"), "node1", "n")
    wep = build_endpoint(ids, ip_networks=["10.0.0.5/32"], interface_name=ids.veth_name,
                         mac="02:00:00:00:00:01", profiles=["kns.prod"], labels={"app": "web"})
    doc = wep.to_dict()
    assert doc["metadata"]["name"] == "node1-k8s-web--0-eth0"
    assert doc["metadata"]["labels"] == {"app": "web", "projectcalico.org/namespace": "prod",
                                         "projectcalico.org/orchestrator": "k8s"}
    assert doc["spec"] == {
        "orchestrator": "k8s", "node": "node1", "containerID": "0123456789abcdef",
        "pod": "web-0", "endpoint": "eth0", "ipNetworks": ["10.0.0.5/32"],
        "profiles": ["kns.prod"], "interfaceName": ids.veth_name, "mac": "02:00:00:00:00:01",
    }


def test_invalid_label_is_a_config_error() -> None:
    ids = WorkloadIDs.from_args(_args(), "node1", "n")
    with pytest.raises(CNIError) as info:
        build_endpoint(ids, ip_networks=["10.0.0.5/32"], interface_name="cali1", mac="",
                       profiles=["n"], labels={"bad key!": "x"})
    assert info.value.code == spec.INVALID_CONFIG


# --- daemon wire format, launchers, small helpers -------------------------------------------------


def test_request_round_trip() -> None:
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "", "ETCD_ENDPOINTS": "http://x:2379",
           "HOME": "/root", "PATH": "/bin", "TORTIE_CNI_FAILPOINT": "veth"}
    data = encode_request("tortie", env, b'{"a": "\\u0000"}\x00\x00tail')
    plugin, got, stdin = decode_request(data)
    assert plugin == "tortie"
    assert got == {k: v for k, v in env.items() if k != "HOME"}  # only what the plugin reads
    assert stdin == b'{"a": "\\u0000"}\x00\x00tail'
    with pytest.raises(ValueError):
        decode_request(b"GET / HTTP/1.1\0\0")


def test_socket_address() -> None:
    assert socket_address("tortie-cni") == "\0tortie-cni"
    assert socket_address("@x") == "\0x"
    assert socket_address("/run/x.sock") == "/run/x.sock"


def test_launchers(tmp_path: Path) -> None:
    text = launcher("tortie", "/usr/bin/python3", ["/src"])
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert "from tortie.cni.client import main" in text and "main('tortie')" in text
    paths = install_plugins(tmp_path / "bin")
    assert [p.name for p in paths] == ["tortie", "tortie-ipam"]
    assert all(os.access(p, os.X_OK) for p in paths)


def test_netconf_helper() -> None:
    c = netconf("net1", etcd_endpoints="http://e:2379", nodename="n1", mtu=1400, policy="k8s")
    assert c["name"] == "net1" and c["plugins"][0]["type"] == "tortie"
    assert c["plugins"][0]["policy"] == {"type": "k8s"}
    single = netconf("net1", etcd_endpoints="http://e:2379", conflist=False)
    assert single["type"] == "tortie" and "plugins" not in single


def test_go_timestamp() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})? \+0000 UTC", go_timestamp())


def test_eui64_link_local() -> None:
    assert _eui64_link_local("ee:ee:ee:ee:ee:ee") == "fe80::ecee:eeff:feee:eeee"


# --- run() without a datastore --------------------------------------------------------------------


def test_run_version() -> None:
    code, out = run("tortie", {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert code == 0
    assert json.loads(out) == {"cniVersion": "1.1.0",
                               "supportedVersions": list(spec.SUPPORTED_VERSIONS)}


@pytest.mark.parametrize(
    ("env", "stdin", "code"),
    [
        ({}, conf(), spec.INVALID_ENVIRONMENT),
        (ENV, b"{{", spec.DECODE_FAILURE),
        (ENV, conf(cniVersion="9.9.9"), spec.INCOMPATIBLE_VERSION),
        ({**ENV, "CNI_COMMAND": "CHECK"}, conf(cniVersion="0.3.1"), spec.INCOMPATIBLE_VERSION),
        ({"CNI_COMMAND": "STATUS"}, conf(cniVersion="1.0.0"), spec.INCOMPATIBLE_VERSION),
        ({"CNI_COMMAND": "GC"}, conf(cniVersion="0.4.0"), spec.INCOMPATIBLE_VERSION),
        ({**ENV, "CNI_COMMAND": "CHECK"}, conf(), spec.INVALID_CONFIG),  # no prevResult
    ],
)
def test_run_errors_are_cni_json(env: dict[str, str], stdin: bytes, code: int) -> None:
    rc, out = run("tortie", env, stdin)
    err = json.loads(out)
    assert rc == 1
    assert err["code"] == code and err["msg"]
    assert err["cniVersion"] in spec.SUPPORTED_VERSIONS

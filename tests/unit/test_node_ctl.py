"""``tortiectl node run`` environment, ``checksystem``'s verdicts, Felix health probes and the
shipped systemd environment file."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tortie.datastore.config import CalicoAPIConfig
from tortie.node.checksystem import compare_versions, format_row, run_checksystem
from tortie.node.config import ConfigError, NodeConfig
from tortie.node.health import Checks, felix_health, run_checks
from tortie.node.launch import RunOptions, datastore_env, node_env, running_pid
from tortie.node.tunnel import vtep_mac

REPO = Path(__file__).resolve().parents[2]


# --- node run ------------------------------------------------------------------------------------


def test_run_flags_become_calico_node_variables() -> None:
    opts = RunOptions(
        name="node7",
        ip="10.0.0.7/24",
        ip6="autodetect",
        as_number="65001",
        ip_method="interface=eth0",
        ip6_method="cidr=fd00::/8",
        log_dir="/tmp/logs",
        backend="vxlan",
        no_default_pools=True,
    )
    datastore = datastore_env(CalicoAPIConfig.for_endpoints("http://10.0.0.1:2379"))
    base = {
        "FELIX_LOGSEVERITYSCREEN": "Debug",
        "ETCD_ENDPOINTS": "http://stale:2379",
        "PATH": "/bin",
    }
    env = node_env(opts, datastore, base)
    assert env == {
        "PATH": "/bin",
        "FELIX_LOGSEVERITYSCREEN": "Debug",  # passed through, as -e would
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": "http://10.0.0.1:2379",  # tortiectl's datastore wins
        "NODENAME": "node7",
        "CALICO_NETWORKING_BACKEND": "vxlan",
        "TORTIE_LOG_DIR": "/tmp/logs",
        "IP": "10.0.0.7/24",
        "IP6": "autodetect",
        "AS": "65001",
        "IP_AUTODETECTION_METHOD": "interface=eth0",
        "IP6_AUTODETECTION_METHOD": "cidr=fd00::/8",
        "NO_DEFAULT_POOLS": "true",
        "CALICO_LIBNETWORK_ENABLED": "true",
        "CALICO_LIBNETWORK_IFPREFIX": "cali",
    }


def test_run_defaults_and_docker_networking() -> None:
    env = node_env(RunOptions(disable_docker_networking=True), {}, {}, hostname=lambda: "Host-A")
    assert env["NODENAME"] == "host-a" and env["CALICO_NETWORKING_BACKEND"] == "bird"
    assert env["CALICO_LIBNETWORK_ENABLED"] == "false" and "IP" not in env


@pytest.mark.parametrize(
    ("opts", "why"),
    [
        (RunOptions(ip="10.0.0"), "--ip="),
        (RunOptions(ip6="10.0.0.1"), "not an IPv6 address"),
        (RunOptions(as_number="x"), "AS number"),
        (RunOptions(ip_method="eth0"), "invalid IP autodetection method"),
        (RunOptions(backend="gobgp"), "--backend=gobgp"),
    ],
)
def test_run_flags_are_validated(opts: RunOptions, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        node_env(opts, {}, {})


def test_datastore_env_with_tls_files_and_inline_pem() -> None:
    cfg = CalicoAPIConfig.for_endpoints(
        "https://e1:2379,https://e2:2379",
        etcd_ca_cert_file="/ca.pem",
        etcd_cert_file="/c.pem",
        etcd_key_file="/k.pem",
    )
    assert datastore_env(cfg) == {
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": "https://e1:2379,https://e2:2379",
        "ETCD_KEY_FILE": "/k.pem",
        "ETCD_CERT_FILE": "/c.pem",
        "ETCD_CA_CERT_FILE": "/ca.pem",
    }
    inline = CalicoAPIConfig.for_endpoints("https://e1:2379", etcd_ca_cert="-----BEGIN...")
    with pytest.raises(ConfigError, match="inline"):
        datastore_env(inline)


def test_running_pid(tmp_path: Path) -> None:
    pidfile = tmp_path / "tortie-node.pid"
    assert running_pid(str(pidfile)) is None
    pidfile.write_text(f"{os.getpid()}\n")  # alive, but pytest is not tortie-node
    assert running_pid(str(pidfile)) is None
    pidfile.write_text("garbage")
    assert running_pid(str(pidfile)) is None


# --- checksystem ---------------------------------------------------------------------------------

ALL_FEATURES_OK: dict[str, str | None] = {
    name: None
    for name in (
        "ipset",
        "iptables",
        "set match",
        "conntrack",
        "mark",
        "MARK",
        "multiport",
        "addrtype",
        "icmp",
        "REJECT",
        "comment",
        "u32",
        "rpfilter",
        "ip6tables",
        "icmp6",
        "vxlan device",
    )
}


def test_checksystem_passes_on_working_features() -> None:
    features = {**ALL_FEATURES_OK, "ipip device": "Operation not supported", "ipvs": "no"}
    report = run_checksystem(release="6.1.0", features=features, which=lambda b: f"/usr/bin/{b}")
    assert report.ok, "\n".join(report.lines)
    assert report.lines[0] == "Checking kernel version..."
    assert report.lines[1] == format_row("6.1.0", "OK")
    assert format_row("ipip device", "FAIL (optional)") in report.lines
    assert report.lines[-1] == "System meets minimum system requirements to run Calico!"


def test_checksystem_fails_without_ipsets_or_bird() -> None:
    features = {**ALL_FEATURES_OK, "ipset": "ipset v7: Kernel error", "set match": "no set"}
    report = run_checksystem(release="6.1.0", features=features, which=lambda b: f"/usr/bin/{b}")
    assert not report.ok
    assert format_row("ipset", "FAIL") in report.lines
    assert report.lines[-1] == (
        "System doesn't meet one or more minimum systems requirements to run Calico"
    )
    no_bird = run_checksystem(
        release="6.1.0",
        features=ALL_FEATURES_OK,
        which=lambda b: None if b == "bird" else f"/usr/bin/{b}",
    )
    assert not no_bird.ok and format_row("bird", "FAIL") in no_bird.lines
    policy_only = run_checksystem(
        release="6.1.0",
        features=ALL_FEATURES_OK,
        backend="none",
        which=lambda b: None if b == "bird" else f"/usr/bin/{b}",
    )
    assert policy_only.ok


def test_kernel_versions() -> None:
    assert compare_versions("6.18.44-fc-v669", "2.6.24")
    assert compare_versions("2.6.24", "2.6.24")
    assert not compare_versions("2.6.18-xen", "2.6.24")
    report = run_checksystem(release="2.6.18", features=ALL_FEATURES_OK, which=lambda b: b)
    assert not report.ok and any("Minimum kernel version" in line for line in report.lines)


# --- Felix health ---------------------------------------------------------------------------


@pytest.fixture
def felix_health_server() -> Iterator[tuple[int, dict[str, int]]]:
    codes = {"/readiness": 503, "/liveness": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(codes.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], codes
    finally:
        server.shutdown()
        server.server_close()


def test_felix_health(felix_health_server: tuple[int, dict[str, int]], tmp_path: Path) -> None:
    port, codes = felix_health_server
    env = {"FELIX_HEALTHHOST": "127.0.0.1", "FELIX_HEALTHPORT": str(port)}
    assert felix_health(env, "liveness") is None
    assert felix_health(env, "readiness") == "readiness probe reporting 503"
    paths = {"bird_socket": "/nonexistent", "nodename_file": "/nonexistent", "status_file": ""}
    failures = run_checks(Checks(felix_ready=True, felix_live=True), env, **paths)
    assert failures == [
        "tortie-node is not ready: felix is not ready: readiness probe reporting 503"
    ]
    codes["/readiness"] = 200
    assert run_checks(Checks(felix_ready=True), env, **paths) == []
    down = {"FELIX_HEALTHHOST": "127.0.0.1", "FELIX_HEALTHPORT": "1"}
    assert "readiness probe failed" in (felix_health(down, "readiness") or "")
    (tmp_path / "nodename").write_text("n1")
    bird = run_checks(
        Checks(bird_ready=True), env, **{**paths, "nodename_file": str(tmp_path / "nodename")}
    )
    assert bird and bird[0].startswith(
        "tortie-node is not ready: BIRD is not ready: cannot connect"
    )


# --- shipped files -------------------------------------------------------------------------------


def test_systemd_environment_file_is_a_valid_configuration() -> None:
    env: dict[str, str] = {}
    for line in (REPO / "deploy" / "systemd" / "tortie-node.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    cfg = NodeConfig.from_env(env)
    assert (cfg.nodename, cfg.backend, str(cfg.ip_method)) == ("node1", "bird", "interface=eth0")
    unit = (REPO / "deploy" / "systemd" / "tortie-node.service").read_text()
    assert "EnvironmentFile=/etc/tortie/tortie-node.env" in unit
    assert "ExecStart=/usr/local/bin/tortie-node" in unit


def test_vtep_mac_matches_calicos_derivation() -> None:
    # the byte "f" (0x66), then the first five bytes of SHA-1 over the name
    import hashlib

    assert vtep_mac("node1") == "66:" + ":".join(
        f"{b:02x}" for b in hashlib.sha1(b"node1").digest()[:5]
    )

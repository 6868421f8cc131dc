"""`tortie.libnetwork.server.run()` against a real etcd: start, serve both sockets, stop.

This is how tortie-node (or any host process) runs the plugin; the Docker-facing behaviour
is covered by the unit tests and, with real dockerd, by tests/e2e/test_docker_libnetwork.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from pathlib import Path

import pytest

from tortie.datastore.config import CalicoAPIConfig
from tortie.lab.etcd import EtcdServer
from tortie.libnetwork.config import LibnetworkConfig
from tortie.libnetwork.server import run

pytestmark = pytest.mark.etcd


def post(path: str, method: str, body: object) -> tuple[int, object]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    conn = http.client.HTTPConnection("localhost", timeout=5)
    conn.sock = sock
    try:
        conn.request("POST", f"/{method}", body=json.dumps(body).encode())
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_run_serves_until_stopped(etcd_server: EtcdServer, tmp_path: Path) -> None:
    config = LibnetworkConfig(
        nodename="node1",
        plugin_dir=str(tmp_path / "plugins"),
        datastore=CalicoAPIConfig.for_endpoints([etcd_server.endpoint]),
    )
    stop = threading.Event()
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(
        run(config, configure_logging=False, stop=stop)))
    t.start()
    try:
        deadline = 50
        while not Path(config.ipam_socket).exists() and deadline:
            stop.wait(0.1)
            deadline -= 1
        assert post(config.network_socket, "Plugin.Activate", {}) == \
            (200, {"Implements": ["NetworkDriver"]})
        status, body = post(config.ipam_socket, "IpamDriver.RequestAddress",
                            {"PoolID": "CalicoPoolIPv4"})
        assert status == 500 and "IP assignment error" in body["Err"]  # type: ignore[index]
    finally:
        stop.set()
        t.join(timeout=20)
    assert codes == [0]
    assert not Path(config.network_socket).exists()

"""EtcdBackend with TLS client certificates and with etcd user/password authentication."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_contract import collect

from tortie.datastore.backend import AuthError, Unavailable
from tortie.datastore.config import CalicoAPIConfig, ConfigError
from tortie.datastore.etcd import EtcdBackend
from tortie.lab.etcd import EtcdServer, TLSFiles, make_test_pki

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_etcd(pki: TLSFiles) -> Iterator[EtcdServer]:
    server = EtcdServer(name="tortie-tls", tls=pki)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def test_tls_with_client_certificate(tls_etcd: EtcdServer, pki: TLSFiles) -> None:
    assert tls_etcd.endpoint.startswith("https://127.0.0.1:")
    cfg = CalicoAPIConfig.for_endpoints(
        tls_etcd.endpoint,
        etcd_ca_cert_file=pki.ca_cert,
        etcd_cert_file=pki.client_cert,
        etcd_key_file=pki.client_key,
    )
    with EtcdBackend(cfg) as backend:
        kv = backend.create("/calico/tls/a", b"secret")
        assert backend.get("/calico/tls/a") == kv
        watcher = backend.watch("/calico/tls/", kv.mod_revision)
        try:
            assert [e.key for e in collect(watcher, 1)] == ["/calico/tls/a"]
        finally:
            watcher.close()
        backend.delete_prefix("/calico/")

    # The same with the PEM text inline, as calicoctl's etcdCACert/etcdCert/etcdKey allow.
    inline = CalicoAPIConfig.for_endpoints(
        tls_etcd.endpoint,
        etcd_ca_cert=Path(pki.ca_cert).read_text(),
        etcd_cert=Path(pki.client_cert).read_text(),
        etcd_key=Path(pki.client_key).read_text(),
    )
    with EtcdBackend(inline) as backend:
        assert backend.list("/calico/")[0] == []


def test_tls_failures_are_explained(tls_etcd: EtcdServer, pki: TLSFiles) -> None:
    no_client_cert = CalicoAPIConfig.for_endpoints(tls_etcd.endpoint, etcd_ca_cert_file=pki.ca_cert)
    with EtcdBackend(no_client_cert) as backend, pytest.raises(Unavailable) as e:
        backend.get("/calico/x")
    msg = str(e.value)
    assert msg.startswith(f"could not reach etcd at {tls_etcd.endpoint}: TLS error")
    assert "client certificate" in msg

    # No CA: the server's certificate is not trusted.
    with EtcdBackend(tls_etcd.endpoint) as backend, pytest.raises(Unavailable) as e:
        backend.get("/calico/x")
    assert "TLS certificate verification failed" in str(e.value)

    # Plain http to a TLS port.
    plain = tls_etcd.endpoint.replace("https://", "http://")
    with EtcdBackend(plain) as backend, pytest.raises(Unavailable) as e:
        backend.get("/calico/x")
    assert "https" in str(e.value)

    # A certificate file that is not there is a configuration error, named.
    missing = CalicoAPIConfig.for_endpoints(
        tls_etcd.endpoint,
        etcd_ca_cert_file=pki.ca_cert,
        etcd_cert_file="/nonexistent/cert.pem",
        etcd_key_file="/nonexistent/key.pem",
    )
    with pytest.raises(ConfigError, match=r"/nonexistent/cert\.pem"):
        EtcdBackend(missing)


def _etcdctl(endpoint: str, *args: str, user: str | None = None) -> None:
    cmd = ["etcdctl", f"--endpoints={endpoint}", "--dial-timeout=5s"]
    if user:
        cmd.append(f"--user={user}")
    proc = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, check=False,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, f"etcdctl {' '.join(args)}: {proc.stderr}"


@pytest.fixture
def auth_etcd(private_etcd: EtcdServer) -> EtcdServer:
    ep = private_etcd.endpoint
    _etcdctl(ep, "user", "add", "root:rootpw")
    _etcdctl(ep, "user", "grant-role", "root", "root")
    _etcdctl(ep, "role", "add", "calico")
    _etcdctl(ep, "role", "grant-permission", "calico", "--prefix=true", "readwrite", "/calico/")
    _etcdctl(ep, "user", "add", "tortie:tortiepw")
    _etcdctl(ep, "user", "grant-role", "tortie", "calico")
    _etcdctl(ep, "auth", "enable")
    return private_etcd


def test_user_password_auth(auth_etcd: EtcdServer) -> None:
    ep = auth_etcd.endpoint
    good = CalicoAPIConfig.for_endpoints(ep, etcd_username="tortie", etcd_password="tortiepw")
    with EtcdBackend(good) as backend:
        kv = backend.put("/calico/auth/a", b"1")
        assert backend.get("/calico/auth/a") == kv
        assert backend.current_revision() >= kv.mod_revision
        assert [k.key for k in backend.list("/calico/")[0]] == ["/calico/auth/a"]
        watcher = backend.watch("/calico/auth/", kv.mod_revision)
        try:
            assert len(collect(watcher, 1)) == 1
        finally:
            watcher.close()
        # Outside the granted prefix: permission denied, as an AuthError.
        with pytest.raises(AuthError, match="permission denied"):
            backend.put("/elsewhere", b"1")
        # An expired or revoked token is replaced without the caller noticing.
        backend._token = "bogus.token"
        assert backend.get("/calico/auth/a") == kv
        assert backend._token and backend._token != "bogus.token"

    with EtcdBackend(ep) as anonymous, pytest.raises(AuthError, match="requires authentication"):
        anonymous.get("/calico/auth/a")
    wrong = CalicoAPIConfig.for_endpoints(ep, etcd_username="tortie", etcd_password="nope")
    with EtcdBackend(wrong) as backend, pytest.raises(AuthError, match="authentication failed"):
        backend.get("/calico/auth/a")

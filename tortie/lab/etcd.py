"""`EtcdServer`: run a private single-member etcd for tests, benchmarks and the lab.

Each server gets a fresh data directory under its own work directory (a new temporary
directory unless one is given), listens on 127.0.0.1 on free ports picked at start (or on
given ports), and writes its output to `<workdir>/etcd.log`. `start()` returns once `/health`
answers, polling against a deadline; `stop()` sends SIGTERM and, after a grace period,
SIGKILL, to the one process it started, by PID; `restart()` keeps the data. It is a context
manager, and only ever removes the temporary directory it created itself.

TLS: `make_test_pki(directory)` creates a CA, a server certificate for 127.0.0.1/localhost
and a client certificate with the `openssl` CLI; pass the result as `tls=` to serve https
with client-certificate authentication.

Network namespaces: with `netns="NAME"` etcd is started under
`nsenter --net=/run/netns/NAME` (not `ip netns exec`, which remounts /sys); give `host=` the
address it should listen on inside that namespace. Ports default to 2379/2380 there, since
free ports cannot be probed from the root namespace, and the health probe runs from a thread
that has joined the namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EtcdServer", "EtcdStartError", "TLSFiles", "free_port", "make_test_pki"]

log = logging.getLogger(__name__)


class EtcdStartError(RuntimeError):
    """etcd did not become healthy; the message carries the end of its log."""


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a test PKI: a CA, a server certificate/key and a client certificate/key."""

    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0 and ask the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def make_test_pki(
    directory: str | Path,
    *,
    server_names: tuple[str, ...] = ("127.0.0.1", "localhost"),
    client_cn: str = "tortie-client",
    days: int = 3650,
) -> TLSFiles:
    """Create a CA, a server certificate (for `server_names`) and a client certificate.

    EC P-256 keys, written unencrypted (0600) into `directory`. The client certificate's CN is
    `client_cn` (etcd takes it as the user name when auth is on and no password is sent).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *key_args, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
        "-subj", "/CN=tortie-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    sans = ",".join(
        f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}" for n in server_names
    )
    for name, cn, ext in (
        ("server", "tortie-etcd",
         f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        ("client", client_cn, "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(
            ext + "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "basicConstraints=critical,CA:FALSE\n"
        )
        _openssl("req", *key_args, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days),
                 "-extfile", f"{name}.ext", cwd=d)
    for key in ("ca.key", "server.key", "client.key"):
        os.chmod(d / key, 0o600)
    return TLSFiles(
        ca_cert=str(d / "ca.crt"), ca_key=str(d / "ca.key"),
        server_cert=str(d / "server.crt"), server_key=str(d / "server.key"),
        client_cert=str(d / "client.crt"), client_key=str(d / "client.key"),
    )


def _setns(netns: str) -> None:
    """Move the calling *thread* into a network namespace (setns is per-thread for CLONE_NEWNET)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


class EtcdServer:
    """One etcd member, started and stopped by this object (see the module docstring)."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        name: str = "tortie-etcd",
        host: str = "127.0.0.1",
        client_port: int | None = None,
        peer_port: int | None = None,
        tls: TLSFiles | None = None,
        netns: str | None = None,
        etcd_binary: str = "etcd",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.host = host
        self.tls = tls
        self.netns = netns
        self.etcd_binary = etcd_binary
        self.extra_args = tuple(extra_args)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tortie-etcd-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "etcd.log"
        default_client, default_peer = (2379, 2380) if netns else (None, None)
        self._fixed_ports = client_port is not None or netns is not None
        self.client_port: int | None = client_port or default_client
        self.peer_port: int | None = peer_port or default_peer
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    # -- properties ----------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoint(self) -> str:
        """The client URL, e.g. http://127.0.0.1:41234 (valid once started)."""
        if self.client_port is None:
            raise RuntimeError("etcd server not started yet: no port chosen")
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        port = self.client_port or "?"
        return f"EtcdServer({self.scheme}://{self.host}:{port}, {state}, {self.workdir})"

    # -- lifecycle -----------------------------------------------------------------------------

    def _command(self) -> list[str]:
        client_url = f"{self.scheme}://{self.host}:{self.client_port}"
        peer_url = f"http://{self.host}:{self.peer_port}"
        cmd = [
            self.etcd_binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{self.name}={peer_url}",
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"tortie-{os.getpid()}-{id(self):x}",
        ]
        if self.tls:
            cmd += [
                "--cert-file", self.tls.server_cert,
                "--key-file", self.tls.server_key,
                "--trusted-ca-file", self.tls.ca_cert,
                "--client-cert-auth",
            ]
        cmd += list(self.extra_args)
        if self.netns:
            cmd = ["nsenter", f"--net=/run/netns/{self.netns}", "--", *cmd]
        return cmd

    def start(self, timeout: float = 30.0) -> EtcdServer:
        """Start etcd and wait until it reports healthy; raise EtcdStartError otherwise."""
        if self.running:
            return self
        attempts = 1 if self._fixed_ports else 3
        for attempt in range(1, attempts + 1):
            if not self._fixed_ports and (attempt > 1 or self.client_port is None):
                self.client_port = free_port(self.host)
                self.peer_port = free_port(self.host)
                while self.peer_port == self.client_port:
                    self.peer_port = free_port(self.host)
            try:
                self._spawn_and_wait(timeout)
                return self
            except EtcdStartError as e:
                self._kill()
                if attempt < attempts and "address already in use" in str(e):
                    log.info("etcd port clash, retrying with new ports")
                    continue
                raise
        raise AssertionError("unreachable")

    def _spawn_and_wait(self, timeout: float) -> None:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process
        log_file.write(f"\n=== starting etcd: {' '.join(self._command())}\n".encode())
        log_file.flush()
        self._log_file = log_file
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # our Ctrl-C is not etcd's; we stop it explicitly
        )
        log.debug("started etcd pid %d on %s", self._proc.pid, self.endpoint)
        deadline = time.monotonic() + timeout
        delay = 0.02
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EtcdStartError(
                    f"etcd exited with code {self._proc.returncode} during start-up:\n"
                    f"{self.log_tail()}"
                )
            try:
                if self.healthy():
                    return
                last_error = "/health reported unhealthy"
            except OSError as e:
                last_error = str(e)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        raise EtcdStartError(
            f"etcd at {self.endpoint} not healthy after {timeout:g}s ({last_error}):\n"
            f"{self.log_tail()}"
        )

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.tls.ca_cert)
        ctx.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return ctx

    def healthy(self, timeout: float = 1.0) -> bool:
        """One GET /health; raises OSError when nothing answers."""
        if self.netns:
            return self._healthy_in_netns(timeout)
        return self._get_health(timeout)

    def _get_health(self, timeout: float, sock: socket.socket | None = None) -> bool:
        conn: http.client.HTTPConnection
        if self.tls:
            conn = http.client.HTTPSConnection(
                self.host, self.client_port, timeout=timeout, context=self._ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.client_port, timeout=timeout)
        try:
            if sock is not None:
                conn.sock = sock
                if self.tls:
                    ctx = self._ssl_context()
                    assert ctx is not None
                    conn.sock = ctx.wrap_socket(sock, server_hostname=self.host)
            conn.request("GET", "/health")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return False
            return str(json.loads(body).get("health")) == "true"
        except (http.client.HTTPException, ValueError) as e:
            raise OSError(str(e)) from None
        finally:
            conn.close()

    def _healthy_in_netns(self, timeout: float) -> bool:
        result: list[object] = []

        def probe() -> None:
            try:
                _setns(str(self.netns))
                s = socket.create_connection((self.host, self.client_port), timeout=timeout)
                result.append(self._get_health(timeout, sock=s))
            except Exception as e:
                result.append(e)

        t = threading.Thread(target=probe, name="etcd-netns-health", daemon=True)
        t.start()
        t.join(timeout + 1)
        if not result:
            raise OSError("health probe in netns timed out")
        if isinstance(result[0], Exception):
            raise OSError(str(result[0]))
        return bool(result[0])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; by PID, only our own process."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("etcd pid %d ignored SIGTERM; killing it", proc.pid)
                self._kill()
        self._proc = None
        self._close_log()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        f = self._log_file
        self._log_file = None
        if f is not None:
            f.close()  # type: ignore[attr-defined]

    def restart(self, timeout: float = 30.0) -> EtcdServer:
        """Stop and start again with the same data and ports."""
        self.stop()
        self._fixed_ports = True
        return self.start(timeout)

    def cleanup(self) -> None:
        """Stop etcd and remove the work directory if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EtcdServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

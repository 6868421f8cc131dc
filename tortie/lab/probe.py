"""Real packets between lab namespaces: echo responders and TCP/UDP/ICMP probes.

A ``Responder`` opens TCP and UDP echo sockets *inside* a namespace (sockets stay bound to the
namespace they were created in) and serves them from ordinary threads, so one test process can
run servers in many workloads without spawning anything. Probes open their socket inside the
source namespace and report whether an echo came back in time: a drop by policy and a missing
route both read as ``False``, a refused connection (RST: the packet got through) reads as
``"refused"`` for callers that care. No traffic ever leaves the lab's namespaces.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from typing import Literal

from tortie.lab import netns

ProbeResult = bool | Literal["refused"]


def _tcp_listener(ip: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(64)
    s.settimeout(0.5)
    return s


def _udp_socket(ip: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    s.settimeout(0.5)
    return s


class Responder:
    """TCP and UDP echo on some ports inside namespace ``ns``."""

    def __init__(
        self,
        ns: str,
        tcp_ports: Iterable[int] = (),
        udp_ports: Iterable[int] = (),
        ip: str = "0.0.0.0",
    ) -> None:
        self.ns = ns
        self.ip = ip
        self.tcp_ports = tuple(tcp_ports)
        self.udp_ports = tuple(udp_ports)
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> Responder:
        for port in self.tcp_ports:
            s = netns.run_in(self.ns, _tcp_listener, self.ip, port)
            self._socks.append(s)
            self._spawn(self._serve_tcp, s)
        for port in self.udp_ports:
            s = netns.run_in(self.ns, _udp_socket, self.ip, port)
            self._socks.append(s)
            self._spawn(self._serve_udp, s)
        return self

    def _spawn(self, target: object, sock: socket.socket) -> None:
        t = threading.Thread(target=target, args=(sock,), daemon=True, name=f"echo-{self.ns}")
        t.start()
        self._threads.append(t)

    def _serve_tcp(self, s: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        """Echo until the peer closes (so a long-lived stream works too)."""
        with conn:
            conn.settimeout(1.0)
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                try:
                    if data == b"whoami":  # tell the client which source address arrived
                        conn.sendall(conn.getpeername()[0].encode())
                    else:
                        conn.sendall(data)
                except OSError:
                    return

    def _serve_udp(self, s: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, addr = s.recvfrom(64)
                s.sendto(data, addr)
            except (TimeoutError, OSError):
                continue

    def stop(self) -> None:
        self._stop.set()
        for s in self._socks:
            s.close()
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> Responder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tcp_here(ip: str, port: int, timeout: float) -> ProbeResult:
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"tortie")
            return s.recv(64) == b"tortie"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return False


def _whoami_here(ip: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"whoami")
            return s.recv(64).decode() or None
    except OSError:
        return None


def _udp_here(ip: str, port: int, timeout: float) -> ProbeResult:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(b"tortie", (ip, port))
            data, _ = s.recvfrom(64)
            return data == b"tortie"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return False


class Stream:
    """A long-lived TCP connection from ``ns`` to a Responder, exchanging a numbered message
    every ``interval`` seconds; counts what did not come back (in order) in time."""

    def __init__(self, ns: str, ip: str, port: int, interval: float = 0.01) -> None:
        self.sock: socket.socket = netns.run_in(ns, socket.create_connection, (ip, port), 2.0)
        self.sock.settimeout(1.0)
        self.interval = interval
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stream")

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            msg = f"{self.sent:08d}".encode()
            try:
                self.sock.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    chunk = self.sock.recv(len(msg) - len(got))
                    if not chunk:
                        raise OSError("connection closed")
                    got += chunk
                if got != msg:
                    self.errors.append(f"{self.sent}: got {got!r}")
            except OSError as exc:
                self.errors.append(f"{self.sent}: {exc}")
                return
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def tcp(ns: str, ip: str, port: int, timeout: float = 0.5) -> ProbeResult:
    """Connect from inside ``ns`` to ip:port and get the echo back."""
    return netns.run_in(ns, _tcp_here, ip, port, timeout)


def source_seen_by(ns: str, ip: str, port: int, timeout: float = 0.5) -> str | None:
    """The source address a Responder at ip:port saw for a TCP connection from ``ns``
    (None if no connection): shows NAT on the way."""
    return netns.run_in(ns, _whoami_here, ip, port, timeout)


def udp(ns: str, ip: str, port: int, timeout: float = 0.5) -> ProbeResult:
    return netns.run_in(ns, _udp_here, ip, port, timeout)


def icmp(ns: str, ip: str, timeout: float = 0.5) -> bool:
    return netns.ping(ns, ip, timeout)
